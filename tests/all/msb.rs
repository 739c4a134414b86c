//! MSB, the settlement layer: the conformance cases of the reference (msb.md §13) that apply
//! to our rules, every shared refusal (each recorded in the op's receipt with a typed code,
//! the state untouched), double spends, the supply invariant under random op mixes, the
//! validator service, and settlement proofs checked by subnets (DESIGN §11.10).
//!
//! Everything runs on real LMDB stores with real signatures: a single-node MSB (the admin's
//! node) from `msb_support`, other writers' entries fed to it as if received, and a simulated
//! network of three MSB nodes where checkpoints become final through acks.

use proptest::prelude::*;
use serde_json::json;
use trac_host::codec;
use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::{Ack, LedgerLimits, merkle};
use trac_host::msb::ops::{Envelope, OP_VERSION};
use trac_host::msb::validator::MAX_BATCH;
use trac_host::msb::{
    AdminAction, FEE, MsbGenesis, MsbMachine, MsbOp, PartialOp, ProofError, ProofVerifier,
    ROLE_ADMIN, ROLE_INDEXER, ROLE_VALIDATOR, ROLE_WHITELISTED, Receipt, Refusal, RefusalCode,
    Rejection, STAKE, SettlementProof, SubmitError, TNK, UserAction, UserBody, Validator,
};
use trac_host::subnet::{Settlement, SettlementVerifier, TxOp};

use crate::ledger_support::{NetConfig, Sim};
use crate::msb_support::{
    Msb, admin_key, admin_op_of, code, decode_receipt, dev_genesis, encode_admin, encode_user,
    faucet, funded_genesis, holdings, indexer_change_op, peer_key, trusting_subnet, tx_action,
    user_op,
};
use crate::subnet_support::{Solo, key, tx_op};

/// Farthest expiry an op may name, in heights after the one applying it (machine.rs).
const MAX_OP_TTL: u64 = 100_000;

/// Longest MSB op, in bytes (machine.rs).
const MAX_OP_BYTES: usize = 4096;

/// `percent` of the fee.
fn fee_share(percent: u128) -> u128 {
    FEE * percent / 100
}

/// The balances of `keys` and the burned total, to compare before and after an op.
fn snapshot(msb: &mut Msb, keys: &[&Keypair]) -> (Vec<u128>, u128) {
    let balances = keys.iter().map(|k| msb.balance(&k.public())).collect();
    (balances, msb.supply().burned)
}

/// A key that is not a valid Ed25519 public key.
fn invalid_key() -> PublicKey {
    (0..=255u8)
        .map(|i| PublicKey([i; 32]))
        .find(|k| k.validate().is_err())
        .expect("some byte pattern is off the curve")
}

// ---------------------------------------------------------------------------------------------
// 1. Conformance
// ---------------------------------------------------------------------------------------------

#[test]
fn dev_genesis_gives_the_admin_every_role_and_funds_the_peer() {
    let (admin, peer) = (admin_key().public(), peer_key().public());
    let genesis = MsbGenesis::dev(admin, peer, None);
    assert_eq!(genesis.admin, admin);
    assert_eq!(genesis.funds, vec![(peer, 1_000 * TNK)]);
    assert_eq!(genesis.faucet, None);
    assert_ne!(
        genesis.id(),
        MsbGenesis::dev(admin, peer, None).id(),
        "a random salt makes every dev network distinct"
    );
    let mut msb = Msb::open(genesis.clone());
    assert_eq!(msb.network(), genesis.id());
    let account = msb.account(&admin);
    assert_eq!(
        account.role,
        ROLE_ADMIN | ROLE_INDEXER | ROLE_VALIDATOR | ROLE_WHITELISTED
    );
    assert_eq!((account.balance, account.staked), (0, 0));
    let funded = msb.account(&peer);
    assert_eq!(
        (funded.balance, funded.staked, funded.role),
        (1_000 * TNK, 0, 0)
    );
    let supply = msb.supply();
    assert_eq!((supply.minted, supply.burned), (1_000 * TNK, 0));
    assert_eq!(msb.indexers(), vec![admin]);
    assert!(msb.is_writer(&admin));
    assert!(!msb.is_writer(&peer));
    let (recorded, recorded_admin) = msb
        .ledger
        .read(true, |s| {
            (
                MsbMachine::genesis_in(s).expect("genesis"),
                trac_host::msb::admin(s).expect("admin"),
            )
        })
        .expect("read");
    assert_eq!(recorded, Some(genesis));
    assert_eq!(recorded_admin, Some(admin));
    msb.assert_supply_conserved();

    // Funds of the admin itself go to its account, roles kept.
    let mut msb = Msb::open(funded_genesis(5 * TNK, None));
    let account = msb.account(&admin);
    assert_eq!(account.balance, 5 * TNK);
    assert!(account.has(ROLE_ADMIN));
    assert_eq!(msb.supply().minted, 1_005 * TNK);
    msb.assert_supply_conserved();
}

#[test]
fn transfers_move_the_amount_and_split_the_fee() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (alice, bob) = (key(2), key(3));
    let mut peer_balance = 1_000 * TNK;
    let mut admin_balance = 0;
    let mut burned = 0;

    // To a new account.
    let op = msb.transfer(&peer, &admin, &alice.public(), 10 * TNK);
    let receipt = msb.accept(op, "transfer to a new account");
    assert_eq!(receipt.kind, "transfer");
    assert_eq!(receipt.fee, FEE);
    assert_eq!(receipt.requester, Some(peer.public()));
    assert_eq!(receipt.validator, Some(admin.public()));
    assert!(msb.applied(&receipt.tx_hash));
    peer_balance -= 10 * TNK + FEE;
    admin_balance += fee_share(75);
    burned += fee_share(25);
    assert_eq!(msb.balance(&peer.public()), peer_balance);
    assert_eq!(msb.account(&alice.public()).balance, 10 * TNK);
    assert_eq!(msb.account(&alice.public()).role, 0);
    assert_eq!(msb.balance(&admin.public()), admin_balance);
    assert_eq!(msb.supply().burned, burned);

    // To an existing account.
    let op = msb.transfer(&peer, &admin, &alice.public(), 5 * TNK);
    msb.accept(op, "transfer to an existing account");
    peer_balance -= 5 * TNK + FEE;
    admin_balance += fee_share(75);
    burned += fee_share(25);
    assert_eq!(msb.balance(&alice.public()), 15 * TNK);

    // Amount 0 to a new account: the account is created, empty.
    assert!(!msb.has_account(&bob.public()));
    let op = msb.transfer(&peer, &admin, &bob.public(), 0);
    msb.accept(op, "transfer of 0");
    peer_balance -= FEE;
    admin_balance += fee_share(75);
    burned += fee_share(25);
    assert!(msb.has_account(&bob.public()));
    assert_eq!(msb.balance(&bob.public()), 0);

    // Self-transfer: only the fee.
    let op = msb.transfer(&peer, &admin, &peer.public(), 7 * TNK);
    msb.accept(op, "self-transfer");
    peer_balance -= FEE;
    admin_balance += fee_share(75);
    burned += fee_share(25);
    assert_eq!(msb.balance(&peer.public()), peer_balance);

    // The validator as recipient: the amount plus 75 % of the fee.
    let op = msb.transfer(&peer, &admin, &admin.public(), 3 * TNK);
    msb.accept(op, "to the validator");
    peer_balance -= 3 * TNK + FEE;
    admin_balance += 3 * TNK + fee_share(75);
    burned += fee_share(25);
    assert_eq!(msb.balance(&admin.public()), admin_balance);
    assert_eq!(msb.balance(&peer.public()), peer_balance);
    assert_eq!(msb.supply().burned, burned);

    // One unit more than the balance allows: refused, nothing changes.
    let op = msb.transfer(&peer, &admin, &alice.public(), peer_balance - FEE + 1);
    msb.refuse(op, RefusalCode::InsufficientBalance, "insufficient balance");
    // Exactly the balance: everything goes.
    let op = msb.transfer(&alice, &admin, &bob.public(), 15 * TNK - FEE);
    msb.accept(op, "the whole balance");
    admin_balance += fee_share(75);
    assert_eq!(msb.balance(&alice.public()), 0);
    assert_eq!(msb.balance(&bob.public()), 15 * TNK - FEE);
    // Nothing left for the fee, even of a transfer of 0.
    let op = msb.transfer(&alice, &admin, &bob.public(), 0);
    msb.refuse(op, RefusalCode::InsufficientBalance, "no fee left");
    // A recipient that is not a public key.
    let op = msb.transfer(&peer, &admin, &invalid_key(), 1);
    msb.refuse(op, RefusalCode::InvalidField, "invalid recipient");

    assert_eq!(msb.balance(&admin.public()), admin_balance);
    assert_eq!(msb.balance(&peer.public()), peer_balance);
    msb.assert_supply_conserved();
}

#[test]
fn deploy_subnet_registers_first_come_first_served() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let subnet = Hash32([0x51; 32]);
    let receipt = msb.deploy(&peer, &admin, subnet);
    assert_eq!(receipt.kind, "deploySubnet");
    assert_eq!(receipt.fee, FEE);
    let deployment = msb.deployment(&subnet).expect("registered");
    assert_eq!(deployment.deployer, peer.public());
    assert_eq!(deployment.channel, "test-channel");
    assert_eq!(deployment.tx_hash, receipt.tx_hash);
    assert_eq!(msb.balance(&peer.public()), 1_000 * TNK - FEE);
    assert_eq!(msb.balance(&admin.public()), fee_share(75));
    assert_eq!(msb.supply().burned, fee_share(25));

    let alice = key(2);
    msb.fund(&alice.public(), TNK);
    let deploy = |msb: &mut Msb, who: &Keypair, subnet: Hash32, channel: &str| {
        msb.user(
            who,
            &admin,
            UserAction::DeploySubnet {
                subnet,
                channel: channel.into(),
            },
        )
    };
    let op = deploy(&mut msb, &alice, subnet, "mine");
    msb.refuse(op, RefusalCode::AlreadyDeployed, "already deployed");
    let op = deploy(&mut msb, &peer, subnet, "test-channel");
    msb.refuse(
        op,
        RefusalCode::AlreadyDeployed,
        "deployed again by its deployer",
    );
    let network = msb.network();
    let op = deploy(&mut msb, &alice, network, "msb");
    msb.refuse(
        op,
        RefusalCode::InvalidField,
        "the MSB network id as subnet",
    );
    let other = Hash32([0x52; 32]);
    for (channel, what) in [
        (String::new(), "empty channel"),
        ("a\nb".to_string(), "control character in the channel"),
        ("c".repeat(129), "channel too long"),
    ] {
        let op = deploy(&mut msb, &alice, other, &channel);
        msb.refuse(op, RefusalCode::InvalidField, what);
    }
    let poor = key(3);
    msb.fund(&poor.public(), FEE - 1);
    let op = deploy(&mut msb, &poor, other, "poor");
    msb.refuse(op, RefusalCode::InsufficientBalance, "cannot pay the fee");
    assert_eq!(msb.deployment(&other), None);
    msb.assert_supply_conserved();
}

