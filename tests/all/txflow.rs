//! The `/tx` lifecycle (`node::txflow`): an MSB dev network in-process (one node: admin,
//! indexer and validator) and a subnet of three nodes (the creator and two indexers) exchanging
//! messages over a simulated network, every store a real LMDB in a temp dir. The subnet trusts
//! the MSB by checkpointed settlement proofs and is deployed on it by its creator.

use std::collections::HashSet;

use tempfile::TempDir;
use trac_host::bundled::INTERCOM;
use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::{Ledger, LedgerLimits, LedgerStatus, Message};
use trac_host::msb::ops::encode_op as encode_msb_op;
use trac_host::msb::{
    AdminAction, AdminOp, FEE, MsbGenesis, MsbMachine, MsbOp, PartialOp, ProofError, Receipt,
    RefusalCode, Rejection, SettlementProof, SubmitError, TNK, UserAction, UserBody, Validator,
};
use trac_host::node::{
    DropReason, Imported, LocalMsb, MsbAccess, MsbHeights, PendingStage, PollReport, TxFlow,
    TxFlowError, TxOutcome, WaitReason,
};
use trac_host::runtime::{CallFailure, StateWrite, TxCall};
use trac_host::subnet::ops::deploy_ops;
use trac_host::subnet::{
    Action, OpSigner, SettlementScheme, SubnetMachine, SubnetOp, TxRecord, encode_op,
};

use crate::ledger_support::{NetConfig, Sim, open_ledger_of};
use crate::subnet_support::{creator, genesis, key, msgpack, subnet_sim};

/// MessagePack nil: Intercom's "no arguments".
const NIL: &[u8] = &[0xc0];

/// The MSB node's key (admin, indexer, validator).
fn msb_key() -> Keypair {
    key(100)
}

/// The subnet's channel (as in `subnet_support::genesis`).
const CHANNEL: &str = "test-subnet";

/// An MSB dev network of one node.
struct Msb {
    ledger: Ledger<MsbMachine>,
    validator: Validator,
    time: u64,
    nonce: u64,
    _dir: TempDir,
}

impl Msb {
    /// A dev network funding `peer` with 1,000 TNK.
    fn new(peer: &PublicKey) -> Msb {
        let genesis = MsbGenesis::dev(msb_key().public(), *peer, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open_ledger_of(
            dir.path(),
            genesis.id(),
            Some(&msb_key()),
            MsbMachine::new(genesis),
            LedgerLimits::default(),
        );
        Msb {
            ledger,
            validator: Validator::new(msb_key()),
            time: 1_700_000_000_000,
            nonce: 0,
            _dir: dir,
        }
    }

    fn network(&self) -> Hash32 {
        self.ledger.network()
    }

    /// Access for a tx flow (appends every submission at once).
    fn access(&mut self) -> LocalMsb<'_> {
        LocalMsb::new(&mut self.ledger, &mut self.validator)
    }

    /// Proposes a checkpoint (final at once: one indexer).
    fn checkpoint(&mut self) {
        self.time += 1_000;
        self.ledger.propose(self.time).expect("propose");
        let status = self.ledger.status();
        assert_eq!(status.final_height, status.latest_height, "{status:?}");
    }

    fn status(&self) -> LedgerStatus {
        self.ledger.status()
    }

    /// A user op of `requester`, validated, appended and checkpointed; returns its receipt.
    fn user_op(&mut self, requester: &Keypair, action: UserAction) -> Receipt {
        self.nonce += 1;
        let body = UserBody {
            action,
            requester: requester.public(),
            nonce: self.nonce,
            expires: self.status().latest_height + 100,
        };
        let partial = PartialOp::sign(requester, &self.network(), body);
        let tx_hash = self
            .validator
            .submit(&mut self.ledger, partial)
            .expect("the validator accepts it");
        self.validator.flush(&mut self.ledger).expect("flush");
        self.checkpoint();
        self.receipt(&tx_hash).expect("a receipt")
    }

    /// An admin op, appended by the admin's log and checkpointed (moves MSB a height on
    /// without touching the validator's pool).
    fn admin_op(&mut self, action: AdminAction) {
        self.nonce += 1;
        let expires = self.status().latest_height + 100;
        let op = AdminOp::sign(&msb_key(), &self.network(), action, self.nonce, expires);
        self.ledger
            .append(vec![encode_msb_op(&MsbOp::Admin(op))])
            .expect("append");
        self.checkpoint();
    }

    /// The receipt of `tx_hash` in the final checkpoints.
    fn receipt(&mut self, tx_hash: &Hash32) -> Option<Receipt> {
        let final_height = self.status().final_height;
        (1..=final_height)
            .flat_map(|h| self.ledger.receipts(h).expect("receipts"))
            .map(|bytes| trac_host::codec::decode::<Receipt>(&bytes).expect("receipt"))
            .find(|r| r.tx_hash == *tx_hash)
    }

