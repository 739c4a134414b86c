//! The applier: a thread that applies the entries of the checkpoint a ledger is verifying,
//! so that the ledger's owner (a node's pump) goes on receiving, verifying and storing what
//! peers send meanwhile (see [`super::Ledger::apply_in_background`]).
//!
//! It is handed one [`Job`] at a time: the ordered entries of the checkpoint, the writes of
//! the pending checkpoints it builds on (shared, not copied) with the lattice after them, and
//! its place in the order. It reads a committed snapshot of the store (an LMDB read
//! transaction) and writes nothing: the ledger concludes the verification and stays the
//! store's only writer. A pending checkpoint that becomes final meanwhile changes nothing the
//! job computes: its writes are in the job's layers as well as in the final state the
//! snapshot may already show.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use super::engine::{Applied, PendingState, Place, apply_on};
use super::{LedgerError, LogEntry, StateMachine};
use crate::crypto::Hash32;
use crate::store::Store;

/// One checkpoint's entries to apply.
pub(super) struct Job {
    /// The state of the pending checkpoints it builds on, if any.
    pub(super) base: Option<PendingState>,
    /// Its entries, in order.
    pub(super) entries: Vec<LogEntry>,
    /// Its height and time, and the position of its first op.
    pub(super) place: Place,
}

type Outcome = Result<Applied, LedgerError>;

/// The applier thread of one ledger. Dropping it waits for the job at hand, if any.
pub(super) struct Applier {
    jobs: Option<Sender<Job>>,
    results: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
}

impl Applier {
    /// Starts the thread; `notify` is called there after each job.
    pub(super) fn start<M: StateMachine + Send + Sync + 'static>(
        machine: Arc<M>,
        store: Arc<Store>,
        network: Hash32,
        notify: Box<dyn Fn() + Send>,
    ) -> Result<Applier, LedgerError> {
        let (jobs, inbox) = channel::<Job>();
        let (outbox, results) = channel::<Outcome>();
        let thread = std::thread::Builder::new()
            .name("ledger-apply".into())
            .stack_size(crate::runtime::CALL_THREAD_STACK)
            .spawn(move || {
                while let Ok(job) = inbox.recv() {
                    let height = job.place.height;
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(&*machine, &network, &store, job)
                    }))
                    .unwrap_or_else(|_| {
                        Err(LedgerError::Node(format!(
                            "applying checkpoint {height} panicked"
                        )))
                    });
                    if outbox.send(outcome).is_err() {
                        return;
                    }
                    notify();
                }
            })
            .map_err(|e| LedgerError::Node(format!("cannot start the applier thread: {e}")))?;
        Ok(Applier {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
        })
    }

    /// Hands a job over.
    pub(super) fn submit(&self, job: Job) -> Result<(), LedgerError> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| LedgerError::Node("the applier thread stopped".into()))
    }

    /// The outcome of a finished job, if there is one.
    pub(super) fn try_result(&self) -> Option<Outcome> {
        match self.results.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                Some(Err(LedgerError::Node("the applier thread stopped".into())))
            }
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        // Closing the job channel ends the thread once the job at hand is done.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Applies one job on a fresh snapshot of the store.
fn run<M: StateMachine>(machine: &M, network: &Hash32, store: &Store, job: Job) -> Outcome {
    let read = store.read()?;
    let entries: Vec<&LogEntry> = job.entries.iter().collect();
    apply_on(machine, network, &read, job.base, &entries, job.place)
}