#[test]
fn tx_settlement_splits_the_fee_three_ways() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let v = key(3);
    msb.make_validator(&v);
    let carol = key(4);
    msb.fund(&carol.public(), TNK);
    let by_peer = Hash32([1; 32]);
    msb.deploy(&peer, &admin, by_peer);
    let by_v = Hash32([2; 32]);
    msb.deploy(&v, &admin, by_v);
    let everyone = [&admin, &peer, &v, &carol];

    // The requester is the deployer: 50 % to the validator, 50 % burned.
    let (before, burned) = snapshot(&mut msb, &everyone);
    let op = msb.user(&peer, &admin, tx_action(&by_peer, "f", b"1"));
    let receipt = msb.accept(op, "requester = deployer");
    assert_eq!((receipt.kind.as_str(), receipt.fee), ("tx", FEE));
    let (after, burned_after) = snapshot(&mut msb, &everyone);
    assert_eq!(after[0], before[0] + fee_share(50), "validator");
    assert_eq!(after[1], before[1] - FEE, "requester and deployer");
    assert_eq!((after[2], after[3]), (before[2], before[3]));
    assert_eq!(burned_after, burned + fee_share(50));

    // The validator is the deployer: 75 % to the validator, 25 % burned.
    let (before, burned) = snapshot(&mut msb, &everyone);
    let op = msb.user(&peer, &v, tx_action(&by_v, "f", b"2"));
    msb.accept_as(&v, op, "validator = deployer");
    let (after, burned_after) = snapshot(&mut msb, &everyone);
    assert_eq!(
        after[2],
        before[2] + fee_share(75),
        "validator and deployer"
    );
    assert_eq!(after[1], before[1] - FEE, "requester");
    assert_eq!((after[0], after[3]), (before[0], before[3]));
    assert_eq!(burned_after, burned + fee_share(25));

    // Otherwise: 50 % to the validator, 25 % to the deployer, 25 % burned.
    let (before, burned) = snapshot(&mut msb, &everyone);
    let op = msb.user(&carol, &admin, tx_action(&by_peer, "f", b"3"));
    msb.accept(op, "standard split");
    let (after, burned_after) = snapshot(&mut msb, &everyone);
    assert_eq!(after[0], before[0] + fee_share(50), "validator");
    assert_eq!(after[1], before[1] + fee_share(25), "deployer");
    assert_eq!(after[3], before[3] - FEE, "requester");
    assert_eq!(after[2], before[2]);
    assert_eq!(burned_after, burned + fee_share(25));

    // The same call through another validator and deployer.
    let (before, burned) = snapshot(&mut msb, &everyone);
    let op = msb.user(&carol, &v, tx_action(&by_peer, "f", b"4"));
    msb.accept_as(&v, op, "standard split, other validator");
    let (after, burned_after) = snapshot(&mut msb, &everyone);
    assert_eq!(after[2], before[2] + fee_share(50));
    assert_eq!(after[1], before[1] + fee_share(25));
    assert_eq!(after[3], before[3] - FEE);
    assert_eq!(burned_after, burned + fee_share(25));

    // A subnet nobody deployed.
    let op = msb.user(&carol, &admin, tx_action(&Hash32([3; 32]), "f", b""));
    msb.refuse(op, RefusalCode::NotDeployed, "undeployed subnet");
    msb.assert_supply_conserved();
}

#[test]
fn whitelisted_accounts_join_and_leave_the_validators() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (b, alice) = (key(3), key(2));
    msb.fund(&b.public(), TNK);

    let op = msb.user(&b, &admin, UserAction::JoinValidators);
    msb.refuse(op, RefusalCode::NotWhitelisted, "join without whitelisting");
    // Not a writer yet: its entries are skipped (no receipts, nothing applied).
    let skipped = msb.ledger.status().skipped;
    let op = msb.transfer(&peer, &b, &alice.public(), 1);
    assert!(msb.apply_as(&b, vec![op]).is_empty());
    assert_eq!(msb.ledger.status().skipped, skipped + 1);
    assert!(!msb.has_account(&alice.public()));

    // Whitelisting is free.
    let (supply, admin_balance) = (msb.supply(), msb.balance(&admin.public()));
    let op = msb.admin_op(AdminAction::Whitelist {
        account: b.public(),
    });
    let receipt = msb.accept(op, "whitelist");
    assert_eq!((receipt.kind.as_str(), receipt.fee), ("whitelist", 0));
    assert_eq!(msb.account(&b.public()).role, ROLE_WHITELISTED);
    assert_eq!(msb.supply(), supply);
    assert_eq!(msb.balance(&admin.public()), admin_balance);
    let op = msb.admin_op(AdminAction::Whitelist {
        account: b.public(),
    });
    msb.refuse(op, RefusalCode::Role, "whitelisted twice");

    // Join: the fee, and the stake locked.
    let op = msb.user(&b, &admin, UserAction::JoinValidators);
    let receipt = msb.accept(op, "join");
    assert_eq!(
        (receipt.kind.as_str(), receipt.fee),
        ("joinValidators", FEE)
    );
    let account = msb.account(&b.public());
    assert_eq!(account.balance, TNK - FEE - STAKE);
    assert_eq!(account.staked, STAKE);
    assert_eq!(account.role, ROLE_WHITELISTED | ROLE_VALIDATOR);
    assert!(msb.is_writer(&b.public()));
    assert_eq!(msb.balance(&admin.public()), admin_balance + fee_share(75));

    // Its entries count now, and it earns its validator share.
    let op = msb.transfer(&peer, &b, &alice.public(), 1);
    let receipt = msb.accept_as(&b, op, "validated by the new validator");
    assert_eq!(receipt.validator, Some(b.public()));
    assert_eq!(msb.balance(&alice.public()), 1);
    assert_eq!(msb.balance(&b.public()), TNK - FEE - STAKE + fee_share(75));

    let op = msb.user(&b, &admin, UserAction::JoinValidators);
    msb.refuse(op, RefusalCode::Role, "join twice");
    let op = msb.user(&admin, &b, UserAction::LeaveValidators);
    msb.refuse_as(&b, op, RefusalCode::Role, "the admin cannot leave");

    // Leave: the stake comes back, the fee is paid.
    let before = msb.account(&b.public());
    let op = msb.user(&b, &admin, UserAction::LeaveValidators);
    let receipt = msb.accept(op, "leave");
    assert_eq!(
        (receipt.kind.as_str(), receipt.fee),
        ("leaveValidators", FEE)
    );
    let account = msb.account(&b.public());
    assert_eq!(account.balance, before.balance + STAKE - FEE);
    assert_eq!(account.staked, 0);
    assert_eq!(account.role, ROLE_WHITELISTED);
    assert!(!msb.is_writer(&b.public()));
    let skipped = msb.ledger.status().skipped;
    let op = msb.transfer(&peer, &b, &alice.public(), 1);
    assert!(msb.apply_as(&b, vec![op]).is_empty(), "skipped again");
    assert_eq!(msb.ledger.status().skipped, skipped + 1);
    let op = msb.user(&b, &admin, UserAction::LeaveValidators);
    msb.refuse(op, RefusalCode::Role, "leave twice");

    // It may join again (still whitelisted).
    let op = msb.user(&b, &admin, UserAction::JoinValidators);
    msb.accept(op, "join again");
    assert_eq!(msb.account(&b.public()).staked, STAKE);
    assert!(msb.is_writer(&b.public()));
    msb.assert_supply_conserved();
}

#[test]
fn admin_adds_and_removes_indexers_from_the_next_checkpoint() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (b, c) = (key(3), key(4));
    msb.make_validator(&b);
    msb.fund(&c.public(), TNK);

    let op = msb.admin_op(AdminAction::AddIndexer { key: c.public() });
    msb.refuse(op, RefusalCode::Role, "add a non-validator");
    let op = msb.admin_op(AdminAction::RemoveIndexer {
        key: admin.public(),
    });
    msb.refuse(op, RefusalCode::LastIndexer, "remove the last indexer");
    let op = msb.admin_op(AdminAction::RemoveIndexer { key: b.public() });
    msb.refuse(op, RefusalCode::Role, "remove a non-indexer");

    // Add b: the admin pays the fee, all burned; the set in force before the op (the admin
    // alone) makes its checkpoint final.
    let (admin_balance, burned) = (msb.balance(&admin.public()), msb.supply().burned);
    let op = msb.admin_op(AdminAction::AddIndexer { key: b.public() });
    let receipt = msb.accept(op, "add indexer");
    assert_eq!((receipt.kind.as_str(), receipt.fee), ("addIndexer", FEE));
    assert_eq!(msb.indexers(), vec![admin.public(), b.public()]);
    let account = msb.account(&b.public());
    assert_eq!(
        account.role,
        ROLE_WHITELISTED | ROLE_VALIDATOR | ROLE_INDEXER
    );
    assert_eq!(account.staked, STAKE);
    assert_eq!(msb.balance(&admin.public()), admin_balance - FEE);
    assert_eq!(msb.supply().burned, burned + FEE);

    // From the next checkpoint on, b's ack is needed.
    let op = msb.transfer(&peer, &admin, &c.public(), 1);
    msb.feed_as(&admin, vec![op]);
    let proposed = msb.propose();
    assert_eq!(proposed.len(), 1);
    let status = msb.ledger.status();
    assert_eq!(status.final_height + 1, status.latest_height, "waits for b");
    let ack = Ack::sign(&b, &msb.network(), &proposed[0]);
    msb.ledger
        .handle(trac_host::ledger::Message::Ack(ack))
        .expect("ack");
    let status = msb.ledger.status();
    assert_eq!(
        status.final_height, status.latest_height,
        "final with b's ack"
    );
    assert_eq!(msb.balance(&c.public()), TNK + 1);

    msb.cosigners = vec![b.clone()];
    let op = msb.admin_op(AdminAction::AddIndexer { key: b.public() });
    msb.refuse(op, RefusalCode::Role, "add an indexer twice");
    let op = msb.user(&b, &admin, UserAction::LeaveValidators);
    msb.refuse(op, RefusalCode::Role, "an indexer cannot leave");
    let op = msb.admin_op(AdminAction::RemoveValidator { key: b.public() });
    msb.refuse(op, RefusalCode::Role, "an indexer cannot be removed");

    // Remove b: a validator again, still a writer; the admin alone finalises again.
    let admin_balance = msb.balance(&admin.public());
    let op = msb.admin_op(AdminAction::RemoveIndexer { key: b.public() });
    let receipt = msb.accept(op, "remove indexer");
    assert_eq!((receipt.kind.as_str(), receipt.fee), ("removeIndexer", FEE));
    assert_eq!(msb.indexers(), vec![admin.public()]);
    assert_eq!(
        msb.account(&b.public()).role,
        ROLE_WHITELISTED | ROLE_VALIDATOR
    );
    assert!(msb.is_writer(&b.public()));
    assert_eq!(msb.balance(&admin.public()), admin_balance - FEE);
    msb.cosigners.clear();
    let op = msb.transfer(&peer, &b, &c.public(), 1);
    msb.accept_as(&b, op, "final without b's ack");
    msb.assert_supply_conserved();
}

#[test]
fn the_indexer_set_changes_at_most_once_per_checkpoint() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let (b, c) = (key(3), key(4));
    msb.make_validator(&b);
    msb.make_validator(&c);
    let add_b = msb.admin_op(AdminAction::AddIndexer { key: b.public() });
    let add_c = msb.admin_op(AdminAction::AddIndexer { key: c.public() });
    let receipts = msb.apply(vec![add_b, add_c.clone()]);
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].error, None, "the first change applies");
    assert_eq!(
        code(&receipts[1]),
        Some(RefusalCode::TooManyIndexers),
        "a second change in the same checkpoint is refused"
    );
    assert_eq!(msb.indexers(), vec![msb.admin.public(), b.public()]);
    // In a later checkpoint it applies (b must ack from now on).
    msb.cosigners = vec![b.clone()];
    msb.accept(add_c, "the second change, one checkpoint later");
    assert_eq!(
        msb.indexers(),
        vec![msb.admin.public(), b.public(), c.public()]
    );
}

