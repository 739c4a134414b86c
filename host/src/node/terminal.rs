//! The interactive terminal of `trac run` wired to the node: [`NodeExecutor`] implements
//! [`Executor`] by sending each command to the pump as a [`NodeCommand::Run`] task, which
//! runs it with the node's ledgers and keys and returns its text.
//!
//! - `/stats`, `/get`, `/get_keys`, `/exit`; `/help` lists the active contract's commands;
//! - the subnet admin and chat commands: signed ops appended to this node's subnet log
//!   (expiring at the latest height + [`OP_EXPIRY`]) and broadcast, after a local check like
//!   the reference's ("Only the admin can …", "Peer is not writable.");
//! - `/tx` through [`crate::node::TxFlow`], `/deploy_subnet` and `/transfer` as user ops
//!   signed by the peer key and submitted to this node's own MSB validator when it is one,
//!   else to a peer's validator over the network (the terminal waits for its answer);
//!   `/balance`, `/msb`;
//! - `/add_admin` (the creator, while the subnet has no admin) and `/deploy_contract` (the
//!   admin: the component's deploy ops, in entries within the ledger's limits);
//! - the MSB administration: `/msb_add_whitelist`, `/msb_add_indexer`, `/msb_remove_indexer`,
//!   `/msb_remove_validator` as admin ops in this node's MSB log (its MSB key must be the MSB
//!   admin); `/msb_join_validators` and `/msb_leave_validators` as user ops of the MSB key,
//!   co-signed by another validator;
//! - any other command goes to the contract's run-command, read-only on the confirmed state.

use tokio::sync::{mpsc, oneshot};

use super::runner::{Command as NodeCommand, ForwardOutcome, Node, Submission};
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::ledger::Message;
use crate::msb::{
    Account, AdminAction, AdminOp, FEE, MsbOp, PartialOp, SubmitError, UserAction, UserBody,
};
use crate::node::TxFlowError;
use crate::node::now_ms;
use crate::subnet::ops::deploy_ops;
use crate::subnet::{Action, OpSigner, SubnetMachine, SubnetOp, encode_op, keys};
use crate::terminal::{Command, Executor};

/// How many checkpoints a terminal op stays valid for.
pub const OP_EXPIRY: u64 = 1_000;

/// Runs terminal commands on the node through its command channel (blocking: call it from a
/// thread outside the runtime, as the line editor does).
#[derive(Debug, Clone)]
pub struct NodeExecutor {
    commands: mpsc::Sender<NodeCommand>,
    sidechannel: Option<super::sidechannel::ScHandle>,
}

impl NodeExecutor {
    /// An executor sending to the pump listening on `commands`, and the `/sc_*` commands to
    /// the sidechannel service (`None`: "Sidechannel not initialized.").
    pub fn new(
        commands: mpsc::Sender<NodeCommand>,
        sidechannel: Option<super::sidechannel::ScHandle>,
    ) -> NodeExecutor {
        NodeExecutor {
            commands,
            sidechannel,
        }
    }
}

impl Executor for NodeExecutor {
    fn execute(&mut self, command: Command) -> Result<String, String> {
        if command == Command::Exit {
            return Ok(String::new());
        }
        if is_sidechannel(&command) {
            return match &self.sidechannel {
                Some(handle) => super::sidechannel::terminal(handle, command),
                None => Err("Sidechannel not initialized.".to_string()),
            };
        }
        let (tx, rx) = oneshot::channel();
        let task: Box<dyn FnOnce(&mut Node) + Send> = Box::new(move |node: &mut Node| {
            let _ = tx.send(start(node, command));
        });
        self.commands
            .blocking_send(NodeCommand::Run(task))
            .map_err(|_| "the node has stopped".to_string())?;
        match rx
            .blocking_recv()
            .map_err(|_| "the node has stopped".to_string())?
        {
            Answer::Now(result) => result,
            Answer::Later(wait) => wait(),
        }
    }

