//! The node: what drives the ledgers, the contract runtime and the settlement layer for one
//! peer. Each piece is synchronous and message-driven like the ledger engine (it takes the
//! ledgers it works on and returns the [`Message`](crate::ledger::Message)s to send), so the
//! networked node only routes messages and calls it on a timer.
//!
//! - [`txflow`]: the `/tx` lifecycle (command → call, simulation, settlement on MSB, the
//!   subnet `tx` op on every node), with pending transactions persisted in the subnet store;
//! - [`runner`]: the running node of `trac run` (ledgers, network pump, genesis transfer);
//! - [`terminal`](mod@terminal): the interactive terminal's commands, run on the pump;
//! - [`inbox`]: the peer store's lock and the inbox through which tools hand ops to a running
//!   node;
//! - [`sidechannel`](mod@sidechannel): the sidechannel engine on its own task;
//! - [`service`]: calls between nodes (submissions to MSB validators, writer requests);
//! - [`MsbAccess`]: what that lifecycle needs from MSB; [`LocalMsb`] serves it in process.

pub mod config;
pub mod inbox;
mod msb_access;
pub mod runner;
pub mod service;
pub mod sidechannel;
pub mod terminal;
pub mod txflow;

pub use msb_access::{LocalMsb, MsbAccess, MsbHeights};

/// The wall clock in milliseconds since the Unix epoch (0 before it): timestamps of frames,
/// ops and replies, never consensus state.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The async runtime a node runs on (`trac run` and the benchmarks that stand for it).
///
/// Its workers carry the node's I/O tasks (network, sidechannel service, RPC, SC-Bridge); the
/// heavy work has threads of its own (the pump on the thread that blocks on the node, the
/// ledger's applier, contract compilation, batch verification). So the workers are half the
/// cores, at least one: with fewer idle workers to wake, a task woken by another (a frame
/// handed from the swarm to the sidechannel service, say) runs on the waker's core rather
/// than being stolen by a worker woken on another one (on two cores this takes about 0.05 ms
/// off a sidechannel message's one-way latency, and raises its sustained rate).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cores / 2).max(1))
        .enable_all()
        .build()
}
pub use txflow::{
    DEFAULT_EXPIRY_WINDOW, DropReason, Imported, PROOF_ALLOWANCE, PendingStage, PendingTx,
    PollReport, Simulation, TxFlow, TxFlowError, TxOutcome, TxReport, WaitReason,
};