#[test]
fn admin_removes_validators_and_their_stake_comes_back() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (b, c, alice) = (key(3), key(4), key(2));
    msb.make_validator(&b);

    let before = msb.account(&b.public());
    let (admin_balance, burned) = (msb.balance(&admin.public()), msb.supply().burned);
    let op = msb.admin_op(AdminAction::RemoveValidator { key: b.public() });
    let receipt = msb.accept(op, "remove validator");
    assert_eq!(
        (receipt.kind.as_str(), receipt.fee),
        ("removeValidator", FEE)
    );
    let account = msb.account(&b.public());
    assert_eq!(account.balance, before.balance + STAKE);
    assert_eq!((account.staked, account.role), (0, 0));
    assert!(!msb.is_writer(&b.public()));
    assert_eq!(msb.balance(&admin.public()), admin_balance - FEE);
    assert_eq!(msb.supply().burned, burned + FEE);
    // Its entries are skipped now; it cannot rejoin without a new whitelisting.
    let op = msb.transfer(&peer, &b, &alice.public(), 1);
    assert!(msb.apply_as(&b, vec![op]).is_empty());
    let op = msb.user(&b, &admin, UserAction::JoinValidators);
    msb.refuse(op, RefusalCode::NotWhitelisted, "removed, not whitelisted");

    // A whitelisted account that never joined loses its whitelisting.
    let op = msb.admin_op(AdminAction::Whitelist {
        account: c.public(),
    });
    msb.accept(op, "whitelist c");
    let op = msb.admin_op(AdminAction::RemoveValidator { key: c.public() });
    msb.accept(op, "remove a whitelisted account");
    assert_eq!(msb.account(&c.public()).role, 0);
    let op = msb.admin_op(AdminAction::RemoveValidator { key: c.public() });
    msb.refuse(op, RefusalCode::Role, "neither whitelisted nor a validator");
    let op = msb.admin_op(AdminAction::RemoveValidator {
        key: admin.public(),
    });
    msb.refuse(op, RefusalCode::Role, "the admin cannot be removed");
    msb.assert_supply_conserved();

    // An admin without funds cannot pay for admin actions (whitelisting stays free).
    let mut poor = Msb::dev(None);
    let op = poor.admin_op(AdminAction::Whitelist {
        account: c.public(),
    });
    poor.accept(op, "free whitelisting");
    let op = poor.admin_op(AdminAction::RemoveValidator { key: c.public() });
    poor.refuse(op, RefusalCode::InsufficientBalance, "the admin cannot pay");
}

#[test]
fn faucet_funds_each_peer_once_from_the_admins_log() {
    let grant = 5 * TNK;
    let mut msb = Msb::dev(Some(grant));
    let b = key(3);
    msb.make_validator(&b);
    let (x, y) = (key(5).public(), key(6).public());
    let minted = msb.supply().minted;
    let receipt = msb.accept(faucet(&x), "faucet");
    assert_eq!(receipt.kind, "faucet");
    assert_eq!(receipt.requester, Some(x));
    assert_eq!((receipt.validator, receipt.fee), (None, 0));
    assert_eq!(msb.balance(&x), grant);
    assert_eq!(msb.supply().minted, minted + grant);
    let marker = trac_host::msb::keys::faucet(&x);
    assert!(msb.state().contains_key(&marker));
    msb.refuse(faucet(&x), RefusalCode::AlreadyFunded, "funded twice");
    msb.refuse_as(
        &b,
        faucet(&y),
        RefusalCode::NotAdmin,
        "from a validator's log",
    );
    msb.refuse(
        faucet(&invalid_key()),
        RefusalCode::InvalidField,
        "invalid key",
    );
    // A funded peer can spend it.
    let admin = msb.admin.clone();
    let op = msb.transfer(&key(5), &admin, &y, TNK);
    msb.accept(op, "spend the grant");
    msb.assert_supply_conserved();

    let mut no_faucet = Msb::dev(None);
    no_faucet.refuse(faucet(&x), RefusalCode::NoFaucet, "no faucet");
}

// ---------------------------------------------------------------------------------------------
// 2. Shared refusals: nothing changes but the receipt, which says why
// ---------------------------------------------------------------------------------------------

#[test]
fn refused_user_ops_change_nothing_and_say_why() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let b = key(3);
    msb.make_validator(&b);
    let alice = key(2).public();
    let network = msb.network();
    let transfer = UserAction::Transfer {
        to: alice,
        amount: TNK,
    };
    let with_expiry = |msb: &mut Msb, expires: u64| {
        let body = UserBody {
            expires,
            ..msb.body(&peer, transfer.clone())
        };
        encode_user(PartialOp::sign(&peer, &network, body).complete(&admin, &network))
    };

    // Validity window: the applying height must be at most `expires`, and `expires` at most
    // MAX_OP_TTL ahead.
    let height = msb.next_height();
    let op = with_expiry(&mut msb, height - 1);
    let receipt = msb.refuse(op, RefusalCode::Expired, "expired");
    assert_eq!(receipt.kind, "transfer");
    assert_eq!(receipt.requester, Some(peer.public()));
    let height = msb.next_height();
    let op = with_expiry(&mut msb, height + MAX_OP_TTL + 1);
    msb.refuse(op, RefusalCode::Expired, "expiry too far ahead");
    let height = msb.next_height();
    let op = with_expiry(&mut msb, height);
    msb.accept(op, "expires at the applying height");
    let height = msb.next_height();
    let op = with_expiry(&mut msb, height + MAX_OP_TTL);
    msb.accept(op, "expires as far ahead as allowed");

    // Signatures.
    let mut partial = msb.partial(&peer, transfer.clone());
    partial.requester_sig = key(9).sign_hash(&partial.body.tx_hash(&network));
    let op = encode_user(partial.complete(&admin, &network));
    msb.refuse(
        op,
        RefusalCode::BadSignature,
        "requester signature by another key",
    );
    let mut partial = msb.partial(&peer, transfer.clone());
    partial.body.nonce += 1;
    let op = encode_user(partial.complete(&admin, &network));
    msb.refuse(op, RefusalCode::BadSignature, "body changed after signing");
    let mut complete = msb.complete(&peer, &admin, transfer.clone());
    let tx_hash = complete.body.tx_hash(&network);
    complete.validator_sig = key(9).sign_hash(&PartialOp::validation_hash(
        &network,
        &tx_hash,
        &admin.public(),
    ));
    msb.refuse(
        encode_user(complete),
        RefusalCode::BadSignature,
        "validator signature by another key",
    );
    let mut complete = msb.complete(&peer, &admin, transfer.clone());
    complete.validator_sig = admin.sign_hash(&tx_hash);
    msb.refuse(
        encode_user(complete),
        RefusalCode::BadSignature,
        "validator signature of something else",
    );

    // Roles of the two signers and the appender.
    let op = msb.user(&admin, &admin, transfer.clone());
    msb.refuse(op, RefusalCode::SelfValidation, "requester = validator");
    let op = msb.user(&b, &b, transfer.clone());
    msb.refuse_as(
        &b,
        op,
        RefusalCode::SelfValidation,
        "validator validating itself",
    );
    let op = msb.transfer(&peer, &admin, &alice, TNK);
    msb.refuse_as(
        &b,
        op,
        RefusalCode::WrongAppender,
        "appended by another validator",
    );
    let op = msb.transfer(&peer, &b, &alice, TNK);
    msb.refuse(
        op,
        RefusalCode::WrongAppender,
        "appended by the admin for b",
    );
    let stranger = key(7);
    let op = msb.transfer(&stranger, &admin, &alice, 0);
    msb.refuse(op, RefusalCode::NoAccount, "unknown requester");

    // Bytes: malformed, another format version, oversized.
    let receipt = msb.refuse(b"not an op".to_vec(), RefusalCode::Malformed, "garbage");
    assert_eq!(receipt.kind, "malformed");
    assert_eq!((receipt.requester, receipt.validator), (None, None));
    msb.refuse(Vec::new(), RefusalCode::Malformed, "empty op");
    let complete = msb.complete(&peer, &admin, transfer.clone());
    let future = codec::encode(&Envelope {
        version: OP_VERSION + 1,
        op: MsbOp::User(complete),
    });
    msb.refuse(future, RefusalCode::Malformed, "unknown format version");
    let op = msb.user(
        &peer,
        &admin,
        UserAction::DeploySubnet {
            subnet: Hash32([8; 32]),
            channel: "x".repeat(MAX_OP_BYTES),
        },
    );
    assert!(op.len() > MAX_OP_BYTES);
    msb.refuse(op, RefusalCode::Malformed, "oversized op");
    let mut trailing = msb.transfer(&peer, &admin, &alice, TNK);
    trailing.push(0);
    msb.refuse(trailing, RefusalCode::Malformed, "trailing bytes");

    // Nothing of all that reached the accounts.
    assert_eq!(msb.balance(&alice), 2 * TNK, "the two accepted transfers");
    msb.assert_supply_conserved();
}

#[test]
fn refused_admin_ops_change_nothing_and_say_why() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let admin = msb.admin.clone();
    let b = key(3);
    msb.make_validator(&b);
    let network = msb.network();
    let whitelist = AdminAction::Whitelist {
        account: key(4).public(),
    };

    let op = encode_admin(msb.admin_signed_by(&b, whitelist.clone()));
    msb.refuse(op, RefusalCode::NotAdmin, "signed by a validator");
    let peer = msb.peer.clone();
    let op = encode_admin(msb.admin_signed_by(&peer, whitelist.clone()));
    msb.refuse(op, RefusalCode::NotAdmin, "signed by the peer");
    let mut tampered = msb.admin_signed_by(&admin, whitelist.clone());
    tampered.action = AdminAction::Whitelist {
        account: key(5).public(),
    };
    msb.refuse(
        encode_admin(tampered),
        RefusalCode::NotAdmin,
        "action changed after signing",
    );
    let height = msb.next_height();
    let op = admin_op_of(&network, &admin, whitelist.clone(), 1, height - 1);
    msb.refuse(op, RefusalCode::Expired, "expired admin op");
    let height = msb.next_height();
    let op = admin_op_of(
        &network,
        &admin,
        whitelist.clone(),
        1,
        height + MAX_OP_TTL + 1,
    );
    msb.refuse(op, RefusalCode::Expired, "admin op expiring too far ahead");
    let op = msb.admin_op(AdminAction::Whitelist {
        account: invalid_key(),
    });
    msb.refuse(op, RefusalCode::InvalidField, "whitelist an invalid key");

    // Admin ops are valid from any writer's log; once applied, never again.
    let op = msb.admin_op(whitelist.clone());
    let receipt = msb.accept_as(&b, op.clone(), "admin op relayed by a validator");
    assert_eq!(receipt.kind, "whitelist");
    assert!(msb.account(&key(4).public()).has(ROLE_WHITELISTED));
    msb.refuse(op, RefusalCode::Duplicate, "admin op replayed");
    msb.assert_supply_conserved();
}