    fn app_commands(&self) -> Vec<(String, String, String)> {
        let (tx, rx) = oneshot::channel();
        let task: Box<dyn FnOnce(&mut Node) + Send> = Box::new(move |node: &mut Node| {
            let _ = tx.send(app_commands(node));
        });
        if self.commands.blocking_send(NodeCommand::Run(task)).is_err() {
            return Vec::new();
        }
        match rx.blocking_recv() {
            Ok(Ok(commands)) => commands,
            Ok(Err(e)) => {
                tracing::warn!("cannot list the app's commands: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// What a command gives: its result, or (for work a peer finishes) a wait for it, run on the
/// terminal's thread so that the node's pump never waits.
pub enum Answer {
    /// The result.
    Now(Result<String, String>),
    /// Blocks until the result comes.
    Later(Box<dyn FnOnce() -> Result<String, String> + Send>),
}

/// Runs one command on the node; commands whose answer comes from a peer return a wait.
pub fn start(node: &mut Node, command: Command) -> Answer {
    let me = node.peer_key().public();
    let msb_key = node.msb_key().clone();
    match command {
        Command::Tx { command, sim } => tx(node, &command, sim),
        Command::DeploySubnet => {
            let subnet = node.subnet_id();
            let channel = node.subnet_channel().to_string();
            let key = node.peer_key().clone();
            user_op(node, &key, UserAction::DeploySubnet { subnet, channel })
        }
        Command::Transfer { to, amount } => {
            let key = node.peer_key().clone();
            user_op(node, &key, UserAction::Transfer { to, amount })
        }
        // The MSB key joins or leaves: another validator co-signs.
        Command::MsbJoinValidators => forwarded_user_op(node, &msb_key, UserAction::JoinValidators),
        Command::MsbLeaveValidators => {
            forwarded_user_op(node, &msb_key, UserAction::LeaveValidators)
        }
        Command::MsbAddWhitelist { address } => {
            msb_admin_op(node, AdminAction::Whitelist { account: address })
        }
        Command::MsbAddIndexer { address } => {
            msb_admin_op(node, AdminAction::AddIndexer { key: address })
        }
        Command::MsbRemoveIndexer { address } => {
            msb_admin_op(node, AdminAction::RemoveIndexer { key: address })
        }
        Command::MsbRemoveValidator { address } => {
            msb_admin_op(node, AdminAction::RemoveValidator { key: address })
        }
        command => Answer::Now(run(node, me, command)),
    }
}

/// Whether `command` is one of the `/sc_*` commands (run by the sidechannel service).
fn is_sidechannel(command: &Command) -> bool {
    matches!(
        command,
        Command::ScJoin { .. }
            | Command::ScOpen { .. }
            | Command::ScSend { .. }
            | Command::ScInvite { .. }
            | Command::ScRevoke { .. }
            | Command::ScWelcome { .. }
            | Command::ScStats
            | Command::ScLeave { .. }
    )
}

/// Shows a state value: JSON when it is MessagePack, else hex.
fn show(bytes: &[u8]) -> String {
    crate::codec::json::msgpack_to_json(bytes).map_or_else(|| hex::encode(bytes), |j| j.to_string())
}

fn read(node: &mut Node, key: &[u8], confirmed: bool) -> Result<Option<Vec<u8>>, String> {
    match node.subnet_mut().read(confirmed, |s| s.get(key)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether this peer is the subnet admin (latest view).
pub fn is_admin(node: &mut Node) -> Result<bool, String> {
    let me = node.peer_key().public();
    let admin = match node.subnet_mut().read(false, |s| SubnetMachine::admin(s)) {
        Ok(Ok(admin)) => admin,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    Ok(admin == Some(me))
}

/// Whether this peer is a subnet indexer (latest view).
pub fn is_indexer(node: &mut Node) -> Result<bool, String> {
    let me = node.peer_key().public().to_hex();
    Ok(read(node, keys::INDEXERS.as_bytes(), false)?
        .is_some_and(|bytes| show(&bytes).contains(&me)))
}

/// The active contract's terminal commands as `(name, usage, help)` (none without a
/// contract), from the latest view (a new subnet's contract is listed before it is final).
pub fn app_commands(node: &mut Node) -> Result<Vec<(String, String, String)>, String> {
    let Some((contract, runtime)) = node.active_contract().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let outcome = runtime.commands(&contract).map_err(|e| e.to_string())?;
    let commands = outcome.result.map_err(|e| e.to_string())?;
    Ok(commands
        .into_iter()
        .map(|c| (c.name, c.usage, c.help))
        .collect())
}

/// Runs an app command (not a built-in) with the contract's run-command, read-only on the
/// confirmed state.
fn app_command(node: &mut Node, name: &str, args: &[String]) -> Result<String, String> {
    let outcome = node
        .subnet_mut()
        .read_with_machine(true, |state, machine| {
            let contract = machine
                .current_contract(state)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("unknown command {name}: no contract is active"))?;
            machine
                .runtime()
                .run_command(&contract, state, name, args)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())??;
    outcome.result.map_err(|e| e.to_string())
}

/// The text of a submission's outcome.
fn submitted(result: Result<Hash32, SubmitError>) -> Result<String, String> {
    result
        .map(|tx| format!("MSB TX broadcasted: {tx}"))
        .map_err(|e| e.to_string())
}

/// Waits on the terminal's thread for a validator reached over the network.
fn wait_for_validator(outcome: ForwardOutcome, tracked: bool) -> Answer {
    Answer::Later(Box::new(move || {
        match outcome.blocking_recv() {
        Ok(Ok(tx)) => Ok(format!("MSB TX broadcasted: {tx}")),
        Ok(Err(Some(rejection))) => Err(rejection.to_string()),
        Ok(Err(None)) if tracked => Err(
            "no connected peer is an MSB validator: the transaction stays pending and is submitted again"
                .to_string(),
        ),
        Ok(Err(None)) => Err("no connected peer is an MSB validator".to_string()),
        Err(_) => Err("the node has stopped".to_string()),
    }
    }))
}

/// A user op of `key` for `action`, valid for [`OP_EXPIRY`] MSB heights.
fn sign_user_op(node: &mut Node, key: &Keypair, action: UserAction) -> PartialOp {
    let network = node.msb_id();
    let body = UserBody {
        action,
        requester: key.public(),
        nonce: now_ms(),
        expires: node.msb_mut().status().latest_height + OP_EXPIRY,
    };
    PartialOp::sign(key, &network, body)
}

/// Signs a user op with `key` and submits it to this node's MSB validator, or forwards it
/// to a peer's.
fn user_op(node: &mut Node, key: &Keypair, action: UserAction) -> Answer {
    let partial = sign_user_op(node, key, action);
    match node.submit_user_op(partial) {
        Submission::Done(result) => Answer::Now(submitted(result)),
        Submission::Forwarded(outcome) => wait_for_validator(outcome, false),
    }
}

/// Signs a user op with `key` and forwards it to a peer's validator (for the ops a node's own
/// validator may not co-sign).
fn forwarded_user_op(node: &mut Node, key: &Keypair, action: UserAction) -> Answer {
    let partial = sign_user_op(node, key, action);
    wait_for_validator(node.forward(partial, false), false)
}

/// Appends an MSB admin op to this node's MSB log (its MSB key must be the MSB admin).
fn msb_admin_op(node: &mut Node, action: AdminAction) -> Answer {
    Answer::Now((|| {
        let key = node.msb_key().clone();
        if node.msb_admin() != key.public() {
            return Err(format!(
                "Only the MSB admin can {}: this node's MSB key is {}, the admin is {}.",
                action.name(),
                key.public(),
                node.msb_admin()
            ));
        }
        let network = node.msb_id();
        let expires = node.msb_mut().status().latest_height + OP_EXPIRY;
        let name = action.name();
        let op = AdminOp::sign(&key, &network, action, now_ms(), expires);
        let tx = AdminOp::signed_hash(&network, &op.action, op.nonce, op.expires);
        let entry = node
            .msb_mut()
            .append(vec![crate::msb::ops::encode_op(&MsbOp::Admin(op))])
            .map_err(|e| format!("cannot append the op: {e}"))?;
        node.broadcast(network, vec![Message::Entry(entry)]);
        Ok(format!("MSB {name} appended: {tx}"))
    })())
}

/// `/tx`: maps the command with the contract, then simulates or submits it (to this node's
/// validator, or forwarded to a peer's).
fn tx(node: &mut Node, command: &str, sim: bool) -> Answer {
    let me = node.peer_key().public();
    let (result, forwarded) = node.with_tx_parts(|subnet, access, flow| {
        flow.map(subnet, command).and_then(|call| {
            if sim {
                flow.simulate(subnet, access, &call.function, &call.args, &me)
                    .map(|s| match s.result {
                        Ok(bytes) => format!(
                            "Simulation succeeded (fuel {}, {} writes): {}",
                            s.fuel,
                            s.writes.len(),
                            show(&bytes)
                        ),
                        Err(failure) => format!("Simulation failed: {failure}"),
                    })
            } else {
                flow.submit(subnet, access, &call.function, &call.args)
                    .map(|tx| format!("MSB TX broadcasted: {tx}"))
            }
        })
    });
    match (result, forwarded) {
        (Ok(_), Some(outcome)) => wait_for_validator(outcome, true),
        (result, _) => Answer::Now(result.map_err(|e: TxFlowError| e.to_string())),
    }
}

fn msb_account(node: &mut Node, key: &PublicKey) -> Result<Account, String> {
    match node.msb_mut().read(false, |s| crate::msb::account(s, key)) {
        Ok(Ok(account)) => Ok(account),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Appends raw ops to this node's subnet log, in entries within the ledger's limits, and
/// broadcasts them; returns how many entries were appended.
fn append_ops(node: &mut Node, ops: Vec<Vec<u8>>) -> Result<usize, String> {
    let batches = super::runner::entries_of(ops, &crate::ledger::LedgerLimits::default());
    let network = node.subnet_id();
    let mut entries = Vec::new();
    for batch in batches {
        let entry = node
            .subnet_mut()
            .append(batch)
            .map_err(|e| format!("cannot append the ops: {e}"))?;
        entries.push(Message::Entry(entry));
    }
    let count = entries.len();
    node.broadcast(network, entries);
    Ok(count)
}

/// Deploys `component` on the subnet of `ledger` as its admin `key`: checks that `key` is
/// the admin (latest view) and that the component validates under the subnet's limits, then
/// appends its deploy ops (announcement and chunks, in entries within the ledger's limits).
/// Returns the text to show and the entries to broadcast.
pub fn deploy_contract(
    ledger: &mut crate::ledger::Ledger<SubnetMachine>,
    key: &Keypair,
    component: &[u8],
) -> Result<(String, Vec<Message>), String> {
    let (admin, params) = ledger
        .read(false, |s| -> Result<_, crate::ledger::LedgerError> {
            Ok((SubnetMachine::admin(s)?, SubnetMachine::params(s)?))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if admin != Some(key.public()) {
        return Err("Only the admin can deploy contracts.".to_string());
    }
    crate::runtime::validate_component(component, &params.limits)
        .map_err(|e| format!("the component is refused: {e}"))?;
    let expires = ledger.status().latest_height + OP_EXPIRY;
    let signer = OpSigner::new(key.clone(), ledger.network());
    let ops = deploy_ops(&signer, component, expires);
    let chunks = ops.len() - 1;
    let mut entries = Vec::new();
    for batch in super::runner::entries_of(ops, &crate::ledger::LedgerLimits::default()) {
        let entry = ledger
            .append(batch)
            .map_err(|e| format!("cannot append the ops: {e}"))?;
        entries.push(Message::Entry(entry));
    }
    let text = format!(
        "Contract {} deploying: {} bytes in {chunks} chunks, {} entries appended.",
        crate::crypto::hash(component),
        component.len(),
        entries.len()
    );
    Ok((text, entries))
}

/// Signs `action`, appends it to this node's subnet log and broadcasts the entry.
fn append(node: &mut Node, action: Action) -> Result<String, String> {
    let name = action.name();
    let expires = node.subnet_mut().status().latest_height + OP_EXPIRY;
    let signer = OpSigner::new(node.peer_key().clone(), node.subnet_id());
    let op = signer.sign(action, expires);
    let entry = node
        .subnet_mut()
        .append(vec![op])
        .map_err(|e| format!("cannot append the op: {e}"))?;
    let network = node.subnet_id();
    node.broadcast(network, vec![Message::Entry(entry)]);
    Ok(format!("{name} appended (expires at height {expires})."))
}

fn admin_op(node: &mut Node, what: &str, action: Action) -> Result<String, String> {
    if !is_admin(node)? {
        return Err(format!("Only the admin can {what}."));
    }
    writable_op(node, action)
}

fn writable_op(node: &mut Node, action: Action) -> Result<String, String> {
    if node.writable() != Some(true) {
        return Err("Peer is not writable.".to_string());
    }
    append(node, action)
}

/// Runs one command that needs no peer's answer ([`start`] takes the others).
fn run(node: &mut Node, me: PublicKey, command: Command) -> Result<String, String> {
    match command {
        Command::Stats => {
            let mut text = node.stats().render();
            let writer = node.writable() == Some(true);
            let indexer = is_indexer(node).unwrap_or(false);
            let admin = is_admin(node).unwrap_or(false);
            text.push_str(&format!(
                "Peer {me}: writer {}, indexer {}, admin {}",
                yes(writer),
                yes(indexer),
                yes(admin)
            ));
            Ok(text)
        }
        Command::Get { key, confirmed } => Ok(match read(node, key.as_bytes(), confirmed)? {
            Some(bytes) => format!("{key}: {}", show(&bytes)),
            None => format!("{key}: null"),
        }),
        Command::GetKeys => Ok(format!(
            "Peer key: {me}\nSubnet: {}\nMSB network: {}",
            node.subnet_id(),
            node.msb_id()
        )),
        Command::Exit => Ok(String::new()),
        Command::UpdateAdmin { address } => admin_op(
            node,
            "update the admin",
            Action::UpdateAdmin { admin: address },
        ),
        Command::AddWriter { key } => admin_op(node, "add writers", Action::AddWriter { key }),
        Command::AddIndexer { key } => admin_op(node, "add indexers", Action::AddIndexer { key }),
        Command::RemoveWriter { key } => {
            admin_op(node, "remove writers", Action::RemoveWriter { key })
        }
        Command::RemoveIndexer { key } => {
            admin_op(node, "remove indexers", Action::RemoveIndexer { key })
        }
        Command::SetAutoAddWriters { enabled } => admin_op(
            node,
            "set auto-add writers",
            Action::SetAutoAddWriters { enabled },
        ),
        Command::EnableTransactions { enabled } => admin_op(
            node,
            "enable transactions",
            Action::EnableTransactions { enabled },
        ),
        Command::SetChatStatus { enabled } => admin_op(
            node,
            "set the chat status",
            Action::SetChatStatus { enabled },
        ),
        Command::EnableWhitelist { enabled } => admin_op(
            node,
            "enable the whitelist",
            Action::EnableWhitelist { enabled },
        ),
        Command::SetWhitelistStatus { user, status } => admin_op(
            node,
            "set whitelist status",
            Action::SetWhitelistStatus { user, status },
        ),
        Command::SetMod { user, enabled } => {
            admin_op(node, "set moderators", Action::SetMod { user, enabled })
        }
        Command::MuteStatus { user, muted } => {
            writable_op(node, Action::MuteStatus { user, muted })
        }
        Command::SetNick { nick, user } => writable_op(
            node,
            Action::SetNick {
                user: user.unwrap_or(me),
                nick,
            },
        ),
        Command::Post { message, reply_to } => writable_op(
            node,
            Action::PostMessage {
                text: message,
                attachments: Vec::new(),
                reply_to,
            },
        ),
        Command::DeleteMessage { id } => writable_op(node, Action::DeleteMessage { id }),
        Command::PinMessage { id, pinned } => writable_op(node, Action::PinMessage { id, pinned }),
        Command::UnpinMessage { pin_id } => writable_op(node, Action::UnpinMessage { pin: pin_id }),
        Command::AddAdmin { address } => {
            let admin = match node.subnet_mut().read(false, |s| SubnetMachine::admin(s)) {
                Ok(Ok(admin)) => admin,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(e.to_string()),
            };
            if admin.is_some() {
                return Err("The subnet already has an admin (use /update_admin).".to_string());
            }
            if !node.created_subnet() {
                return Err("Only the subnet's creator can add the first admin.".to_string());
            }
            append_ops(node, vec![encode_op(&SubnetOp::AddAdmin { key: address })])?;
            Ok(format!("addAdmin appended ({address})."))
        }
        Command::DeployContract { file } => {
            let component =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let key = node.peer_key().clone();
            let network = node.subnet_id();
            let (text, entries) = deploy_contract(node.subnet_mut(), &key, &component)?;
            node.broadcast(network, entries);
            Ok(text)
        }
        Command::Balance { address } => {
            let key = address.unwrap_or(me);
            let account = msb_account(node, &key)?;
            Ok(format!(
                "Balance of {key}: {} (staked {})",
                account.balance, account.staked
            ))
        }
        Command::Msb => {
            let status = node.msb_mut().status();
            let account = msb_account(node, &me)?;
            let msb_key = node.msb_key().public();
            let validator = node.is_validator();
            Ok(format!(
                "MSB network: {}\nFinal height: {}, latest height: {}, entries: {}\nPeer address: {me}\nBalance: {}\nFee: {}\nMSB node key: {msb_key} (validator {})",
                node.msb_id(),
                status.final_height,
                status.latest_height,
                status.entries,
                account.balance,
                FEE,
                yes(validator)
            ))
        }
        Command::App { name, args } => app_command(node, &name, &args),
        Command::Help => {
            let app = app_commands(node)?;
            let app: Vec<(&str, &str, &str)> = app
                .iter()
                .map(|(n, u, h)| (n.as_str(), u.as_str(), h.as_str()))
                .collect();
            Ok(crate::terminal::help_text(&app))
        }
        other => Err(format!("{} is handled elsewhere", other.name())),
    }
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}