    /// The confirmed balance of `key`.
    fn balance(&mut self, key: &PublicKey) -> u128 {
        self.ledger
            .read(true, |s| trac_host::msb::account(s, key))
            .expect("read")
            .expect("account")
            .balance
    }
}

/// The MSB network and a subnet of `nodes` nodes (`key(1)` = creator, then `indexers` more
/// indexers; the rest read only), with Intercom deployed and the subnet deployed on MSB.
struct World {
    msb: Msb,
    sim: Sim<SubnetMachine>,
}

impl World {
    fn new() -> World {
        Self::with_nodes(3, 2)
    }

    fn with_nodes(nodes: u8, indexers: u8) -> World {
        let mut msb = Msb::new(&creator().public());
        let id = genesis().id();
        let deployed = msb.user_op(
            &creator(),
            UserAction::DeploySubnet {
                subnet: id,
                channel: CHANNEL.into(),
            },
        );
        assert_eq!(deployed.error, None, "the subnet is deployed on MSB");
        let mut world = World {
            sim: subnet_sim(nodes, NetConfig::reliable(), 7),
            msb,
        };
        let network = world.msb.network();
        let signer = OpSigner::new(creator(), id);
        let mut ops = vec![encode_op(&SubnetOp::AddAdmin {
            key: creator().public(),
        })];
        ops.push(signer.sign(
            Action::SetMsbTrust {
                network,
                indexers: vec![msb_key().public()],
                scheme: SettlementScheme::Checkpointed,
            },
            1_000,
        ));
        ops.extend(deploy_ops(&signer, INTERCOM, 1_000));
        for i in 2..=indexers + 1 {
            ops.push(signer.sign(
                Action::AddIndexer {
                    key: key(i).public(),
                },
                1_000,
            ));
        }
        world.sim.append(0, ops);
        world.converge();
        assert!(
            world.get(0, "contract/current").is_some(),
            "Intercom is active"
        );
        world
    }

    /// Node `i`'s tx flow (its peer key is its subnet key).
    fn flow(&mut self, i: usize) -> TxFlow {
        TxFlow::open(self.sim.ledger(i), key(i as u8 + 1)).expect("open tx flow")
    }

    fn submit(
        &mut self,
        flow: &mut TxFlow,
        i: usize,
        function: &str,
        args: &[u8],
    ) -> Result<Hash32, TxFlowError> {
        let mut msb = self.msb.access();
        flow.submit(self.sim.ledger(i), &mut msb, function, args)
    }

    fn simulate(
        &mut self,
        flow: &TxFlow,
        i: usize,
        function: &str,
        args: &[u8],
        requester: &PublicKey,
    ) -> Result<trac_host::node::Simulation, TxFlowError> {
        let mut msb = self.msb.access();
        flow.simulate(self.sim.ledger(i), &mut msb, function, args, requester)
    }

    /// Polls node `i`'s flow and broadcasts what it appended.
    fn poll(&mut self, flow: &mut TxFlow, i: usize) -> PollReport {
        let mut msb = self.msb.access();
        let report = flow.poll(self.sim.ledger(i), &mut msb).expect("poll");
        self.sim.broadcast(i, report.messages.clone());
        report
    }

    fn import(
        &mut self,
        flow: &mut TxFlow,
        i: usize,
        tx_hash: &Hash32,
        function: &str,
        args: &[u8],
    ) -> Result<Imported, TxFlowError> {
        let mut msb = self.msb.access();
        let imported = flow.import(self.sim.ledger(i), &mut msb, tx_hash, function, args)?;
        if let Imported::Appended { messages } = &imported {
            self.sim.broadcast(i, messages.clone());
        }
        Ok(imported)
    }

    fn converge(&mut self) {
        self.sim.await_consistency(30);
        assert!(self.sim.errors.is_empty(), "{:?}", self.sim.errors);
    }

    fn get(&mut self, i: usize, key: &str) -> Option<Vec<u8>> {
        self.sim.get(i, true, key)
    }

    fn tx_record(&mut self, i: usize, n: u64) -> TxRecord {
        let bytes = self
            .get(i, &format!("txi/{n}"))
            .unwrap_or_else(|| panic!("node {i} has txi/{n}"));
        rmp_serde::from_slice(&bytes).expect("tx record")
    }

    fn count(&mut self, i: usize, key: &str) -> u64 {
        self.get(i, key)
            .map_or(0, |b| rmp_serde::from_slice(&b).expect("counter"))
    }