#[test]
fn a_co_signer_that_is_not_a_validator_is_refused() {
    // Writers are validators, so the only way to have a non-validator co-sign an op in a
    // member's entry is to lose the role earlier in that same entry.
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let peer = msb.peer.clone();
    let b = key(3);
    msb.make_validator(&b);
    let alice = key(2).public();
    let remove = msb.admin_op(AdminAction::RemoveValidator { key: b.public() });
    let op = msb.transfer(&peer, &b, &alice, TNK);
    let peer_balance = msb.balance(&peer.public());
    let receipts = msb.apply_as(&b, vec![remove, op]);
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].error, None, "{:?}", receipts[0]);
    assert_eq!(code(&receipts[1]), Some(RefusalCode::NotAValidator));
    assert_eq!(receipts[1].fee, 0);
    assert!(!msb.has_account(&alice));
    assert!(!msb.applied(&receipts[1].tx_hash));
    assert_eq!(msb.balance(&peer.public()), peer_balance);
    msb.assert_supply_conserved();
}

#[test]
fn a_transaction_applies_once() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let b = key(3);
    msb.make_validator(&b);
    let alice = key(2).public();
    let peer_balance = msb.balance(&peer.public());

    // Twice in one entry.
    let op = msb.transfer(&peer, &admin, &alice, TNK);
    let receipts = msb.apply(vec![op.clone(), op.clone()]);
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].error, None);
    assert_eq!(code(&receipts[1]), Some(RefusalCode::Duplicate));
    assert_eq!(receipts[0].tx_hash, receipts[1].tx_hash);
    assert_eq!(receipts[1].fee, 0);
    assert_eq!(msb.balance(&alice), TNK);
    assert_eq!(msb.balance(&peer.public()), peer_balance - TNK - FEE);

    // Again in a later checkpoint.
    msb.refuse(op, RefusalCode::Duplicate, "replayed in a later checkpoint");

    // In two entries of one checkpoint.
    let op = msb.transfer(&peer, &admin, &alice, TNK);
    msb.feed_as(&admin, vec![op.clone()]);
    msb.feed_as(&admin, vec![op]);
    let receipts = msb.checkpoint();
    let codes: Vec<_> = receipts.iter().map(code).collect();
    assert_eq!(codes, vec![None, Some(RefusalCode::Duplicate)]);
    assert_eq!(msb.balance(&alice), 2 * TNK);

    // The same request completed by two validators, each in its own log.
    let partial = msb.partial(
        &peer,
        UserAction::Transfer {
            to: alice,
            amount: TNK,
        },
    );
    let network = msb.network();
    msb.feed_as(
        &admin,
        vec![encode_user(partial.clone().complete(&admin, &network))],
    );
    msb.feed_as(&b, vec![encode_user(partial.complete(&b, &network))]);
    let receipts = msb.checkpoint();
    let mut codes: Vec<_> = receipts.iter().map(code).collect();
    codes.sort_by_key(|c| c.is_some());
    assert_eq!(codes, vec![None, Some(RefusalCode::Duplicate)]);
    assert_eq!(msb.balance(&alice), 3 * TNK);
    msb.assert_supply_conserved();
}

// ---------------------------------------------------------------------------------------------
// 3. Double spends
// ---------------------------------------------------------------------------------------------

#[test]
fn a_double_spend_in_one_batch_applies_only_the_first() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (alice, bob) = (key(2).public(), key(3).public());
    let first = msb.transfer(&peer, &admin, &alice, 600 * TNK);
    let second = msb.transfer(&peer, &admin, &bob, 600 * TNK);
    let receipts = msb.apply(vec![first, second]);
    assert_eq!(receipts[0].error, None);
    assert_eq!(code(&receipts[1]), Some(RefusalCode::InsufficientBalance));
    assert_eq!(msb.balance(&peer.public()), 400 * TNK - FEE);
    assert_eq!(msb.balance(&alice), 600 * TNK);
    assert!(!msb.has_account(&bob));
    assert_eq!(msb.balance(&admin.public()), fee_share(75));
    assert_eq!(msb.supply().burned, fee_share(25));
    assert!(!msb.applied(&receipts[1].tx_hash));
    msb.assert_supply_conserved();
}

#[test]
fn a_double_spend_across_validators_applies_only_one() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let b = key(4);
    msb.make_validator(&b);
    let (alice, bob) = (key(2).public(), key(3).public());
    let balance = msb.balance(&peer.public());
    let half = balance / 2;
    let first = msb.transfer(&peer, &admin, &alice, half);
    let second = msb.transfer(&peer, &b, &bob, half);
    msb.feed_as(&admin, vec![first]);
    msb.feed_as(&b, vec![second]);
    let receipts = msb.checkpoint();
    assert_eq!(receipts.len(), 2);
    let applied: Vec<&Receipt> = receipts.iter().filter(|r| r.error.is_none()).collect();
    assert_eq!(applied.len(), 1, "{receipts:?}");
    let refused: Vec<&Receipt> = receipts.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(code(refused[0]), Some(RefusalCode::InsufficientBalance));
    assert_eq!(msb.balance(&peer.public()), balance - half - FEE);
    assert_eq!(msb.balance(&alice) + msb.balance(&bob), half);
    msb.assert_supply_conserved();
}

// ---------------------------------------------------------------------------------------------
// 5. The validator service (and the double spend across requests)
// ---------------------------------------------------------------------------------------------

/// The rejection of a submission that must be rejected.
#[track_caller]
fn rejection(result: Result<Hash32, SubmitError>) -> Rejection {
    match result {
        Err(SubmitError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn the_validator_refuses_a_double_spend_before_appending() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (alice, bob) = (key(2).public(), key(3).public());
    let mut validator = Validator::new(admin.clone());
    assert_eq!(validator.public(), admin.public());
    let spend = |msb: &mut Msb, to: PublicKey| {
        msb.partial(
            &peer,
            UserAction::Transfer {
                to,
                amount: 600 * TNK,
            },
        )
    };
    let first = spend(&mut msb, alice);
    let tx = validator
        .submit(&mut msb.ledger, first)
        .expect("the first fits");
    let second = spend(&mut msb, bob);
    let refused = rejection(validator.submit(&mut msb.ledger, second));
    assert_eq!(refused.code(), Some(RefusalCode::InsufficientBalance));
    assert_eq!(validator.pending(), 1);

    let entries = validator.flush(&mut msb.ledger).expect("flush");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].body.ops.len(), 1);
    assert_eq!(entries[0].body.writer, admin.public());
    // Appended, not yet final: the unconfirmed view still refuses the second spend.
    let again = spend(&mut msb, bob);
    let refused = rejection(validator.submit(&mut msb.ledger, again));
    assert_eq!(refused.code(), Some(RefusalCode::InsufficientBalance));

    let receipts = msb.checkpoint();
    assert_eq!(receipts.len(), 1);
    assert_eq!((receipts[0].tx_hash, receipts[0].error.clone()), (tx, None));
    assert_eq!(msb.balance(&peer.public()), 400 * TNK - FEE);
    assert_eq!(msb.balance(&alice), 600 * TNK);
    assert!(!msb.has_account(&bob));
    msb.assert_supply_conserved();
}

#[test]
fn validator_rejections_are_typed() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let network = msb.network();
    let alice = key(2);
    let mut validator = Validator::new(admin.clone());
    let small = UserAction::Transfer {
        to: alice.public(),
        amount: 1,
    };
    let mut expect = |msb: &mut Msb, partial: PartialOp, code: RefusalCode, what: &str| {
        let rejection = rejection(validator.submit(&mut msb.ledger, partial));
        assert_eq!(rejection.code(), Some(code), "{what}: {rejection}");
        assert_eq!(validator.pending(), 0, "{what}: nothing queued");
    };

    let height = msb.next_height();
    let body = UserBody {
        expires: height - 1,
        ..msb.body(&peer, small.clone())
    };
    expect(
        &mut msb,
        PartialOp::sign(&peer, &network, body),
        RefusalCode::Expired,
        "expired",
    );
    let body = UserBody {
        expires: height + MAX_OP_TTL + 1,
        ..msb.body(&peer, small.clone())
    };
    expect(
        &mut msb,
        PartialOp::sign(&peer, &network, body),
        RefusalCode::Expired,
        "too far ahead",
    );
    let mut partial = msb.partial(&peer, small.clone());
    partial.requester_sig = alice.sign_hash(&partial.body.tx_hash(&network));
    expect(
        &mut msb,
        partial,
        RefusalCode::BadSignature,
        "bad signature",
    );
    let partial = msb.partial(&key(7), small.clone());
    expect(
        &mut msb,
        partial,
        RefusalCode::NoAccount,
        "unknown requester",
    );
    let partial = msb.partial(
        &peer,
        UserAction::Transfer {
            to: alice.public(),
            amount: 1_000 * TNK,
        },
    );
    expect(
        &mut msb,
        partial,
        RefusalCode::InsufficientBalance,
        "too much",
    );
    let partial = msb.partial(&admin, small.clone());
    expect(&mut msb, partial, RefusalCode::SelfValidation, "its own op");
    let partial = msb.partial(&peer, tx_action(&Hash32([1; 32]), "f", b""));
    expect(
        &mut msb,
        partial,
        RefusalCode::NotDeployed,
        "undeployed subnet",
    );
    let partial = msb.partial(&peer, UserAction::JoinValidators);
    expect(
        &mut msb,
        partial,
        RefusalCode::NotWhitelisted,
        "not whitelisted",
    );
    let partial = msb.partial(&peer, UserAction::LeaveValidators);
    expect(&mut msb, partial, RefusalCode::Role, "not a validator");
    let deploy = |msb: &mut Msb, subnet: Hash32, channel: String| {
        msb.partial(&peer, UserAction::DeploySubnet { subnet, channel })
    };
    let partial = deploy(&mut msb, network, "msb".into());
    expect(
        &mut msb,
        partial,
        RefusalCode::InvalidField,
        "MSB id as subnet",
    );
    let partial = deploy(&mut msb, Hash32([2; 32]), "x".repeat(MAX_OP_BYTES));
    expect(&mut msb, partial, RefusalCode::Malformed, "oversized");

    // Accepted ops count for what follows, before they are appended.
    let partial = deploy(&mut msb, Hash32([2; 32]), "two".into());
    let deployed = validator
        .submit(&mut msb.ledger, partial.clone())
        .expect("deploy");
    let pending = rejection(validator.submit(&mut msb.ledger, partial.clone()));
    assert_eq!(pending, Rejection::Pending(deployed));
    assert_eq!(pending.code(), None);
    let other = deploy(&mut msb, Hash32([2; 32]), "again".into());
    let refused = rejection(validator.submit(&mut msb.ledger, other));
    assert_eq!(refused.code(), Some(RefusalCode::AlreadyDeployed));
    assert_eq!(validator.pending(), 1);
    validator.flush(&mut msb.ledger).expect("flush");
    assert_eq!(validator.pending(), 0);
    let refused = rejection(validator.submit(&mut msb.ledger, partial.clone()));
    assert_eq!(refused.code(), Some(RefusalCode::Duplicate), "appended");
    let receipts = msb.checkpoint();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].error, None);
    let refused = rejection(validator.submit(&mut msb.ledger, partial));
    assert_eq!(refused.code(), Some(RefusalCode::Duplicate), "final");

    // A node whose key is not a validator validates nothing.
    let mut stranger = Validator::new(key(8));
    let partial = msb.partial(&peer, small.clone());
    assert_eq!(
        rejection(stranger.submit(&mut msb.ledger, partial)),
        Rejection::NotValidator
    );
    assert_eq!(stranger.pending(), 0);
}

#[test]
fn the_validator_appends_at_most_256_ops_per_entry() {
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let alice = key(2).public();
    let mut validator = Validator::new(admin.clone());
    let count = MAX_BATCH + 44;
    assert_eq!(MAX_BATCH, 256);
    let mut hashes = Vec::new();
    for _ in 0..count {
        let partial = msb.partial(
            &peer,
            UserAction::Transfer {
                to: alice,
                amount: 1,
            },
        );
        hashes.push(validator.submit(&mut msb.ledger, partial).expect("submit"));
    }
    assert_eq!(validator.pending(), count);
    let entries = validator.flush(&mut msb.ledger).expect("flush");
    let sizes: Vec<usize> = entries.iter().map(|e| e.body.ops.len()).collect();
    assert_eq!(sizes, vec![MAX_BATCH, 44]);
    assert_eq!(validator.pending(), 0);
    assert!(validator.flush(&mut msb.ledger).expect("flush").is_empty());

    let receipts = msb.checkpoint();
    assert_eq!(receipts.len(), count);
    assert!(receipts.iter().all(|r| r.error.is_none()), "all applied");
    let applied: Vec<Hash32> = receipts.iter().map(|r| r.tx_hash).collect();
    assert_eq!(applied, hashes, "in submission order");
    assert_eq!(msb.balance(&alice), count as u128);
    assert_eq!(
        msb.balance(&peer.public()),
        1_000 * TNK - count as u128 * (FEE + 1)
    );
    msb.assert_supply_conserved();
}

/// What `MsbMachine::preflight` says of `requester` doing `action` on the unconfirmed state.
fn preflight(msb: &mut Msb, requester: &Keypair, action: &UserAction) -> Result<(), Refusal> {
    msb.ledger
        .read_with_machine(false, |state, machine| {
            machine.preflight(state, &requester.public(), action)
        })
        .expect("read")
        .expect("no node fault")
}

/// A user op to preflight then apply: requester, validator, action, the refusal expected.
type Case<'k> = (&'k Keypair, &'k Keypair, UserAction, Option<RefusalCode>);

/// Preflights each case, then applies it alone (in its validator's log): the preflight's
/// verdict is the receipt's, code and message.
#[track_caller]
fn preflight_agrees(msb: &mut Msb, cases: Vec<Case>) {
    for (requester, validator, action, expected) in cases {
        let what = format!("{} of {}", action.name(), requester.public());
        let verdict = preflight(msb, requester, &action);
        assert_eq!(verdict.as_ref().err().map(|r| r.code), expected, "{what}");
        let op = msb.user(requester, validator, action);
        let receipts = msb.apply_as(validator, vec![op]);
        assert_eq!(
            receipts[0].error,
            verdict.err(),
            "{what}: the receipt agrees"
        );
    }
}

#[test]
fn preflight_tells_before_signing_what_applying_the_op_would_refuse() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let network = msb.network();
    let (stranger, poor, b) = (key(7), key(8), key(9));
    let deployed = Hash32([5; 32]);
    let transfer = |to: PublicKey, amount: u128| UserAction::Transfer { to, amount };
    let deploy = |subnet: Hash32, channel: &str| UserAction::DeploySubnet {
        subnet,
        channel: channel.into(),
    };
    let cases: Vec<Case> = vec![
        (
            &stranger,
            &admin,
            transfer(peer.public(), 0),
            Some(RefusalCode::NoAccount),
        ),
        (
            &peer,
            &admin,
            transfer(invalid_key(), 1),
            Some(RefusalCode::InvalidField),
        ),
        (
            &peer,
            &admin,
            transfer(poor.public(), 2_000 * TNK),
            Some(RefusalCode::InsufficientBalance),
        ),
        (&peer, &admin, transfer(poor.public(), FEE / 2), None),
        (
            &poor,
            &admin,
            transfer(peer.public(), 0),
            Some(RefusalCode::InsufficientBalance),
        ),
        (&peer, &admin, transfer(peer.public(), 999 * TNK), None),
        (
            &peer,
            &admin,
            deploy(deployed, ""),
            Some(RefusalCode::InvalidField),
        ),
        (
            &peer,
            &admin,
            deploy(deployed, "a\nb"),
            Some(RefusalCode::InvalidField),
        ),
        (
            &peer,
            &admin,
            deploy(network, "msb"),
            Some(RefusalCode::InvalidField),
        ),
        (&peer, &admin, deploy(deployed, "five"), None),
        (
            &peer,
            &admin,
            deploy(deployed, "again"),
            Some(RefusalCode::AlreadyDeployed),
        ),
        (
            &peer,
            &admin,
            tx_action(&Hash32([6; 32]), "f", b""),
            Some(RefusalCode::NotDeployed),
        ),
        (
            &poor,
            &admin,
            tx_action(&deployed, "f", b""),
            Some(RefusalCode::InsufficientBalance),
        ),
        (&peer, &admin, tx_action(&deployed, "f", b""), None),
        (
            &peer,
            &admin,
            UserAction::JoinValidators,
            Some(RefusalCode::NotWhitelisted),
        ),
        (
            &peer,
            &admin,
            UserAction::LeaveValidators,
            Some(RefusalCode::Role),
        ),
        (&peer, &admin, transfer(b.public(), TNK), None),
    ];
    preflight_agrees(&mut msb, cases);
    let whitelist = msb.admin_op(AdminAction::Whitelist {
        account: b.public(),
    });
    msb.accept(whitelist, "whitelist b");
    preflight_agrees(
        &mut msb,
        vec![
            (&b, &admin, UserAction::JoinValidators, None),
            (
                &b,
                &admin,
                UserAction::JoinValidators,
                Some(RefusalCode::Role),
            ),
            // The rules of the requester's role, whoever validates.
            (
                &admin,
                &b,
                UserAction::LeaveValidators,
                Some(RefusalCode::Role),
            ),
            (&b, &admin, UserAction::LeaveValidators, None),
        ],
    );
    msb.assert_supply_conserved();
}

// ---------------------------------------------------------------------------------------------
// 4. Supply conservation under random op mixes
// ---------------------------------------------------------------------------------------------

/// The actors of the property test: 0 is the admin, 1 the genesis peer, 2..=5 others.
const ACTORS: usize = 6;

/// The faucet grant of the property test's network.
const GRANT: u128 = 2 * TNK;

/// Transfer amounts the property test picks from.
const AMOUNTS: [u128; 7] = [0, 1, FEE, TNK / 2, 3 * TNK, 400 * TNK, 2_000 * TNK];

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    Transfer {
        from: usize,
        to: usize,
        by: usize,
        amount: usize,
    },
    Deploy {
        from: usize,
        by: usize,
        subnet: u8,
    },
    Tx {
        from: usize,
        by: usize,
        subnet: u8,
    },
    Join {
        from: usize,
        by: usize,
    },
    Leave {
        from: usize,
        by: usize,
    },
    Admin {
        action: u8,
        target: usize,
        signer: usize,
    },
    Faucet {
        to: usize,
        via: usize,
    },
    Junk {
        via: usize,
    },
    Expired {
        from: usize,
        by: usize,
    },
    Replay,
    Checkpoint,
}

fn step() -> impl Strategy<Value = Step> {
    let actor = || 0..ACTORS;
    // Validators: mostly the admin or the validators of the setup, sometimes anyone.
    let by = || prop_oneof![4 => Just(0usize), 3 => 2..4usize, 1 => actor()];
    prop_oneof![
        6 => (actor(), actor(), by(), 0..AMOUNTS.len())
            .prop_map(|(from, to, by, amount)| Step::Transfer { from, to, by, amount }),
        2 => (actor(), by(), 0..3u8).prop_map(|(from, by, subnet)| Step::Deploy { from, by, subnet }),
        4 => (actor(), by(), 0..4u8).prop_map(|(from, by, subnet)| Step::Tx { from, by, subnet }),
        3 => (actor(), by()).prop_map(|(from, by)| Step::Join { from, by }),
        2 => (actor(), by()).prop_map(|(from, by)| Step::Leave { from, by }),
        4 => (0..4u8, 1..ACTORS, prop_oneof![9 => Just(0usize), 1 => actor()])
            .prop_map(|(action, target, signer)| Step::Admin { action, target, signer }),
        2 => (actor(), by()).prop_map(|(to, via)| Step::Faucet { to, via }),
        1 => actor().prop_map(|via| Step::Junk { via }),
        1 => (actor(), by()).prop_map(|(from, by)| Step::Expired { from, by }),
        1 => Just(Step::Replay),
        4 => Just(Step::Checkpoint),
    ]
}

/// Checks, in the confirmed state: Σ(balance + staked) + burned == minted, and minted is the
/// genesis funds plus one grant per funded peer.
fn check_supply(msb: &mut Msb, genesis_funds: u128) -> Result<(), TestCaseError> {
    let (total, supply, grants) = msb
        .ledger
        .read(true, |s| {
            let grants = s
                .range(b"faucet/", Some(b"faucet0"), usize::MAX)
                .expect("range")
                .len() as u128;
            (
                holdings(s),
                trac_host::msb::supply(s).expect("supply"),
                grants,
            )
        })
        .expect("read");
    prop_assert_eq!(total + supply.burned, supply.minted);
    prop_assert_eq!(supply.minted, genesis_funds + grants * GRANT);
    Ok(())
}