    /// Asserts every node has the same final root and `txs` indexed transactions, each applied
    /// without error; returns the root.
    fn assert_applied_everywhere(&mut self, txs: u64) -> Hash32 {
        let root = self.sim.status(0).final_root;
        for i in 0..self.sim.nodes.len() {
            assert_eq!(self.sim.status(i).final_root, root, "node {i}'s root");
            assert_eq!(self.count(i, "txl"), txs, "node {i}'s txl");
            for n in 0..txs {
                let record = self.tx_record(i, n);
                assert_eq!(record.err, None, "node {i}, txi/{n}");
                assert!(record.result.is_some(), "node {i}, txi/{n}");
            }
        }
        root
    }
}

fn only(report: &PollReport) -> (Hash32, TxOutcome) {
    assert_eq!(report.txs.len(), 1, "{report:?}");
    (report.txs[0].tx_hash, report.txs[0].outcome.clone())
}

fn refusal(result: Result<impl std::fmt::Debug, TxFlowError>) -> RefusalCode {
    match result {
        Err(e) => e
            .refusal_code()
            .unwrap_or_else(|| panic!("not an MSB refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

/// MessagePack of the string `text`.
fn mp(text: &str) -> Vec<u8> {
    rmp_serde::to_vec(text).expect("msgpack")
}

#[test]
fn a_tx_settles_and_applies_on_three_nodes_with_identical_roots() {
    let mut world = World::new();
    let mut flow = world.flow(0);

    let call = flow.map(world.sim.ledger(0), "something").expect("mapped");
    assert_eq!(
        (call.function.as_str(), call.args.as_slice()),
        ("storeSomething", NIL)
    );
    let unknown = flow.map(world.sim.ledger(0), "no such command");
    assert!(
        matches!(&unknown, Err(TxFlowError::CommandNotFound(c)) if c == "no such command"),
        "{unknown:?}"
    );
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("command not found")
    );
    assert!(matches!(
        flow.map(world.sim.ledger(0), "{not json"),
        Err(TxFlowError::CommandFailed { .. })
    ));

    let balance = world.msb.balance(&creator().public());
    let (tx_hash, sent) = {
        let mut msb = world.msb.access();
        let tx_hash = flow
            .submit(world.sim.ledger(0), &mut msb, &call.function, &call.args)
            .expect("submitted");
        (tx_hash, msb.take_messages())
    };
    // The MSB entry to send to other MSB nodes.
    assert!(matches!(sent.as_slice(), [Message::Entry(_)]), "{sent:?}");
    assert_eq!(flow.pending().len(), 1);
    assert_eq!(flow.pending()[&tx_hash].stage, PendingStage::Submitted);

    // On the MSB log (applied in its unconfirmed view), in no final checkpoint yet.
    let report = world.poll(&mut flow, 0);
    assert_eq!(
        only(&report),
        (tx_hash, TxOutcome::Waiting(WaitReason::NotFinal))
    );
    assert!(report.messages.is_empty());

    world.msb.checkpoint();
    let report = world.poll(&mut flow, 0);
    assert_eq!(only(&report), (tx_hash, TxOutcome::Appended));
    assert_eq!(report.messages.len(), 1);
    assert!(flow.pending().is_empty());
    // Nothing left to do.
    assert!(world.poll(&mut flow, 0).txs.is_empty());

    world.converge();
    world.assert_applied_everywhere(1);
    for i in 0..3 {
        let record = world.tx_record(i, 0);
        assert_eq!(record.tx, tx_hash.to_hex());
        assert_eq!(record.function, "storeSomething");
        assert_eq!(record.ipk, creator().public().to_hex());
        assert_eq!(record.wp, msb_key().public().to_hex());
        assert_eq!(
            record.result.as_ref().map(|r| r.as_slice()),
            Some(NIL),
            "nothing was there before"
        );
        assert!(record.fuel > 0);
        assert_eq!(world.get(i, "something"), Some(mp("there is something")));
        assert_eq!(
            world.get(i, &format!("tx/{}", tx_hash.to_hex())),
            Some(rmp_serde::to_vec(&0u64).unwrap())
        );
    }
    // The requester paid the fee, once.
    assert_eq!(world.msb.balance(&creator().public()), balance - FEE);
}

#[test]
fn simulation_reports_result_fuel_and_writes_and_changes_nothing() {
    let mut world = World::new();
    let flow = world.flow(0);
    let requester = creator().public();
    let before = world.sim.snapshot(0);
    let msb_before = world.msb.status();

    let sim = world
        .simulate(&flow, 0, "storeSomething", NIL, &requester)
        .expect("simulated");
    assert_eq!(sim.result, Ok(NIL.to_vec()));
    assert!(sim.fuel > 0);
    assert_eq!(
        sim.writes,
        vec![StateWrite {
            key: b"something".to_vec(),
            value: Some(mp("there is something")),
        }]
    );
    assert!(sim.events.is_empty());

    // A failing call reports the failure the subnet would record.
    let sim = world
        .simulate(&flow, 0, "noSuchFunction", NIL, &requester)
        .expect("simulated");
    assert!(
        matches!(sim.result, Err(CallFailure::UnknownFunction(_))),
        "{:?}",
        sim.result
    );
    assert!(sim.writes.is_empty());
    let sim = world
        .simulate(
            &flow,
            0,
            "storeSomething",
            &msgpack(serde_json::json!({"x": 1})),
            &requester,
        )
        .expect("simulated");
    assert!(
        matches!(sim.result, Err(CallFailure::InvalidArgs(_))),
        "{:?}",
        sim.result
    );

    // Nothing changed: subnet views, MSB, pending records.
    assert_eq!(world.sim.snapshot(0), before);
    assert_eq!(world.msb.status(), msb_before);
    assert!(flow.pending().is_empty());
    assert!(world.flow(0).pending().is_empty(), "nothing persisted");

    // The simulation runs on the unconfirmed view: an applied-but-not-final tx shows.
    let mut flow = flow;
    let tx = world.submit(&mut flow, 0, "storeSomething", NIL).unwrap();
    world.msb.checkpoint();
    assert_eq!(only(&world.poll(&mut flow, 0)), (tx, TxOutcome::Appended));
    let sim = world
        .simulate(&flow, 0, "storeSomething", NIL, &requester)
        .expect("simulated");
    assert_eq!(sim.result, Ok(mp("there is something")));
    assert!(sim.writes.is_empty(), "already set");
    assert_eq!(world.get(0, "something"), None, "not confirmed yet");
}

#[test]
fn sim_and_submit_fail_like_msb_for_unfunded_requesters_and_undeployed_subnets() {
    let mut world = World::new();
    let mut flow = world.flow(0);

    // No account at all.
    let stranger = key(50);
    assert_eq!(
        refusal(world.simulate(&flow, 0, "storeSomething", NIL, &stranger.public())),
        RefusalCode::NoAccount
    );
    let mut stranger_flow = TxFlow::open(world.sim.ledger(1), stranger.clone()).unwrap();
    assert_eq!(
        refusal(world.submit(&mut stranger_flow, 1, "storeSomething", NIL)),
        RefusalCode::NoAccount
    );
    assert!(stranger_flow.pending().is_empty());
    assert!(
        TxFlow::open(world.sim.ledger(1), stranger)
            .unwrap()
            .pending()
            .is_empty(),
        "the refused record is removed from the store too"
    );

    // An account that cannot pay the fee.
    let poor = key(51);
    let receipt = world.msb.user_op(
        &creator(),
        UserAction::Transfer {
            to: poor.public(),
            amount: FEE / 2,
        },
    );
    assert_eq!(receipt.error, None);
    assert_eq!(
        refusal(world.simulate(&flow, 0, "storeSomething", NIL, &poor.public())),
        RefusalCode::InsufficientBalance
    );
    let mut poor_flow = TxFlow::open(world.sim.ledger(2), poor).unwrap();
    let refused = world.submit(&mut poor_flow, 2, "storeSomething", NIL);
    assert!(
        refused
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("insufficient balance"),
        "{refused:?}"
    );
    assert_eq!(refusal(refused), RefusalCode::InsufficientBalance);
    assert!(poor_flow.pending().is_empty());

    // A subnet MSB does not know: another MSB network where it was never deployed.
    let mut other = Msb::new(&creator().public());
    {
        let mut access = other.access();
        let sim = flow.simulate(
            world.sim.ledger(0),
            &mut access,
            "storeSomething",
            NIL,
            &creator().public(),
        );
        assert_eq!(refusal(sim), RefusalCode::NotDeployed);
        let submitted = flow.submit(world.sim.ledger(0), &mut access, "storeSomething", NIL);
        assert_eq!(refusal(submitted), RefusalCode::NotDeployed);
    }
    assert!(flow.pending().is_empty());
    assert_eq!(other.status().entries, 0, "nothing appended on that MSB");

    // Transactions switched off by the subnet's admin.
    let off = OpSigner::new(creator(), genesis().id())
        .sign(Action::EnableTransactions { enabled: false }, 1_000);
    world.sim.append(0, vec![off]);
    world.converge();
    assert!(matches!(
        world.simulate(&flow, 0, "storeSomething", NIL, &creator().public()),
        Err(TxFlowError::TransactionsDisabled)
    ));
    assert!(matches!(
        world.submit(&mut flow, 0, "storeSomething", NIL),
        Err(TxFlowError::TransactionsDisabled)
    ));
    // A bad function name never reaches MSB.
    assert!(matches!(
        world.submit(&mut flow, 0, "", NIL),
        Err(TxFlowError::InvalidFunction(_))
    ));
    assert!(flow.pending().is_empty());
}

#[test]
fn a_node_restarted_between_submit_and_poll_settles_its_pending_tx() {
    let mut world = World::new();
    let mut flow = world.flow(0);
    let tx_hash = world.submit(&mut flow, 0, "storeSomething", NIL).unwrap();

    // The node goes down with the tx pending; MSB settles it meanwhile.
    drop(flow);
    world.sim.crash(0);
    world.msb.checkpoint();
    world.sim.restart(0);

    let mut flow = world.flow(0);
    assert_eq!(
        flow.pending().len(),
        1,
        "the pending tx survived the restart"
    );
    assert_eq!(flow.pending()[&tx_hash].stage, PendingStage::Submitted);
    assert_eq!(flow.pending()[&tx_hash].function, "storeSomething");
    assert_eq!(
        only(&world.poll(&mut flow, 0)),
        (tx_hash, TxOutcome::Appended)
    );
    assert!(world.flow(0).pending().is_empty(), "removed from the store");
    world.converge();
    world.assert_applied_everywhere(1);
    assert_eq!(world.tx_record(2, 0).tx, tx_hash.to_hex());
}

/// MSB access whose submissions fail like a node fault (the validator unreachable).
struct Unreachable<'a>(LocalMsb<'a>);

impl MsbAccess for Unreachable<'_> {
    fn network(&self) -> Hash32 {
        self.0.network()
    }
    fn validator(&self) -> Option<PublicKey> {
        self.0.validator()
    }
    fn heights(&mut self) -> Result<MsbHeights, trac_host::ledger::LedgerError> {
        self.0.heights()
    }
    fn preflight(&mut self, requester: &PublicKey, subnet: &Hash32) -> Result<(), SubmitError> {
        self.0.preflight(requester, subnet)
    }
    fn submit(&mut self, _: PartialOp) -> Result<Hash32, SubmitError> {
        Err(SubmitError::Node(trac_host::ledger::LedgerError::Node(
            "validator unreachable".into(),
        )))
    }
    fn proof(&mut self, tx_hash: &Hash32) -> Result<SettlementProof, ProofError> {
        self.0.proof(tx_hash)
    }
    fn refusals(
        &mut self,
        wanted: &HashSet<Hash32>,
        from: u64,
        to: u64,
    ) -> Result<
        std::collections::HashMap<Hash32, trac_host::msb::Refusal>,
        trac_host::ledger::LedgerError,
    > {
        self.0.refusals(wanted, from, to)
    }
}

#[test]
fn a_tx_the_validator_never_acknowledged_is_submitted_again_after_a_restart() {
    let mut world = World::new();
    let mut flow = world.flow(0);
    let msb_entries = world.msb.status().entries;
    let failed = {
        let mut msb = Unreachable(world.msb.access());
        flow.submit(world.sim.ledger(0), &mut msb, "storeSomething", NIL)
    };
    assert!(
        matches!(&failed, Err(TxFlowError::Ledger(e)) if e.to_string().contains("unreachable")),
        "{failed:?}"
    );
    assert_eq!(
        world.msb.status().entries,
        msb_entries,
        "nothing reached MSB"
    );

    drop(flow);
    world.sim.crash(0);
    world.sim.restart(0);
    let mut flow = world.flow(0);
    let (&tx_hash, record) = flow.pending().iter().next().expect("kept pending");
    assert_eq!(record.stage, PendingStage::Submitting);

    // The next poll submits it again; then it settles like any other.
    assert_eq!(
        only(&world.poll(&mut flow, 0)),
        (tx_hash, TxOutcome::Waiting(WaitReason::NotFinal))
    );
    assert_eq!(flow.pending()[&tx_hash].stage, PendingStage::Submitted);
    world.msb.checkpoint();
    assert_eq!(
        only(&world.poll(&mut flow, 0)),
        (tx_hash, TxOutcome::Appended)
    );
    world.converge();
    world.assert_applied_everywhere(1);
}

#[test]
fn a_second_writer_imports_a_tx_settled_by_the_first_and_import_is_idempotent() {
    let mut world = World::new();
    let mut first = world.flow(0);
    let mut second = world.flow(1);
    let tx_hash = world.submit(&mut first, 0, "storeSomething", NIL).unwrap();

    // Not settled yet: nothing to import.
    let early = world.import(&mut second, 1, &tx_hash, "storeSomething", NIL);
    assert!(
        matches!(
            early,
            Err(TxFlowError::NotSettled {
                source: ProofError::NotFinal(_),
                ..
            })
        ),
        "{early:?}"
    );

    world.msb.checkpoint();
    let imported = world
        .import(&mut second, 1, &tx_hash, "storeSomething", NIL)
        .expect("imported");
    assert!(matches!(imported, Imported::Appended { .. }));
    // Again, before any checkpoint: the unconfirmed view has it already.
    assert_eq!(
        world
            .import(&mut second, 1, &tx_hash, "storeSomething", NIL)
            .unwrap(),
        Imported::AlreadyApplied { index: Some(0) }
    );
    world.sim.deliver_until_quiet(10_000);

    // The submitter finds it applied and forgets it without appending it again.
    let report = world.poll(&mut first, 0);
    assert_eq!(only(&report), (tx_hash, TxOutcome::AlreadyApplied));
    assert!(report.messages.is_empty());
    assert!(first.pending().is_empty());

    world.converge();
    world.assert_applied_everywhere(1);
    assert_eq!(world.tx_record(0, 0).tx, tx_hash.to_hex());
    // Importing a confirmed tx, on any writer, is reported and changes nothing.
    let mut third = world.flow(2);
    let entries = world.sim.status(2).entries;
    for (flow, i) in [(&mut second, 1), (&mut third, 2)] {
        assert_eq!(
            world
                .import(flow, i, &tx_hash, "storeSomething", NIL)
                .unwrap(),
            Imported::AlreadyApplied { index: Some(0) }
        );
    }
    assert_eq!(world.sim.status(2).entries, entries);
}

#[test]
fn import_refuses_a_call_that_does_not_match_the_settled_content() {
    let mut world = World::new();
    let mut first = world.flow(0);
    let mut second = world.flow(1);
    let tx_hash = world.submit(&mut first, 0, "storeSomething", NIL).unwrap();
    world.msb.checkpoint();
    let entries = world.sim.status(1).entries;

    let other_args = msgpack(serde_json::json!({"x": 1}));
    for (function, args) in [
        ("storeSomething", other_args.as_slice()),
        ("submitSomething", NIL),
        ("storeSomething", &[][..]),
    ] {
        let refused = world.import(&mut second, 1, &tx_hash, function, args);
        match refused {
            Err(TxFlowError::ContentMismatch {
                tx_hash: h,
                function: f,
                ..
            }) => {
                assert_eq!((h, f.as_str()), (tx_hash, function));
            }
            other => panic!("{function}: expected a content mismatch, got {other:?}"),
        }
    }
    // An unknown tx hash is not settled.
    assert!(matches!(
        world.import(&mut second, 1, &Hash32([9; 32]), "storeSomething", NIL),
        Err(TxFlowError::NotSettled {
            source: ProofError::NotApplied(_),
            ..
        })
    ));
    assert_eq!(world.sim.status(1).entries, entries, "nothing appended");

    // The right call imports.
    assert!(matches!(
        world.import(&mut second, 1, &tx_hash, "storeSomething", NIL),
        Ok(Imported::Appended { .. })
    ));
    world.converge();
    world.assert_applied_everywhere(1);
}

#[test]
fn a_node_that_is_not_a_writer_keeps_settled_txs_pending_for_a_writer_to_import() {
    // Four nodes: the creator, two indexers and a reader (key 4).
    let mut world = World::with_nodes(4, 2);
    let reader = key(4);
    let receipt = world.msb.user_op(
        &creator(),
        UserAction::Transfer {
            to: reader.public(),
            amount: TNK,
        },
    );
    assert_eq!(receipt.error, None);
    let mut flow = world.flow(3);
    let tx_hash = world.submit(&mut flow, 3, "storeSomething", NIL).unwrap();
    world.msb.checkpoint();
    for _ in 0..2 {
        assert_eq!(
            only(&world.poll(&mut flow, 3)),
            (tx_hash, TxOutcome::Waiting(WaitReason::NotWriter))
        );
    }
    assert_eq!(flow.pending().len(), 1, "kept pending");

    // A writer imports it; the reader's next poll finds it applied.
    let mut writer = world.flow(1);
    let record = flow.pending()[&tx_hash].clone();
    world
        .import(&mut writer, 1, &tx_hash, &record.function, &record.args)
        .expect("imported");
    world.converge();
    assert_eq!(
        only(&world.poll(&mut flow, 3)),
        (tx_hash, TxOutcome::AlreadyApplied)
    );
    assert!(flow.pending().is_empty());
    world.assert_applied_everywhere(1);
    assert_eq!(world.tx_record(3, 0).ipk, reader.public().to_hex());
}

#[test]
fn expired_and_refused_txs_are_dropped_with_the_reason() {
    let mut world = World::new();
    let mut flow = world.flow(0).with_expiry_window(2);

    // Accepted by the validator but never appended (its pool is lost): it expires.
    let lost = {
        let mut msb = LocalMsb::deferred(&mut world.msb.ledger, &mut world.msb.validator);
        flow.submit(world.sim.ledger(0), &mut msb, "storeSomething", NIL)
            .unwrap()
    };
    world.msb.validator = Validator::new(msb_key());
    let expires = flow.pending()[&lost].expires();
    world.msb.admin_op(AdminAction::Whitelist {
        account: key(60).public(),
    });
    world.msb.admin_op(AdminAction::Whitelist {
        account: key(61).public(),
    });
    assert_eq!(
        only(&world.poll(&mut flow, 0)),
        (lost, TxOutcome::Waiting(WaitReason::NotApplied)),
        "final height {} = expiry {expires}: it may still apply",
        world.msb.status().final_height
    );
    world.msb.admin_op(AdminAction::Whitelist {
        account: key(62).public(),
    });
    let final_height = world.msb.status().final_height;
    assert_eq!(
        only(&world.poll(&mut flow, 0)),
        (
            lost,
            TxOutcome::Dropped(DropReason::Expired {
                expires,
                final_height
            })
        )
    );
    assert!(flow.pending().is_empty());

    // Appended too late: MSB applies it with a refusal, which the poll reports.
    let late = {
        let mut msb = LocalMsb::deferred(&mut world.msb.ledger, &mut world.msb.validator);
        flow.submit(world.sim.ledger(0), &mut msb, "storeSomething", NIL)
            .unwrap()
    };
    for account in 63..66 {
        world.msb.admin_op(AdminAction::Whitelist {
            account: key(account).public(),
        });
    }
    world.msb.validator.flush(&mut world.msb.ledger).unwrap();
    world.msb.checkpoint();
    let report = world.poll(&mut flow, 0);
    match only(&report) {
        (h, TxOutcome::Dropped(DropReason::Refused { code, message })) => {
            assert_eq!(h, late);
            assert_eq!(code, Some(RefusalCode::Expired));
            assert!(message.contains("expired"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(flow.pending().is_empty());
    assert!(world.flow(0).pending().is_empty());
    // Nothing reached the subnet.
    world.converge();
    assert_eq!(world.count(0, "txl"), 0);
}

#[test]
fn many_pending_txs_settle_in_one_poll_and_one_entry() {
    let mut world = World::new();
    let mut flow = world.flow(0);
    let mut calls: Vec<TxCall> = (0..20)
        .map(|i| TxCall {
            function: "submitSomething".into(),
            args: msgpack(serde_json::json!({"op": "do_something", "some_key": format!("k{i}")})),
        })
        .collect();
    // One bad call among them fails alone.
    calls.insert(
        7,
        TxCall {
            function: "bad\nname".into(),
            args: NIL.to_vec(),
        },
    );
    let results = {
        let mut msb = world.msb.access();
        flow.submit_many(world.sim.ledger(0), &mut msb, &calls)
            .expect("submitted")
    };
    assert_eq!(results.len(), 21);
    assert!(matches!(results[7], Err(TxFlowError::InvalidFunction(_))));
    let mut hashes: Vec<Hash32> = results.into_iter().filter_map(Result::ok).collect();
    assert_eq!(hashes.len(), 20);
    assert_eq!(flow.pending().len(), 20);
    assert!(
        flow.pending()
            .values()
            .all(|p| p.stage == PendingStage::Submitted)
    );
    assert_eq!(world.flow(0).pending().len(), 20, "persisted");

    world.msb.checkpoint();
    let report = world.poll(&mut flow, 0);
    let mut appended = report.with_outcome(&TxOutcome::Appended);
    appended.sort();
    hashes.sort();
    assert_eq!(appended, hashes);
    assert_eq!(report.messages.len(), 1, "one entry for the batch");
    assert!(matches!(report.messages[0], Message::Entry(_)));
    world.converge();
    world.assert_applied_everywhere(20);
    let indexed: HashSet<String> = (0..20).map(|n| world.tx_record(1, n).tx).collect();
    assert_eq!(indexed, hashes.iter().map(|h| h.to_hex()).collect());
}

#[test]
fn a_rejected_submission_is_typed_and_the_validator_pool_is_respected() {
    let mut world = World::new();
    let mut flow = world.flow(0);
    // The requester is the validator itself: refused as self-validation, sim and submit alike.
    let mut own = TxFlow::open(world.sim.ledger(0), msb_key()).unwrap();
    assert_eq!(
        refusal(world.simulate(&flow, 0, "storeSomething", NIL, &msb_key().public())),
        RefusalCode::SelfValidation
    );
    let refused = world.submit(&mut own, 0, "storeSomething", NIL);
    assert!(
        matches!(
            &refused,
            Err(TxFlowError::Rejected(Rejection::Refused {
                code: RefusalCode::SelfValidation,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert!(own.pending().is_empty());
    // The peer's own tx still goes through.
    let tx = world.submit(&mut flow, 0, "storeSomething", NIL).unwrap();
    world.msb.checkpoint();
    assert_eq!(only(&world.poll(&mut flow, 0)), (tx, TxOutcome::Appended));
}

#[test]
fn the_simulation_preflight_meets_what_a_submission_meets() {
    let mut world = World::new();
    let flow = world.flow(0);
    let poor = key(51);
    let receipt = world.msb.user_op(
        &creator(),
        UserAction::Transfer {
            to: poor.public(),
            amount: FEE / 2,
        },
    );
    assert_eq!(receipt.error, None);
    // A node of this MSB whose key is not a validator.
    let outsider = key(52);
    let cases = [
        (key(50), msb_key(), Some(RefusalCode::NoAccount)),
        (poor, msb_key(), Some(RefusalCode::InsufficientBalance)),
        (msb_key(), msb_key(), Some(RefusalCode::SelfValidation)),
        (creator(), outsider.clone(), None),
        // The node's role comes first, as in a submission.
        (outsider.clone(), outsider, None),
    ];
    for (requester, validator_key, expected) in cases {
        let mut validator = Validator::new(validator_key.clone());
        let simulated = {
            let mut msb = LocalMsb::new(&mut world.msb.ledger, &mut validator);
            flow.simulate(
                world.sim.ledger(0),
                &mut msb,
                "storeSomething",
                NIL,
                &requester.public(),
            )
        };
        let mut own = TxFlow::open(world.sim.ledger(0), requester.clone()).unwrap();
        let submitted = {
            let mut msb = LocalMsb::new(&mut world.msb.ledger, &mut validator);
            own.submit(world.sim.ledger(0), &mut msb, "storeSomething", NIL)
        };
        let what = format!("{} through {}", requester.public(), validator_key.public());
        match (simulated, submitted) {
            (Err(TxFlowError::Rejected(simulated)), Err(TxFlowError::Rejected(submitted))) => {
                assert_eq!(simulated, submitted, "{what}: the same code and message");
                assert_eq!(simulated.code(), expected, "{what}");
                if expected.is_none() {
                    assert_eq!(simulated, Rejection::NotValidator, "{what}");
                }
            }
            other => panic!("{what}: expected two rejections, got {other:?}"),
        }
        assert!(own.pending().is_empty(), "{what}");
        assert_eq!(validator.pending(), 0, "{what}");
    }
}

#[test]
fn one_poll_settles_txs_applied_in_several_msb_checkpoints() {
    let mut world = World::new();
    let mut flow = world.flow(0);
    let call = |i: usize| TxCall {
        function: "submitSomething".into(),
        args: msgpack(serde_json::json!({"op": "do_something", "some_key": format!("k{i}")})),
    };
    // Three MSB checkpoints of four settlements each.
    let mut settled = Vec::new();
    for round in 0..3 {
        let calls: Vec<TxCall> = (0..4).map(|i| call(round * 4 + i)).collect();
        let results = {
            let mut msb = world.msb.access();
            flow.submit_many(world.sim.ledger(0), &mut msb, &calls)
                .expect("submitted")
        };
        settled.extend(results.into_iter().map(|r| r.expect("accepted")));
        world.msb.checkpoint();
    }
    // Appended to MSB but not checkpointed; accepted by the validator but not appended.
    let not_final = world
        .submit(&mut flow, 0, "submitSomething", &call(12).args)
        .unwrap();
    let not_applied = {
        let mut msb = LocalMsb::deferred(&mut world.msb.ledger, &mut world.msb.validator);
        flow.submit(
            world.sim.ledger(0),
            &mut msb,
            "submitSomething",
            &call(13).args,
        )
        .unwrap()
    };

    let report = world.poll(&mut flow, 0);
    assert_eq!(report.txs.len(), 14);
    let mut appended = report.with_outcome(&TxOutcome::Appended);
    appended.sort();
    settled.sort();
    assert_eq!(appended, settled);
    assert_eq!(
        report.with_outcome(&TxOutcome::Waiting(WaitReason::NotFinal)),
        vec![not_final]
    );
    assert_eq!(
        report.with_outcome(&TxOutcome::Waiting(WaitReason::NotApplied)),
        vec![not_applied]
    );
    assert_eq!(report.messages.len(), 1, "one entry for the twelve");
    assert_eq!(flow.pending().len(), 2);
    world.converge();
    world.assert_applied_everywhere(12);

    // Both settle at the next checkpoint.
    world.msb.validator.flush(&mut world.msb.ledger).unwrap();
    world.msb.checkpoint();
    let report = world.poll(&mut flow, 0);
    let mut appended = report.with_outcome(&TxOutcome::Appended);
    appended.sort();
    let mut both = vec![not_final, not_applied];
    both.sort();
    assert_eq!(appended, both);
    assert!(flow.pending().is_empty());
    world.converge();
    world.assert_applied_everywhere(14);
}