/// Runs `steps` on a fresh MSB, checking the supply after every checkpoint.
fn run_steps(steps: &[Step]) -> Result<(), TestCaseError> {
    let genesis = funded_genesis(10 * TNK, Some(GRANT));
    let genesis_funds: u128 = genesis.funds.iter().map(|(_, a)| a).sum();
    let mut msb = Msb::open(genesis);
    let actors: Vec<Keypair> = std::iter::once(admin_key())
        .chain(std::iter::once(peer_key()))
        .chain((2..ACTORS as u8).map(|i| key(100 + i)))
        .collect();
    // Every actor acks; only the indexers' acks count.
    msb.cosigners = actors[1..].to_vec();
    // Setup: every actor funded, actors 2 and 3 validators, 4 whitelisted.
    for actor in &actors[2..] {
        msb.fund(&actor.public(), 5 * TNK);
    }
    for (i, actor) in actors.iter().enumerate().take(5).skip(2) {
        let op = msb.admin_op(AdminAction::Whitelist {
            account: actor.public(),
        });
        msb.accept(op, "whitelist");
        if i < 4 {
            let admin = msb.admin.clone();
            let op = msb.user(actor, &admin, UserAction::JoinValidators);
            msb.accept(op, "join");
        }
    }
    check_supply(&mut msb, genesis_funds)?;
    let network = msb.network();
    let subnet = |i: u8| Hash32([0xa0 + i; 32]);
    let mut pending: Vec<Vec<Vec<u8>>> = vec![Vec::new(); ACTORS];
    let mut last: Option<(usize, Vec<u8>)> = None;
    let flush = |msb: &mut Msb, pending: &mut Vec<Vec<Vec<u8>>>| -> Result<(), TestCaseError> {
        let mut fed = false;
        for (writer, ops) in pending.iter_mut().enumerate() {
            if !ops.is_empty() {
                msb.feed_as(&actors[writer], std::mem::take(ops));
                fed = true;
            }
        }
        if fed {
            let receipts = msb.checkpoint();
            for receipt in &receipts {
                if receipt.error.is_some() {
                    prop_assert_eq!(receipt.fee, 0, "{:?}", receipt);
                }
            }
            check_supply(msb, genesis_funds)?;
        }
        Ok(())
    };
    for step in steps {
        let (appender, op) = match *step {
            Step::Transfer {
                from,
                to,
                by,
                amount,
            } => {
                let to = actors[to].public();
                let op = msb.transfer(&actors[from], &actors[by], &to, AMOUNTS[amount]);
                (by, op)
            }
            Step::Deploy {
                from,
                by,
                subnet: s,
            } => {
                let action = UserAction::DeploySubnet {
                    subnet: subnet(s),
                    channel: format!("subnet-{s}"),
                };
                (by, msb.user(&actors[from], &actors[by], action))
            }
            Step::Tx {
                from,
                by,
                subnet: s,
            } => {
                let action = tx_action(&subnet(s), "f", &[s]);
                (by, msb.user(&actors[from], &actors[by], action))
            }
            Step::Join { from, by } => (
                by,
                msb.user(&actors[from], &actors[by], UserAction::JoinValidators),
            ),
            Step::Leave { from, by } => (
                by,
                msb.user(&actors[from], &actors[by], UserAction::LeaveValidators),
            ),
            Step::Admin {
                action,
                target,
                signer,
            } => {
                let key = actors[target].public();
                let action = match action {
                    0 => AdminAction::Whitelist { account: key },
                    1 => AdminAction::AddIndexer { key },
                    2 => AdminAction::RemoveIndexer { key },
                    _ => AdminAction::RemoveValidator { key },
                };
                (
                    0,
                    encode_admin(msb.admin_signed_by(&actors[signer], action)),
                )
            }
            Step::Faucet { to, via } => (via, faucet(&actors[to].public())),
            Step::Junk { via } => (via, vec![0xc1, 0x00, 0xff]),
            Step::Expired { from, by } => {
                let action = UserAction::Transfer {
                    to: actors[0].public(),
                    amount: 1,
                };
                let height = msb.next_height();
                let op = user_op(&network, &actors[from], &actors[by], action, 0, height - 1);
                (by, op)
            }
            Step::Replay => match &last {
                Some((appender, op)) => (*appender, op.clone()),
                None => continue,
            },
            Step::Checkpoint => {
                flush(&mut msb, &mut pending)?;
                continue;
            }
        };
        pending[appender].push(op.clone());
        last = Some((appender, op));
        if pending[appender].len() == MAX_BATCH {
            flush(&mut msb, &mut pending)?;
        }
    }
    flush(&mut msb, &mut pending)?;
    check_supply(&mut msb, genesis_funds)?;
    // The admin stays the sequencer: RemoveIndexer never targets it.
    prop_assert_eq!(msb.indexers()[0], admin_key().public());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn supply_is_conserved_under_random_op_mixes(steps in proptest::collection::vec(step(), 1..70)) {
        run_steps(&steps)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Settlement proofs, checked by subnets
// ---------------------------------------------------------------------------------------------

/// The id of the test subnet (`Solo`), known before it is opened.
fn subnet_id() -> Hash32 {
    crate::subnet_support::genesis().id()
}

/// The tx hash of an encoded user op of MSB `network`.
fn user_tx_hash(network: &Hash32, op: &[u8]) -> Hash32 {
    match trac_host::msb::ops::decode_op(op).expect("decodes") {
        MsbOp::User(op) => op.body.tx_hash(network),
        other => panic!("not a user op: {other:?}"),
    }
}

/// A dev MSB where the peer deployed `subnet`, then one checkpoint applying one entry of the
/// admin's log: a transfer, the peer's settlement of `function(args)` in `subnet`, another
/// transfer, and the settlement again (refused as a duplicate). Returns the MSB and that
/// checkpoint's receipts.
fn settled_among_others(
    genesis: MsbGenesis,
    subnet: Hash32,
    function: &str,
    args: &[u8],
) -> (Msb, Vec<Receipt>) {
    let mut msb = Msb::open(genesis);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    msb.deploy(&peer, &admin, subnet);
    let first = msb.transfer(&peer, &admin, &key(2).public(), TNK);
    let tx = msb.user(&peer, &admin, tx_action(&subnet, function, args));
    let second = msb.transfer(&peer, &admin, &key(3).public(), 2 * TNK);
    let receipts = msb.apply(vec![first, tx.clone(), second, tx]);
    let codes: Vec<_> = receipts.iter().map(code).collect();
    assert_eq!(codes, vec![None, None, None, Some(RefusalCode::Duplicate)]);
    (msb, receipts)
}

/// What a subnet's proof verifier makes of `proof` against the subnet's confirmed state.
fn verify(solo: &mut Solo, proof: &[u8]) -> Result<Settlement, String> {
    let verifier = ProofVerifier::new();
    solo.ledger
        .read(true, |s| verifier.verify(s, proof))
        .expect("read")
}

#[test]
fn a_settlement_proof_lets_a_subnet_apply_the_tx() {
    let subnet = subnet_id();
    let (function, args) = ("storeSomething", [0xc0]);
    let (mut msb, receipts) = settled_among_others(dev_genesis(None), subnet, function, &args);
    let (admin, peer) = (msb.admin.public(), msb.peer.public());
    let tx = receipts[1].tx_hash;
    let proof = SettlementProof::build(&mut msb.ledger, &tx).expect("proof");
    assert_eq!(proof.network, msb.network());
    assert_eq!(proof.receipt, receipts[1]);
    assert_eq!(proof.path.len(), 2, "four receipts: two levels");
    assert_eq!(
        proof.checkpoint.body.height,
        msb.ledger.status().final_height
    );
    assert!(
        proof.acks.is_empty(),
        "one indexer: its checkpoint signature suffices"
    );
    assert_eq!(
        SettlementProof::build(&mut msb.ledger, &tx).expect("again"),
        proof,
        "deterministic"
    );

    let mut solo = trusting_subnet(msb.network(), vec![admin]);
    assert_eq!(solo.id(), subnet);
    assert_eq!(solo.json("sys/msb")["scheme"], json!("Checkpointed"));
    let settlement = verify(&mut solo, &proof.encode()).expect("verifies");
    assert_eq!(
        settlement,
        Settlement {
            tx_hash: tx,
            requester: peer,
            validator: admin,
            subnet,
            content: TxOp::content_hash(&subnet, function, &args),
        }
    );
    solo.apply(vec![tx_op(function, &args, proof.encode())]);
    assert_eq!(solo.json("txl"), json!(1));
    let record = solo.json("txi/0");
    assert_eq!(record["tx"], json!(tx.to_hex()), "{record}");
    assert_eq!(record["ipk"], json!(peer.to_hex()));
    assert_eq!(record["wp"], json!(admin.to_hex()));
    assert_eq!(solo.json(&format!("tx/{}", tx.to_hex())), json!(0));

    solo.assert_refused(tx_op(function, &args, proof.encode()), "settled twice");
    solo.assert_refused(tx_op("other", &args, proof.encode()), "another call");
    solo.assert_refused(tx_op(function, &[0x01], proof.encode()), "other args");
    assert_eq!(solo.json("txl"), json!(1));

    // A settlement for another subnet verifies as a proof, but this subnet refuses it.
    let elsewhere = Hash32([9; 32]);
    let (admin_pair, peer_pair) = (msb.admin.clone(), msb.peer.clone());
    msb.deploy(&peer_pair, &admin_pair, elsewhere);
    let op = msb.user(
        &peer_pair,
        &admin_pair,
        tx_action(&elsewhere, function, &args),
    );
    let receipt = msb.accept(op, "settled elsewhere");
    let other = SettlementProof::build(&mut msb.ledger, &receipt.tx_hash).expect("proof");
    assert_eq!(
        verify(&mut solo, &other.encode())
            .expect("a valid proof")
            .subnet,
        elsewhere
    );
    solo.assert_refused(tx_op(function, &args, other.encode()), "another subnet");
    assert_eq!(solo.json("txl"), json!(1));

    // A subnet that trusts no MSB, or takes attestations, refuses the proof.
    let mut untrusting = Solo::new();
    untrusting.apply(vec![Solo::add_admin_op()]);
    untrusting.assert_refused(tx_op(function, &args, proof.encode()), "no trust");
    let mut attested = Solo::new();
    let trust = attested.trust_op();
    attested.apply(vec![Solo::add_admin_op(), trust]);
    attested.assert_refused(tx_op(function, &args, proof.encode()), "attested scheme");
}

#[test]
fn settlement_proofs_are_built_only_for_final_applied_ops() {
    let subnet = subnet_id();
    let (mut msb, receipts) = settled_among_others(dev_genesis(None), subnet, "f", &[1]);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let unknown = Hash32([0x77; 32]);
    assert!(matches!(
        SettlementProof::build(&mut msb.ledger, &unknown),
        Err(ProofError::NotApplied(h)) if h == unknown
    ));
    // A refused op is not applied (its duplicate twin is, and proves the applied one).
    let poor = msb.transfer(&key(2), &admin, &peer.public(), 2 * TNK);
    let refused = msb.refuse(poor, RefusalCode::InsufficientBalance, "too poor");
    assert!(matches!(
        SettlementProof::build(&mut msb.ledger, &refused.tx_hash),
        Err(ProofError::NotApplied(_))
    ));
    let proof = SettlementProof::build(&mut msb.ledger, &receipts[3].tx_hash).expect("proof");
    assert_eq!(
        proof.receipt, receipts[1],
        "the applied one, not its refused twin"
    );

    // Appended but not checkpointed, then checkpointed but not final (a second indexer
    // must ack): not final either way.
    let b = key(4);
    msb.make_validator(&b);
    let op = msb.admin_op(AdminAction::AddIndexer { key: b.public() });
    msb.accept(op, "second indexer");
    let late = msb.user(&peer, &admin, tx_action(&subnet, "f", &[2]));
    let late_tx = user_tx_hash(&msb.network(), &late);
    msb.feed_as(&admin, vec![late]);
    assert!(matches!(
        SettlementProof::build(&mut msb.ledger, &late_tx),
        Err(ProofError::NotFinal(h)) if h == late_tx
    ));
    let proposed = msb.propose();
    assert_eq!(proposed.len(), 1);
    assert!(matches!(
        SettlementProof::build(&mut msb.ledger, &late_tx),
        Err(ProofError::NotFinal(_))
    ));
    let ack = Ack::sign(&b, &msb.network(), &proposed[0]);
    msb.ledger
        .handle(trac_host::ledger::Message::Ack(ack))
        .expect("ack");
    let proof = SettlementProof::build(&mut msb.ledger, &late_tx).expect("final now");
    assert_eq!(proof.acks.len(), 1);
    assert_eq!(proof.acks[0].body.indexer, b.public());
}

#[test]
fn tampered_settlement_proofs_are_rejected() {
    let subnet = subnet_id();
    let (function, args) = ("f", [1u8]);
    let (mut msb, receipts) = settled_among_others(dev_genesis(None), subnet, function, &args);
    let network = msb.network();
    let admin = msb.admin.clone();
    let good = SettlementProof::build(&mut msb.ledger, &receipts[1].tx_hash).expect("proof");
    let height = good.checkpoint.body.height;
    let all = msb.ledger.receipts(height).expect("receipts");
    assert_eq!(all.len(), 4);
    let transfer = SettlementProof::build(&mut msb.ledger, &receipts[0].tx_hash).expect("proof");
    let bytes = good.encode();

    // The same call settled on another MSB network (same keys, another salt).
    let (mut other_msb, other_receipts) = settled_among_others(
        MsbGenesis {
            salt: [1; 16],
            ..dev_genesis(None)
        },
        subnet,
        function,
        &args,
    );
    let foreign =
        SettlementProof::build(&mut other_msb.ledger, &other_receipts[1].tx_hash).expect("proof");

    let mut cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "truncated by one byte",
            "malformed",
            bytes[..bytes.len() - 1].to_vec(),
        ),
        (
            "truncated by half",
            "malformed",
            bytes[..bytes.len() / 2].to_vec(),
        ),
        ("garbage", "malformed", b"proof".to_vec()),
        (
            "settled on another MSB",
            "another MSB network",
            foreign.encode(),
        ),
        (
            "the transfer's proof",
            "not a contract transaction",
            transfer.encode(),
        ),
    ];
    let mut tamper = |what: &'static str, why: &'static str, f: &dyn Fn(&mut SettlementProof)| {
        let mut proof = good.clone();
        f(&mut proof);
        cases.push((what, why, proof.encode()));
    };
    tamper("claims another network", "another MSB network", &|p| {
        p.network = Hash32([0xee; 32])
    });
    let relabeled = foreign.clone();
    tamper(
        "another MSB's proof relabeled",
        "belongs to another op",
        &|p| {
            *p = relabeled.clone();
            p.network = network;
        },
    );
    tamper("op changed", "belongs to another op", &|p| {
        if let MsbOp::User(op) = &mut p.op {
            op.body.nonce += 1;
        }
    });
    tamper("op and receipt forged", "receipts root", &|p| {
        if let MsbOp::User(op) = &mut p.op {
            op.body.nonce += 1;
            p.receipt.tx_hash = op.body.tx_hash(&network);
        }
    });
    tamper(
        "validator renamed",
        "another requester or validator",
        &|p| {
            p.receipt.validator = Some(key(9).public());
        },
    );
    let swapped = decode_receipt(&all[0]);
    let swapped_path = merkle::proof(&all, 0).expect("path");
    tamper("receipt swapped", "belongs to another op", &|p| {
        p.receipt = swapped.clone();
        p.path = swapped_path.clone();
    });
    let refused = decode_receipt(&all[3]);
    let refused_path = merkle::proof(&all, 3).expect("path");
    tamper("the refused twin's receipt", "refused", &|p| {
        p.receipt = refused.clone();
        p.path = refused_path.clone();
    });
    tamper("path hash changed", "receipts root", &|p| {
        p.path[0].0.0[0] ^= 1;
    });
    tamper("path side flipped", "receipts root", &|p| {
        p.path[1].1 = !p.path[1].1;
    });
    tamper("path shortened", "receipts root", &|p| {
        p.path.pop();
    });
    tamper("fee changed", "receipts root", &|p| {
        p.receipt.fee += 1;
    });
    tamper("forged receipts root", "checkpoint signatures", &|p| {
        p.receipt.fee += 1;
        p.path.clear();
        p.checkpoint.body.receipts_root = merkle::root(&[codec::encode(&p.receipt)]);
    });
    tamper("checkpoint height changed", "checkpoint signatures", &|p| {
        p.checkpoint.body.height += 1;
    });
    tamper(
        "sequencer signature of something else",
        "checkpoint signatures",
        &|p| {
            p.checkpoint.signature = admin_key().sign_hash(&Hash32([3; 32]));
        },
    );
    tamper(
        "re-signed by an untrusted key",
        "not a trusted MSB indexer",
        &|p| {
            p.checkpoint.body.sequencer = key(9).public();
            p.checkpoint.signature = key(9).sign_hash(&p.checkpoint.hash(&network));
        },
    );

    let mut solo = trusting_subnet(network, vec![admin.public()]);
    for (what, why, proof) in cases {
        let error = verify(&mut solo, &proof).expect_err(what);
        assert!(error.contains(why), "{what}: {error}");
        solo.assert_refused(tx_op(function, &args, proof), what);
    }
    assert_eq!(solo.json("txl"), serde_json::Value::Null, "nothing indexed");
    solo.apply(vec![tx_op(function, &args, bytes)]);
    assert_eq!(
        solo.json("txl"),
        json!(1),
        "the genuine proof still applies"
    );
}

#[test]
fn a_proof_needs_a_majority_of_the_trusted_indexers() {
    let subnet = subnet_id();
    let (function, args) = ("f", [1u8]);
    let (mut msb, receipts) = settled_among_others(dev_genesis(None), subnet, function, &args);
    let network = msb.network();
    let admin = msb.admin.public();
    let proof = SettlementProof::build(&mut msb.ledger, &receipts[1].tx_hash).expect("proof");
    let (x, y, z) = (key(7), key(8), key(9));
    let ack = |k: &Keypair| Ack::sign(k, &network, &proof.checkpoint);
    let with_acks = |acks: Vec<Ack>| SettlementProof {
        acks,
        ..proof.clone()
    };

    // Trusting three: the sequencer alone is 1 of 3.
    let mut solo = trusting_subnet(network, vec![admin, x.public(), y.public()]);
    let error = verify(&mut solo, &proof.encode()).expect_err("1 of 3");
    assert!(error.contains("signed by 1 of the 3"), "{error}");
    solo.assert_refused(tx_op(function, &args, proof.encode()), "1 of 3");
    // Acks that do not count: by an untrusted key, of another checkpoint, twice the same.
    let mut other = proof.checkpoint.clone();
    other.body.time += 1;
    let cases = [
        ("untrusted acker", vec![ack(&z)]),
        (
            "ack of another checkpoint",
            vec![Ack::sign(&x, &network, &other)],
        ),
        (
            "ack of another network",
            vec![Ack::sign(&x, &Hash32([1; 32]), &proof.checkpoint)],
        ),
    ];
    for (what, acks) in cases {
        let bytes = with_acks(acks).encode();
        let error = verify(&mut solo, &bytes).expect_err(what);
        assert!(
            error.contains("signed by 1 of the 3") || error.contains("checkpoint signatures"),
            "{what}: {error}"
        );
        solo.assert_refused(tx_op(function, &args, bytes), what);
    }
    // A forged ack spoils the proof.
    let mut forged = ack(&x);
    forged.signature = y.sign_hash(&Hash32([2; 32]));
    let error = verify(&mut solo, &with_acks(vec![forged]).encode()).expect_err("forged");
    assert!(error.contains("checkpoint signatures"), "{error}");
    // Trusting four, the same ack twice is one signer: 2 of 4.
    let mut four = trusting_subnet(network, vec![admin, x.public(), y.public(), z.public()]);
    let twice = with_acks(vec![ack(&x), ack(&x)]).encode();
    let error = verify(&mut four, &twice).expect_err("2 of 4");
    assert!(error.contains("signed by 2 of the 4"), "{error}");
    four.assert_refused(tx_op(function, &args, twice), "duplicate ack");
    // The sequencer must be trusted, whatever acks there are.
    let mut others = trusting_subnet(network, vec![x.public(), y.public()]);
    let acked = with_acks(vec![ack(&x), ack(&y)]).encode();
    let error = verify(&mut others, &acked).expect_err("untrusted sequencer");
    assert!(error.contains("sequencer is not a trusted"), "{error}");
    others.assert_refused(tx_op(function, &args, acked), "untrusted sequencer");

    // With x's ack: 2 of 3.
    let acked = with_acks(vec![ack(&x)]).encode();
    verify(&mut solo, &acked).expect("2 of 3");
    solo.apply(vec![tx_op(function, &args, acked)]);
    assert_eq!(solo.json("txl"), json!(1));
}

#[test]
fn a_three_indexer_msb_finalises_through_acks_and_its_proofs_verify() {
    let genesis = funded_genesis(10 * TNK, None);
    let network = genesis.id();
    let (admin, peer, b, c) = (admin_key(), peer_key(), key(102), key(103));
    let factory = genesis.clone();
    let mut sim: Sim<MsbMachine> = Sim::with_machines(
        network,
        vec![admin.clone(), b.clone(), c.clone()],
        Box::new(move |_| MsbMachine::new(factory.clone())),
        NetConfig::reliable(),
        11,
        LedgerLimits::default(),
    );
    let expires = 1_000;
    let mut nonce = 0;
    let mut next = move || {
        nonce += 1;
        nonce
    };
    let user = |requester: &Keypair, action: UserAction, nonce: u64| {
        user_op(&network, requester, &admin, action, nonce, expires)
    };
    let admin_op =
        |action: AdminAction, nonce: u64| admin_op_of(&network, &admin, action, nonce, expires);

    // b and c become validators, then indexers (one indexer change per checkpoint: a second
    // one in the same checkpoint is refused).
    for k in [&b, &c] {
        let mut setup = Vec::new();
        setup.push(admin_op(
            AdminAction::Whitelist {
                account: k.public(),
            },
            next(),
        ));
        let fund = UserAction::Transfer {
            to: k.public(),
            amount: TNK,
        };
        setup.push(user(&peer, fund, next()));
        setup.push(user(k, UserAction::JoinValidators, next()));
        setup.push(admin_op(
            AdminAction::AddIndexer { key: k.public() },
            next(),
        ));
        sim.append(0, setup);
        sim.await_consistency(20);
    }
    let indexers = vec![admin.public(), b.public(), c.public()];
    for i in 0..3 {
        let set = sim
            .ledger(i)
            .read(true, |s| trac_host::msb::indexer_set(s))
            .expect("read")
            .expect("indexers");
        assert_eq!(set, indexers, "node {i}");
    }

    // A settlement on the three-indexer MSB: final once a second indexer acked.
    let subnet = subnet_id();
    let deploy = UserAction::DeploySubnet {
        subnet,
        channel: "three".into(),
    };
    let tx_op_bytes = user(&peer, tx_action(&subnet, "f", &[1]), next());
    let tx = user_tx_hash(&network, &tx_op_bytes);
    sim.append(0, vec![user(&peer, deploy, next()), tx_op_bytes]);
    sim.await_consistency(20);
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
    let height = sim.status(0).final_height;
    let acks = sim.ledger(0).acks(height).expect("acks");
    assert!(!acks.is_empty());
    assert!(acks.iter().all(|a| a.body.indexer != admin.public()));
    let proof = SettlementProof::build(sim.ledger(0), &tx).expect("proof");
    assert!(!proof.acks.is_empty());
    let from_b = SettlementProof::build(sim.ledger(1), &tx).expect("proof at b");
    assert_eq!(from_b.checkpoint, proof.checkpoint);

    let mut solo = trusting_subnet(network, indexers.clone());
    verify(&mut solo, &proof.encode()).expect("the sequencer's node's proof");
    verify(&mut solo, &from_b.encode()).expect("an indexer's node's proof");
    let bare = SettlementProof {
        acks: Vec::new(),
        ..proof.clone()
    };
    let error = verify(&mut solo, &bare.encode()).expect_err("without acks");
    assert!(error.contains("signed by 1 of the 3"), "{error}");
    solo.assert_refused(tx_op("f", &[1], bare.encode()), "without acks");
    solo.apply(vec![tx_op("f", &[1], proof.encode())]);
    assert_eq!(solo.json("txl"), json!(1));
    assert_eq!(solo.json("txi/0")["tx"], json!(tx.to_hex()));

    // Cut off from the other indexers, the sequencer cannot make a checkpoint final.
    sim.partition(&[&[0], &[1, 2]]);
    let late_op = user(&peer, tx_action(&subnet, "f", &[2]), next());
    let late = user_tx_hash(&network, &late_op);
    sim.append(0, vec![late_op]);
    sim.tick();
    sim.deliver_until_quiet(10_000);
    let status = sim.status(0);
    assert_eq!(status.latest_height, status.final_height + 1, "{status:?}");
    assert!(matches!(
        SettlementProof::build(sim.ledger(0), &late),
        Err(ProofError::NotFinal(h)) if h == late
    ));
    sim.heal();
    sim.await_consistency(30);
    let proof = SettlementProof::build(sim.ledger(0), &late).expect("final after healing");
    verify(&mut solo, &proof.encode()).expect("verifies");
}

#[test]
fn subnets_follow_msb_indexer_changes_by_proof() {
    let mut msb = Msb::open(funded_genesis(10 * TNK, None));
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let (b, c, d) = (key(3), key(4), key(5));
    for k in [&b, &c, &d] {
        msb.make_validator(k);
    }
    msb.cosigners = vec![b.clone(), c.clone(), d.clone()];
    let change = |msb: &mut Msb, action: AdminAction| -> (u64, SettlementProof) {
        let op = msb.admin_op(action);
        let receipt = msb.accept(op, "admin op");
        let height = msb.ledger.status().final_height;
        let proof = SettlementProof::build(&mut msb.ledger, &receipt.tx_hash).expect("proof");
        (height, proof)
    };
    let (hb, add_b) = change(&mut msb, AdminAction::AddIndexer { key: b.public() });
    let (hc, add_c) = change(&mut msb, AdminAction::AddIndexer { key: c.public() });
    let (hd, add_d) = change(&mut msb, AdminAction::AddIndexer { key: d.public() });
    let (hr, remove_d) = change(&mut msb, AdminAction::RemoveIndexer { key: d.public() });
    assert!(hb < hc && hc < hd && hd < hr);
    assert_eq!(msb.indexers(), vec![admin.public(), b.public(), c.public()]);
    assert!(add_c.acks.iter().any(|a| a.body.indexer == b.public()));
    let (_, whitelist) = change(
        &mut msb,
        AdminAction::Whitelist {
            account: key(6).public(),
        },
    );
    let op = msb.transfer(&peer, &admin, &key(6).public(), 1);
    let receipt = msb.accept(op, "transfer");
    let transfer = SettlementProof::build(&mut msb.ledger, &receipt.tx_hash).expect("proof");

    let mut solo = trusting_subnet(msb.network(), vec![admin.public()]);
    let trusted = |solo: &mut Solo| {
        let trust = solo.json("sys/msb");
        (trust["indexers"].clone(), trust["changed_at"].clone())
    };
    let hex = |k: &Keypair| k.public().to_hex();

    solo.assert_accepted(indexer_change_op(add_b.encode()), "add b");
    assert_eq!(
        trusted(&mut solo),
        (json!([hex(&admin), hex(&b)]), json!(hb))
    );
    solo.assert_refused(indexer_change_op(add_b.encode()), "the same change again");
    // d's addition, acked by b: a majority of the admin and b.
    solo.assert_accepted(indexer_change_op(add_d.encode()), "add d");
    assert_eq!(
        trusted(&mut solo),
        (json!([hex(&admin), hex(&b), hex(&d)]), json!(hd))
    );
    // c's addition is older: its proof verifies, the change is refused.
    let verifier = ProofVerifier::new();
    let older = solo
        .ledger
        .read(true, |s| verifier.verify_indexer_change(s, &add_c.encode()))
        .expect("read")
        .expect("the proof itself verifies");
    assert_eq!(
        (older.key, older.added, older.height),
        (c.public(), true, hc)
    );
    solo.assert_refused(indexer_change_op(add_c.encode()), "an older change");
    // d's removal.
    solo.assert_accepted(indexer_change_op(remove_d.encode()), "remove d");
    assert_eq!(
        trusted(&mut solo),
        (json!([hex(&admin), hex(&b)]), json!(hr))
    );

    // Proofs of other ops change nothing; an indexer change settles no tx.
    solo.assert_refused(indexer_change_op(whitelist.encode()), "a whitelisting");
    solo.assert_refused(indexer_change_op(transfer.encode()), "a transfer");
    solo.assert_refused(indexer_change_op(b"junk".to_vec()), "junk");
    solo.assert_refused(tx_op("f", b"", add_b.encode()), "an indexer change as a tx");
}

// ---------------------------------------------------------------------------------------------
// 7. Proofs in batches
// ---------------------------------------------------------------------------------------------

#[test]
fn merkle_levels_give_the_paths_proof_gives_for_every_size() {
    let sizes = (0..=70).chain([127, 128, 129, 255, 256, 257]);
    for size in sizes {
        let receipts: Vec<Vec<u8>> = (0..size)
            .map(|i| format!("receipt {i}").into_bytes())
            .collect();
        let levels = merkle::levels(&receipts);
        let root = merkle::root(&receipts);
        assert_eq!(levels[0].len(), size, "leaves");
        let top = levels.last().expect("at least the leaves");
        if size == 0 {
            assert_eq!(levels, vec![Vec::<Hash32>::new()]);
        } else {
            assert_eq!(top, &vec![root], "size {size}: the root on top");
        }
        for (below, above) in levels.iter().zip(levels.iter().skip(1)) {
            assert_eq!(above.len(), below.len().div_ceil(2), "size {size}");
        }
        for (index, receipt) in receipts.iter().enumerate() {
            let path = merkle::path(&levels, index);
            assert_eq!(
                path,
                merkle::proof(&receipts, index),
                "size {size}, index {index}"
            );
            let path = path.expect("in range");
            assert!(
                merkle::verify(&root, receipt, &path),
                "size {size}, index {index}"
            );
        }
        assert_eq!(
            merkle::path(&levels, size),
            None,
            "size {size}: out of range"
        );
        assert_eq!(merkle::proof(&receipts, size), None);
    }
    assert_eq!(merkle::path(&[], 0), None, "no levels at all");
}

/// Whether two proof results are the same proof or the same error.
fn same_outcome(
    a: &Result<SettlementProof, ProofError>,
    b: &Result<SettlementProof, ProofError>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(ProofError::NotApplied(a)), Err(ProofError::NotApplied(b)))
        | (Err(ProofError::NotFinal(a)), Err(ProofError::NotFinal(b))) => a == b,
        _ => false,
    }
}

#[test]
fn proofs_built_in_a_batch_are_those_built_one_by_one() {
    let subnet = subnet_id();
    let mut msb = Msb::dev(None);
    let (admin, peer) = (msb.admin.clone(), msb.peer.clone());
    let b = key(4);
    msb.make_validator(&b);
    msb.deploy(&peer, &admin, subnet);
    let settle = |msb: &mut Msb, n: u8| msb.user(&peer, &admin, tx_action(&subnet, "f", &[n]));
    let network = msb.network();

    // One checkpoint of two entries of the admin's log and one of b's: eleven settlements, a
    // refused transfer, a duplicate (refused) of the first settlement.
    let first: Vec<Vec<u8>> = (0..6).map(|n| settle(&mut msb, n)).collect();
    let poor = msb.transfer(&key(2), &admin, &peer.public(), TNK);
    let mut second: Vec<Vec<u8>> = (6..10).map(|n| settle(&mut msb, n)).collect();
    second.push(poor.clone());
    second.push(first[0].clone());
    let by_b = vec![msb.user(&peer, &b, tx_action(&subnet, "f", &[10]))];
    msb.feed_as(&admin, first.clone());
    msb.feed_as(&admin, second.clone());
    msb.feed_as(&b, by_b.clone());
    let receipts = msb.checkpoint();
    assert_eq!(receipts.len(), 13);
    assert_eq!(
        receipts.iter().filter(|r| r.error.is_some()).count(),
        2,
        "the poor transfer and the duplicate"
    );
    // Another checkpoint of three, then one appended but not checkpointed.
    let later: Vec<Vec<u8>> = (11..14).map(|n| settle(&mut msb, n)).collect();
    msb.apply(later.clone());
    let pending = settle(&mut msb, 14);
    msb.feed_as(&admin, vec![pending.clone()]);

    let hash = |op: &Vec<u8>| user_tx_hash(&network, op);
    let mut wanted: Vec<Hash32> = first
        .iter()
        .chain(&second[..4])
        .chain(&by_b)
        .map(hash)
        .collect();
    wanted.extend(later.iter().map(hash));
    wanted.insert(3, hash(&pending));
    wanted.insert(5, Hash32([0x77; 32]));
    wanted.insert(7, hash(&poor));
    wanted.push(hash(&first[2]));
    wanted.push(hash(&later[0]));
    wanted.swap(1, 12);

    let batch = SettlementProof::build_many(&mut msb.ledger, &wanted);
    assert_eq!(batch.len(), wanted.len());
    for (tx_hash, built) in wanted.iter().zip(&batch) {
        let alone = SettlementProof::build(&mut msb.ledger, tx_hash);
        assert!(
            same_outcome(built, &alone),
            "{tx_hash}: {built:?} vs {alone:?}"
        );
        if let Ok(proof) = built {
            assert_eq!(proof.receipt.tx_hash, *tx_hash);
            assert_eq!(proof.receipt.error, None);
            assert!(merkle::verify(
                &proof.checkpoint.body.receipts_root,
                &codec::encode(&proof.receipt),
                &proof.path
            ));
        }
    }
    let outcome = |i: usize| match &batch[i] {
        Ok(_) => "proof",
        Err(ProofError::NotApplied(_)) => "not applied",
        Err(ProofError::NotFinal(_)) => "not final",
        Err(ProofError::Ledger(e)) => panic!("{e}"),
    };
    assert_eq!(outcome(3), "not final", "appended, not checkpointed");
    assert_eq!(outcome(5), "not applied", "unknown");
    assert_eq!(outcome(7), "not applied", "refused");
    let proofs = batch.iter().filter(|r| r.is_ok()).count();
    assert_eq!(proofs, wanted.len() - 3);
    // The proof of the duplicated settlement is the applied one's; asked twice, given twice.
    let first_proof = batch[0].as_ref().expect("proof");
    assert_eq!(
        Some(&first_proof.receipt),
        receipts.iter().find(|r| r.tx_hash == wanted[0]),
        "the applied receipt, not its refused duplicate"
    );
    assert_eq!(
        batch[wanted.len() - 1]
            .as_ref()
            .expect("proof")
            .checkpoint
            .body
            .height,
        msb.ledger.status().final_height
    );
    assert!(SettlementProof::build_many(&mut msb.ledger, &[]).is_empty());

    // Every proof verifies for a subnet trusting the MSB.
    let mut solo = trusting_subnet(network, vec![admin.public()]);
    for proof in batch.iter().flatten() {
        let settlement = verify(&mut solo, &proof.encode()).expect("verifies");
        assert_eq!(settlement.subnet, subnet);
    }
}
