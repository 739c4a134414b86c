//! The ledger engine: stores logs, proposes and verifies checkpoints, counts acks, finalises.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::applier::{Applier, Job};
use super::checkpoint::{Ack, Checkpoint, CheckpointBody, LogFrontier};
use super::entry::{EntryRef, LogEntry};
use super::{
    AppliedOp, FORMAT_VERSION, LedgerError, LedgerLimits, StateMachine, merkle, order, quorum,
};
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::store::{Diff, Lattice, Overlay, StateAccess, Store, StoreError, StoreRead, Table};

/// Most entries one answer to a `WantEntries` carries (the network layer also cuts an answer
/// to its frame limit); large answers keep a catching-up node's round trips few.
pub const MAX_ENTRIES_PER_ANSWER: u64 = 4_096;

/// What nodes exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A writer-log entry.
    Entry(LogEntry),
    /// A checkpoint.
    Checkpoint(Checkpoint),
    /// An ack.
    Ack(Ack),
    /// Asks for the entries of `writer` from `from` on.
    WantEntries {
        /// The writer.
        writer: PublicKey,
        /// First sequence number wanted.
        from: u64,
    },
    /// Asks for checkpoints (and their acks) from height `from` on.
    WantCheckpoints {
        /// First height wanted.
        from: u64,
    },
}

/// A checkpoint whose recomputed root differs from the one it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// Its height.
    pub height: u64,
    /// The root it carries.
    pub expected: Hash32,
    /// The root this node computed.
    pub computed: Hash32,
}

/// What the ledger reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerStatus {
    /// Height of the last final checkpoint.
    pub final_height: u64,
    /// Its state root.
    pub final_root: Hash32,
    /// Height of the last verified checkpoint (final or not).
    pub latest_height: u64,
    /// Ops applied in the confirmed order so far.
    pub position: u64,
    /// Entries stored across all logs.
    pub entries: u64,
    /// Entries skipped because their writer was not a member at their position.
    pub skipped: u64,
    /// Set when a checkpoint's root differed from this node's computation.
    pub divergence: Option<Divergence>,
}

/// The last final checkpoint, persisted with the state it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FinalInfo {
    pub(super) height: u64,
    pub(super) hash: Hash32,
    pub(super) time: u64,
    pub(super) frontier: Vec<LogFrontier>,
    pub(super) position: u64,
    pub(super) root: Hash32,
    pub(super) skipped: u64,
}

/// The head of one stored log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct LogHead {
    next: u64,
    last: Hash32,
}

/// A verified checkpoint that is not final yet.
struct Pending {
    checkpoint: Checkpoint,
    hash: Hash32,
    /// The lattice of the state after it (finalising writes it as it is).
    lattice: Lattice,
    /// The keys whose value this checkpoint's ops changed, with their values after it: the
    /// state after it is these writes over those of the pending checkpoints before it, over
    /// the final state. Shared with the overlays that build on it.
    writes: Arc<Diff>,
    receipts: Vec<Vec<u8>>,
    position: u64,
    skipped: u64,
    /// The indexer set in force before this checkpoint: who must ack.
    indexers: Vec<PublicKey>,
    /// Who has acked (the sequencer included).
    acks: BTreeSet<PublicKey>,
    /// The indexer set in force after this checkpoint (who must sign the next one).
    indexers_after: Vec<PublicKey>,
}

/// The result of applying a batch of entries on top of some state.
pub(super) struct Applied {
    writes: Arc<Diff>,
    lattice: Lattice,
    root: Hash32,
    receipts: Vec<Vec<u8>>,
    position: u64,
    skipped: u64,
    indexers_after: Vec<PublicKey>,
}

/// A checkpoint whose entries the applier thread is applying.
struct InFlight {
    checkpoint: Checkpoint,
    /// The indexer set in force before it.
    indexers: Vec<PublicKey>,
}

/// Where a checkpoint's entries are applied: its height and time, and the position of its
/// first op.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place {
    pub(super) height: u64,
    pub(super) time: u64,
    pub(super) position: u64,
}

/// The state a checkpoint builds on when pending ones are below it: their writes (oldest
/// first) over the final state, and the lattice after the last.
pub(super) struct PendingState {
    pub(super) layers: Vec<Arc<Diff>>,
    pub(super) lattice: Lattice,
}

/// The tables of a ledger in its store.
pub(super) struct Tables {
    pub(super) entries: Table<Vec<u8>, LogEntry>,
    logs: Table<Vec<u8>, LogHead>,
    pub(super) checkpoints: Table<u64, Checkpoint>,
    pub(super) acks: Table<Vec<u8>, Ack>,
    receipts: Table<Vec<u8>, serde_bytes::ByteBuf>,
    pub(super) meta: Table<String, FinalInfo>,
    alarm: Table<String, Divergence>,
}

impl Tables {
    /// Opens (or creates) the ledger tables of `store`.
    pub(super) fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Tables {
            entries: store.table("ledger.entries")?,
            logs: store.table("ledger.logs")?,
            checkpoints: store.table("ledger.checkpoints")?,
            acks: store.table("ledger.acks")?,
            receipts: store.table("ledger.receipts")?,
            meta: store.table("ledger.meta")?,
            alarm: store.table("ledger.alarm")?,
        })
    }
}

/// Key of the final record in the meta table.
pub(super) const FINAL_KEY: &str = "final";
const ALARM_KEY: &str = "divergence";

/// Most conflicting entries kept for possible adoption.
const MAX_FORK_ENTRIES: usize = 1_000;

/// How far above the latest verified checkpoint acks are kept (the pipeline's depth).
const MAX_ACKS_AHEAD: u64 = 64;

pub(super) fn entry_key(writer: &PublicKey, seq: u64) -> Vec<u8> {
    let mut key = writer.0.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn height_key(height: u64, suffix: &[u8]) -> Vec<u8> {
    let mut key = height.to_be_bytes().to_vec();
    key.extend_from_slice(suffix);
    key
}

/// A ledger over one store, for one network (MSB network id or subnet id).
pub struct Ledger<M: StateMachine> {
    store: Arc<Store>,
    machine: Arc<M>,
    network: Hash32,
    keypair: Option<Keypair>,
    limits: LedgerLimits,
    tables: Tables,
    final_info: FinalInfo,
    final_indexers: Vec<PublicKey>,
    heads: BTreeMap<PublicKey, LogHead>,
    orphans: HashMap<(PublicKey, u64), LogEntry>,
    /// Validly signed entries that conflict with a stored, not yet checkpointed entry at the
    /// same place: kept in case a checkpoint includes that branch of the writer's log.
    forks: HashMap<(PublicKey, u64), LogEntry>,
    pending: Vec<Pending>,
    unverified: BTreeMap<u64, Checkpoint>,
    early_acks: BTreeMap<u64, Vec<Ack>>,
    divergence: Option<Divergence>,
    /// The unconfirmed view (every known entry applied): its writes over those of the
    /// pending checkpoints, and its lattice.
    unconfirmed: Option<(Arc<Diff>, Lattice)>,
    entry_count: u64,
    /// The thread that applies verified checkpoints' entries, when the owner asked for one
    /// ([`Ledger::apply_in_background`]); otherwise they are applied on the caller's thread.
    applier: Option<Applier>,
    /// The checkpoint being applied there (at most one: each builds on the one before).
    in_flight: Option<InFlight>,
}

impl<M: StateMachine> Ledger<M> {
    /// Opens the ledger of `network` in `store`, writing the genesis state on first use, and
    /// re-verifies the checkpoints that were pending when it was last closed.
    pub fn open(
        store: Arc<Store>,
        machine: M,
        network: Hash32,
        keypair: Option<Keypair>,
        limits: LedgerLimits,
    ) -> Result<Self, LedgerError> {
        let tables = Tables::open(&store)?;
        let existing = store.read()?.get(&tables.meta, &FINAL_KEY.to_string())?;
        // A divergence stays raised across restarts until an operator deals with it.
        let divergence = store.read()?.get(&tables.alarm, &ALARM_KEY.to_string())?;
        let final_info = match existing {
            Some(info) => info,
            None => {
                let mut batch = store.write()?;
                machine.genesis(&mut batch)?;
                let info = FinalInfo {
                    height: 0,
                    hash: Hash32::ZERO,
                    time: 0,
                    frontier: Vec::new(),
                    position: 0,
                    root: batch.state_root()?,
                    skipped: 0,
                };
                batch.put(&tables.meta, &FINAL_KEY.to_string(), &info)?;
                batch.commit()?;
                info
            }
        };
        let (heads, entry_count) = {
            let read = store.read()?;
            let mut heads = BTreeMap::new();
            let mut count = 0;
            for (key, head) in read.scan_prefix(&tables.logs, &[], usize::MAX)? {
                let writer: [u8; 32] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::Invalid("corrupt log head key".into()))?;
                count += head.next;
                heads.insert(PublicKey(writer), head);
            }
            (heads, count)
        };
        let final_indexers = {
            let read = store.read()?;
            let overlay = Overlay::new(&read)?;
            machine.indexers(&overlay)?
        };
        let mut ledger = Ledger {
            store,
            machine: Arc::new(machine),
            network,
            keypair,
            limits,
            tables,
            final_info,
            final_indexers,
            heads,
            orphans: HashMap::new(),
            forks: HashMap::new(),
            pending: Vec::new(),
            unverified: BTreeMap::new(),
            early_acks: BTreeMap::new(),
            divergence,
            unconfirmed: None,
            entry_count,
            applier: None,
            in_flight: None,
        };
        // Checkpoints and acks stored while not final are verified again.
        let read = ledger.store.read()?;
        let stored: Vec<(Vec<u8>, Checkpoint)> =
            read.scan_prefix(&ledger.tables.checkpoints, &[], usize::MAX)?;
        let acks: Vec<(Vec<u8>, Ack)> = read.scan_prefix(&ledger.tables.acks, &[], usize::MAX)?;
        drop(read);
        for (_, checkpoint) in stored {
            if checkpoint.body.height > ledger.final_info.height {
                ledger.unverified.insert(checkpoint.body.height, checkpoint);
            }
        }
        for (_, ack) in acks {
            if ack.body.height > ledger.final_info.height {
                ledger
                    .early_acks
                    .entry(ack.body.height)
                    .or_default()
                    .push(ack);
            }
        }
        let _ = ledger.advance()?;
        Ok(ledger)
    }

    /// The network this ledger belongs to.
    pub fn network(&self) -> Hash32 {
        self.network
    }

    /// The state machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The status.
    pub fn status(&self) -> LedgerStatus {
        LedgerStatus {
            final_height: self.final_info.height,
            final_root: self.final_info.root,
            latest_height: self.latest_height(),
            position: self.final_info.position,
            entries: self.entry_count,
            skipped: self.final_info.skipped,
            divergence: self.divergence.clone(),
        }
    }

    /// Whether the next checkpoint is known but not verified yet (its entries are still
    /// arriving, or they are being applied): the ledger is catching up, its views are behind.
    pub fn catching_up(&self) -> bool {
        self.in_flight.is_some() || self.unverified.contains_key(&(self.latest_height() + 1))
    }

    /// Concludes the verification of the checkpoint the applier thread has applied, if it
    /// is done (see [`Ledger::apply_in_background`]), and advances: the next checkpoint goes
    /// to the applier, earlier ones become final. Returns the messages to send, as
    /// [`Ledger::handle`] does. Nothing happens while the applier is still at work.
    pub fn take_applied(&mut self) -> Result<Vec<Message>, LedgerError> {
        let mut out = Vec::new();
        while self.in_flight.is_some() {
            let Some(result) = self.applier.as_ref().and_then(Applier::try_result) else {
                break;
            };
            let Some(flight) = self.in_flight.take() else {
                break;
            };
            // A failure leaves the checkpoint unverified: the next advance hands it over again.
            // Pending checkpoints below it that became final meanwhile change nothing: its
            // writes and lattice do not depend on which of them are final.
            let applied = result?;
            let height = flight.checkpoint.body.height;
            match self.conclude(&flight.checkpoint, applied, flight.indexers)? {
                Verification::Accepted(messages) => {
                    self.unverified.remove(&height);
                    out.extend(messages);
                }
                Verification::Refused => {
                    self.unverified.remove(&height);
                }
                Verification::Missing(messages) => out.extend(messages),
                Verification::Applying => {}
            }
        }
        // The next checkpoint goes to the applier (on this one's state) before this one is
        // finalised, so that the applier does not wait for the writes.
        out.extend(self.advance()?);
        Ok(out)
    }

    /// The latest verified checkpoint (pending or final).
    fn tip(&self) -> Tip {
        match self.pending.last() {
            Some(p) => Tip {
                height: p.checkpoint.body.height,
                hash: p.hash,
                time: p.checkpoint.body.time,
                position: p.position,
            },
            None => Tip {
                height: self.final_info.height,
                hash: self.final_info.hash,
                time: self.final_info.time,
                position: self.final_info.position,
            },
        }
    }

    fn latest_height(&self) -> u64 {
        self.pending
            .last()
            .map_or(self.final_info.height, |p| p.checkpoint.body.height)
    }

    fn latest_frontier(&self) -> &[LogFrontier] {
        self.pending
            .last()
            .map_or(&self.final_info.frontier, |p| &p.checkpoint.body.frontier)
    }

    fn included_next(&self, writer: &PublicKey) -> u64 {
        let frontier = self.latest_frontier();
        frontier
            .binary_search_by(|f| f.writer.cmp(writer))
            .map(|i| frontier[i].next)
            .unwrap_or(0)
    }

    /// The next sequence number and previous hash of `writer`'s log.
    pub fn log_head(&self, writer: &PublicKey) -> (u64, Hash32) {
        self.heads
            .get(writer)
            .map_or((0, Hash32::ZERO), |h| (h.next, h.last))
    }

    /// A stored entry.
    pub fn entry(&self, writer: &PublicKey, seq: u64) -> Result<Option<LogEntry>, LedgerError> {
        Ok(self
            .store
            .read()?
            .get(&self.tables.entries, &entry_key(writer, seq))?)
    }

    /// Reads the state: `confirmed` = after the last final checkpoint; otherwise the
    /// unconfirmed view (every known entry applied).
    pub fn read<T>(
        &mut self,
        confirmed: bool,
        f: impl FnOnce(&dyn StateAccess) -> T,
    ) -> Result<T, LedgerError> {
        self.read_with_machine(confirmed, |state, _| f(state))
    }

    /// Like [`Ledger::read`], with the state machine at hand (to dry-run ops on the view).
    pub fn read_with_machine<T>(
        &mut self,
        confirmed: bool,
        f: impl FnOnce(&dyn StateAccess, &M) -> T,
    ) -> Result<T, LedgerError> {
        let store = self.store.clone();
        let read = store.read()?;
        if confirmed {
            let overlay = Overlay::new(&read)?;
            return Ok(f(&overlay, &self.machine));
        }
        if self.unconfirmed.is_none() {
            self.unconfirmed = Some(self.compute_unconfirmed(&read)?);
        }
        let (writes, lattice) = self.unconfirmed.as_ref().expect("set above");
        let mut layers: Vec<Arc<Diff>> = self.pending.iter().map(|p| p.writes.clone()).collect();
        layers.push(writes.clone());
        let overlay = Overlay::with_layers(&read, layers, lattice.clone());
        Ok(f(&overlay, &self.machine))
    }

    /// Appends ops to this node's own log (local-first: works offline). Returns the entry to
    /// broadcast.
    pub fn append(&mut self, ops: Vec<Vec<u8>>) -> Result<LogEntry, LedgerError> {
        let keypair = self
            .keypair
            .clone()
            .ok_or_else(|| LedgerError::Invalid("this node has no key to write with".into()))?;
        let me = keypair.public();
        let (seq, prev) = self.log_head(&me);
        // Causal heads: the tips of the other logs that no checkpoint includes yet, so the
        // entry is ordered after everything this node has seen.
        let heads: Vec<EntryRef> = self
            .heads
            .iter()
            .filter(|(writer, head)| **writer != me && head.next > self.included_next(writer))
            .take(self.limits.max_heads)
            .map(|(writer, head)| EntryRef {
                writer: *writer,
                seq: head.next - 1,
                hash: head.last,
            })
            .collect();
        let entry = LogEntry::sign(&keypair, &self.network, seq, prev, heads, ops);
        entry.verify(&self.network, &self.limits)?;
        self.store_entry(&entry)?;
        Ok(entry)
    }

    fn store_entry(&mut self, entry: &LogEntry) -> Result<Hash32, LedgerError> {
        let hash = entry.hash(&self.network);
        let writer = entry.body.writer;
        let head = LogHead {
            next: entry.body.seq + 1,
            last: hash,
        };
        let mut batch = self.store.write()?;
        batch.put(
            &self.tables.entries,
            &entry_key(&writer, entry.body.seq),
            entry,
        )?;
        batch.put(&self.tables.logs, &writer.0.to_vec(), &head)?;
        batch.commit()?;
        self.heads.insert(writer, head);
        self.entry_count += 1;
        self.unconfirmed = None;
        Ok(hash)
    }

    /// Handles a message from the network; returns the messages to send in reply.
    pub fn handle(&mut self, message: Message) -> Result<Vec<Message>, LedgerError> {
        match message {
            Message::Entry(entry) => self.receive_entry(entry),
            Message::Checkpoint(checkpoint) => self.receive_checkpoint(checkpoint),
            Message::Ack(ack) => self.receive_ack(ack),
            Message::WantEntries { writer, from } => {
                let read = self.store.read()?;
                let (next, _) = self.log_head(&writer);
                let mut out = Vec::new();
                for seq in from..next.min(from.saturating_add(MAX_ENTRIES_PER_ANSWER)) {
                    if let Some(entry) = read.get(&self.tables.entries, &entry_key(&writer, seq))? {
                        out.push(Message::Entry(entry));
                    }
                }
                Ok(out)
            }
            Message::WantCheckpoints { from } => {
                let read = self.store.read()?;
                let mut out = Vec::new();
                let to = self.latest_height().min(from.saturating_add(100));
                for height in from.max(1)..=to {
                    if let Some(c) = read.get(&self.tables.checkpoints, &height)? {
                        out.push(Message::Checkpoint(c));
                    }
                    for (_, ack) in
                        read.scan_prefix(&self.tables.acks, &height.to_be_bytes(), 64)?
                    {
                        out.push(Message::Ack(ack));
                    }
                }
                Ok(out)
            }
        }
    }

    /// What a node sends periodically (and after reconnecting) so that lost messages are
    /// recovered: a request for the checkpoints (and acks) above the last final one, requests
    /// for the entries it knows it lacks (gaps before stored out-of-order entries, entries the
    /// next checkpoint includes), and the tip of every log no checkpoint fully includes yet
    /// (a peer missing entries of that log stores it or asks for the gap).
    pub fn sync_requests(&self) -> Result<Vec<Message>, LedgerError> {
        let mut out = vec![Message::WantCheckpoints {
            from: self.final_info.height + 1,
        }];
        let mut wanted: BTreeSet<PublicKey> = self.orphans.keys().map(|(w, _)| *w).collect();
        // The entries the next checkpoint includes; while that one is being applied, those of
        // the checkpoint after it (so that they arrive meanwhile).
        let next = self.latest_height() + 1 + u64::from(self.in_flight.is_some());
        if let Some(next) = self.unverified.get(&next) {
            for f in &next.body.frontier {
                if self.log_head(&f.writer).0 < f.next {
                    wanted.insert(f.writer);
                }
            }
        }
        for writer in wanted {
            out.push(Message::WantEntries {
                writer,
                from: self.log_head(&writer).0,
            });
        }
        let read = self.store.read()?;
        for (writer, head) in &self.heads {
            if head.next > self.included_next(writer)
                && let Some(tip) =
                    read.get(&self.tables.entries, &entry_key(writer, head.next - 1))?
            {
                out.push(Message::Entry(tip));
            }
        }
        Ok(out)
    }

    /// Stores a valid entry (and any orphans it unblocks). Entries of any key are stored:
    /// membership is decided at the entry's position in the order.
    fn receive_entry(&mut self, entry: LogEntry) -> Result<Vec<Message>, LedgerError> {
        let writer = entry.body.writer;
        let (next, last) = self.log_head(&writer);
        let seq = entry.body.seq;
        if seq < next {
            // Known already (a duplicate, checked without any signature work) — or a fork of
            // a signed log, which is refused.
            let stored = self.entry(&writer, seq)?;
            if stored.as_ref() == Some(&entry) {
                return Ok(Vec::new());
            }
            entry.verify(&self.network, &self.limits)?;
            if stored.is_some_and(|s| s != entry) {
                if seq >= self.included_next(&writer) && self.forks.len() < MAX_FORK_ENTRIES {
                    self.forks.insert((writer, seq), entry);
                }
                return Err(LedgerError::Invalid(format!(
                    "writer {writer} signed two different entries at {seq}"
                )));
            }
            return Ok(Vec::new());
        }
        entry.verify(&self.network, &self.limits)?;
        if seq > next {
            if self.orphans.len() < self.limits.max_orphans {
                self.orphans.insert((writer, seq), entry);
            }
            return Ok(vec![Message::WantEntries { writer, from: next }]);
        }
        if entry.body.prev != last {
            return Err(LedgerError::Invalid(format!(
                "entry {writer}/{seq} does not chain to the stored log"
            )));
        }
        let mut out = vec![Message::Entry(entry.clone())];
        self.store_entry(&entry)?;
        // Entries that were waiting for this one.
        let mut seq = seq + 1;
        while let Some(orphan) = self.orphans.remove(&(writer, seq)) {
            let (_, last) = self.log_head(&writer);
            if orphan.body.prev != last {
                break;
            }
            self.store_entry(&orphan)?;
            out.push(Message::Entry(orphan));
            seq += 1;
        }
        out.extend(self.advance()?);
        Ok(out)
    }

    /// Handles many entries at once (what a peer answered to this node's requests): known
    /// entries are skipped before any signature work, the signatures of the new ones are
    /// verified in one batch, the entries that extend their logs (and the orphans they unblock)
    /// are stored in one transaction, and the ledger advances once. Entries that fail their
    /// checks are dropped (logged); a batch with a bad signature is checked entry by entry.
    /// Returns the messages to send: requests for gaps and what advancing produced (the
    /// entries themselves are not re-announced: they came from a peer that has them).
    pub fn receive_entries(&mut self, entries: Vec<LogEntry>) -> Result<Vec<Message>, LedgerError> {
        let mut out = Vec::new();
        let mut fresh: Vec<(LogEntry, Hash32)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let (next, _) = self.log_head(&entry.body.writer);
            if entry.body.seq < next {
                // A duplicate is dropped cheaply; anything else goes the careful way.
                if self.entry(&entry.body.writer, entry.body.seq)?.as_ref() != Some(&entry) {
                    self.receive_one(entry, &mut out);
                }
                continue;
            }
            match entry.check_shape(&self.network, &self.limits) {
                Ok(hash) => fresh.push((entry, hash)),
                Err(e) => tracing::debug!(network = %self.network, "entry refused: {e}"),
            }
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let triples: Vec<crate::crypto::SignedHash> = fresh
            .iter()
            .map(|(e, h)| (e.body.writer, *h, e.signature))
            .collect();
        if crate::crypto::verify_batch(&crate::crypto::BatchItem::from_triples(&triples)).is_err() {
            // Somebody sent a bad signature: keep only the entries that verify on their own.
            fresh.retain(|(e, h)| {
                crate::crypto::verify_hash(&e.body.writer, h, &e.signature).is_ok()
            });
        }
        fresh.sort_by(|(a, _), (b, _)| {
            (a.body.writer, a.body.seq).cmp(&(b.body.writer, b.body.seq))
        });
        let mut heads: HashMap<PublicKey, LogHead> = HashMap::new();
        let mut stored = 0u64;
        let mut batch = self.store.write()?;
        let mut pending: std::collections::VecDeque<(LogEntry, Hash32)> = fresh.into();
        while let Some((entry, hash)) = pending.pop_front() {
            let writer = entry.body.writer;
            let head = heads.get(&writer).copied().unwrap_or_else(|| {
                let (next, last) = self.log_head(&writer);
                LogHead { next, last }
            });
            let seq = entry.body.seq;
            if seq < head.next {
                continue;
            }
            if seq > head.next {
                if self.orphans.len() < self.limits.max_orphans {
                    self.orphans.insert((writer, seq), entry);
                }
                out.push(Message::WantEntries {
                    writer,
                    from: head.next,
                });
                continue;
            }
            if entry.body.prev != head.last {
                tracing::debug!(%writer, seq, "entry does not chain to the stored log");
                continue;
            }
            batch.put(&self.tables.entries, &entry_key(&writer, seq), &entry)?;
            heads.insert(
                writer,
                LogHead {
                    next: seq + 1,
                    last: hash,
                },
            );
            stored += 1;
            // An orphan waiting for this one goes next.
            if let Some(orphan) = self.orphans.remove(&(writer, seq + 1)) {
                let orphan_hash = orphan.hash(&self.network);
                pending.push_front((orphan, orphan_hash));
            }
        }
        for (writer, head) in &heads {
            batch.put(&self.tables.logs, &writer.0.to_vec(), head)?;
        }
        batch.commit()?;
        self.heads.extend(heads);
        self.entry_count += stored;
        if stored > 0 {
            self.unconfirmed = None;
        }
        out.retain(|m| match m {
            Message::WantEntries { writer, from } => self.log_head(writer).0 <= *from,
            _ => true,
        });
        out.dedup();
        out.extend(self.advance()?);
        Ok(out)
    }

    /// One entry through [`Ledger::handle`]'s path, its answer added to `out` (a refusal is
    /// logged).
    fn receive_one(&mut self, entry: LogEntry, out: &mut Vec<Message>) {
        match self.receive_entry(entry) {
            Ok(messages) => out.extend(messages),
            Err(e) => tracing::debug!(network = %self.network, "entry refused: {e}"),
        }
    }

    /// Applies `entries` (already ordered) on top of `base` over the final state.
    fn apply<R: StoreRead>(
        &self,
        read: &R,
        base: Option<PendingState>,
        entries: &[&LogEntry],
        place: Place,
    ) -> Result<Applied, LedgerError> {
        apply_on(&*self.machine, &self.network, read, base, entries, place)
    }

    /// The state after the latest pending checkpoint, if any (the writes of every pending
    /// checkpoint, oldest first, and the latest one's lattice): what the next one builds on.
    fn pending_state(&self) -> Option<PendingState> {
        self.pending.last().map(|last| PendingState {
            layers: self.pending.iter().map(|p| p.writes.clone()).collect(),
            lattice: last.lattice.clone(),
        })
    }

    /// The indexer set after the latest verified checkpoint (who must sign the next one).
    fn latest_indexers(&self) -> Result<Vec<PublicKey>, LedgerError> {
        Ok(self
            .pending
            .last()
            .map_or_else(|| self.final_indexers.clone(), |p| p.indexers_after.clone()))
    }

    /// Stored entries beyond `frontier`, the candidates of the next checkpoint, closed under
    /// causality and in order; at most `limit`.
    fn candidates(&self, limit: usize) -> Result<Vec<LogEntry>, LedgerError> {
        let read = self.store.read()?;
        let mut entries = Vec::new();
        for (writer, head) in &self.heads {
            for seq in self.included_next(writer)..head.next {
                if let Some(e) = read.get(&self.tables.entries, &entry_key(writer, seq))? {
                    entries.push(e);
                }
            }
        }
        // Drop entries whose heads are unknown or name a stored entry under another hash (and
        // what follows them in their log), until the set is closed: `order` refuses both, and
        // one such entry must not stop every other log from being checkpointed.
        let hashes: HashMap<(PublicKey, u64), Hash32> = entries
            .iter()
            .map(|e| ((e.body.writer, e.body.seq), e.hash(&self.network)))
            .collect();
        loop {
            let present: BTreeSet<(PublicKey, u64)> = entries
                .iter()
                .map(|e| (e.body.writer, e.body.seq))
                .collect();
            let mut cut: BTreeMap<PublicKey, u64> = BTreeMap::new();
            for e in &entries {
                let missing = e.body.heads.iter().any(|h| {
                    if present.contains(&(h.writer, h.seq)) {
                        hashes.get(&(h.writer, h.seq)) != Some(&h.hash)
                    } else {
                        self.included_next(&h.writer) <= h.seq
                    }
                });
                if missing {
                    let at = cut.entry(e.body.writer).or_insert(u64::MAX);
                    *at = (*at).min(e.body.seq);
                }
            }
            if cut.is_empty() {
                break;
            }
            entries.retain(|e| cut.get(&e.body.writer).is_none_or(|&c| e.body.seq < c));
        }
        let refs: Vec<EntryRef> = entries.iter().map(|e| e.reference(&self.network)).collect();
        let ordered = order::order(&entries, &refs, |h| self.included_next(&h.writer) > h.seq)?;
        Ok(ordered.into_iter().take(limit).cloned().collect())
    }

    fn frontier_after(&self, entries: &[LogEntry]) -> Vec<LogFrontier> {
        let mut next: BTreeMap<PublicKey, (u64, Hash32)> = self
            .latest_frontier()
            .iter()
            .map(|f| (f.writer, (f.next, f.last)))
            .collect();
        for e in entries {
            let n = next.entry(e.body.writer).or_insert((0, Hash32::ZERO));
            if e.body.seq + 1 > n.0 {
                *n = (e.body.seq + 1, e.hash(&self.network));
            }
        }
        next.into_iter()
            .map(|(writer, (next, last))| LogFrontier { writer, next, last })
            .collect()
    }

    /// If this node is the sequencer in force, proposes the next checkpoint with every
    /// known entry not yet included (up to the limit) at `time` (raised to the previous
    /// checkpoint's time if lower). Returns the messages to broadcast.
    pub fn propose(&mut self, time: u64) -> Result<Vec<Message>, LedgerError> {
        // While a checkpoint is being verified, the next one would build on a stale tip.
        if self.divergence.is_some() || self.in_flight.is_some() {
            return Ok(Vec::new());
        }
        let Some(keypair) = self.keypair.clone() else {
            return Ok(Vec::new());
        };
        let indexers = self.latest_indexers()?;
        if indexers.first() != Some(&keypair.public()) {
            return Ok(Vec::new());
        }
        let entries = self.candidates(self.limits.max_entries_per_checkpoint)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let Tip {
            hash: prev,
            time: prev_time,
            position,
            ..
        } = self.tip();
        let height = self.latest_height() + 1;
        let time = time.max(prev_time);
        let refs: Vec<&LogEntry> = entries.iter().collect();
        let read = self.store.read()?;
        let place = Place {
            height,
            time,
            position,
        };
        let applied = self.apply(&read, self.pending_state(), &refs, place)?;
        drop(read);
        let body = CheckpointBody {
            version: FORMAT_VERSION,
            height,
            prev,
            time,
            frontier: self.frontier_after(&entries),
            state_root: applied.root,
            receipts_root: merkle::root(&applied.receipts),
            sequencer: keypair.public(),
        };
        let checkpoint = Checkpoint::sign(&keypair, &self.network, body);
        self.accept_pending(checkpoint.clone(), applied, indexers)?;
        let mut out = vec![Message::Checkpoint(checkpoint)];
        out.extend(self.advance()?);
        Ok(out)
    }

    fn accept_pending(
        &mut self,
        checkpoint: Checkpoint,
        applied: Applied,
        indexers: Vec<PublicKey>,
    ) -> Result<(), LedgerError> {
        let hash = checkpoint.hash(&self.network);
        let mut batch = self.store.write()?;
        batch.put(
            &self.tables.checkpoints,
            &checkpoint.body.height,
            &checkpoint,
        )?;
        batch.commit()?;
        let mut acks = BTreeSet::new();
        acks.insert(checkpoint.body.sequencer);
        self.pending.push(Pending {
            hash,
            lattice: applied.lattice,
            writes: applied.writes,
            receipts: applied.receipts,
            position: applied.position,
            skipped: applied.skipped,
            indexers,
            acks,
            indexers_after: applied.indexers_after,
            checkpoint,
        });
        self.unconfirmed = None;
        Ok(())
    }

    fn receive_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<Vec<Message>, LedgerError> {
        checkpoint.verify(&self.network)?;
        let height = checkpoint.body.height;
        if height <= self.latest_height() {
            return Ok(Vec::new());
        }
        if self.unverified.len() >= 1_000 && !self.unverified.contains_key(&height) {
            return Ok(Vec::new());
        }
        self.unverified.insert(height, checkpoint);
        self.advance()
    }

    fn receive_ack(&mut self, ack: Ack) -> Result<Vec<Message>, LedgerError> {
        ack.verify(&self.network)?;
        let height = ack.body.height;
        // Only acks that can count are kept and passed on: for a verified checkpoint, from an
        // indexer of its set and for its hash; ahead of that, from a current indexer and at
        // most a pipeline's length ahead.
        if height <= self.final_info.height || height > self.latest_height() + MAX_ACKS_AHEAD {
            return Ok(Vec::new());
        }
        match self
            .pending
            .iter()
            .find(|p| p.checkpoint.body.height == height)
        {
            Some(p) => {
                if ack.body.checkpoint != p.hash || !p.indexers.contains(&ack.body.indexer) {
                    return Ok(Vec::new());
                }
                let mut batch = self.store.write()?;
                batch.put(
                    &self.tables.acks,
                    &height_key(height, ack.body.indexer.as_bytes()),
                    &ack,
                )?;
                batch.commit()?;
            }
            None => {
                if !self.latest_indexers()?.contains(&ack.body.indexer) {
                    return Ok(Vec::new());
                }
            }
        }
        let acks = self.early_acks.entry(height).or_default();
        if acks.iter().any(|a| a == &ack) || acks.len() >= 256 {
            return Ok(Vec::new());
        }
        acks.push(ack.clone());
        let mut out = vec![Message::Ack(ack)];
        out.extend(self.advance()?);
        Ok(out)
    }

    /// Verifies whatever checkpoints can be verified, records acks, finalises in order.
    fn advance(&mut self) -> Result<Vec<Message>, LedgerError> {
        let mut out = Vec::new();
        // Verify the next checkpoints in height order (one at a time on the applier thread).
        while self.divergence.is_none() && self.in_flight.is_none() {
            let next = self.latest_height() + 1;
            let Some(checkpoint) = self.unverified.get(&next).cloned() else {
                break;
            };
            match self.verify_next(&checkpoint)? {
                Verification::Accepted(messages) => {
                    self.unverified.remove(&next);
                    out.extend(messages);
                }
                Verification::Missing(messages) => {
                    out.extend(messages);
                    break;
                }
                Verification::Refused => {
                    self.unverified.remove(&next);
                }
                Verification::Applying => break,
            }
        }
        if let Some(&first) = self.unverified.keys().next()
            && first > self.latest_height() + 1
        {
            out.push(Message::WantCheckpoints {
                from: self.latest_height() + 1,
            });
        }
        self.finalise_ready()?;
        Ok(out)
    }

    /// Counts the acks of the pending checkpoints, then finalises from the bottom those with
    /// a quorum.
    fn finalise_ready(&mut self) -> Result<(), LedgerError> {
        for pending in &mut self.pending {
            if let Some(acks) = self.early_acks.get(&pending.checkpoint.body.height) {
                for ack in acks {
                    if ack.body.checkpoint == pending.hash
                        && ack.body.state_root == pending.checkpoint.body.state_root
                        && pending.indexers.contains(&ack.body.indexer)
                    {
                        pending.acks.insert(ack.body.indexer);
                    }
                }
            }
        }
        while self
            .pending
            .first()
            .is_some_and(|p| p.acks.len() >= quorum(p.indexers.len()))
        {
            self.finalise_first()?;
        }
        Ok(())
    }

    fn verify_next(&mut self, checkpoint: &Checkpoint) -> Result<Verification, LedgerError> {
        let body = &checkpoint.body;
        let Tip {
            hash: prev,
            time: prev_time,
            position,
            ..
        } = self.tip();
        let indexers = self.latest_indexers()?;
        let refuse = |why: String| {
            tracing::warn!(height = body.height, "refusing checkpoint: {why}");
            Ok(Verification::Refused)
        };
        if body.prev != prev {
            return refuse("it does not follow the previous checkpoint".into());
        }
        if indexers.first() != Some(&body.sequencer) {
            return refuse(format!("{} is not the sequencer in force", body.sequencer));
        }
        if body.time < prev_time {
            return refuse("its time is before the previous checkpoint's".into());
        }
        // The frontier may only grow, and every included entry must be here.
        let mut entries = Vec::new();
        let mut missing = Vec::new();
        let previous_tips: BTreeMap<PublicKey, (u64, Hash32)> = self
            .latest_frontier()
            .iter()
            .map(|f| (f.writer, (f.next, f.last)))
            .collect();
        let previous: BTreeMap<PublicKey, u64> =
            previous_tips.iter().map(|(w, (n, _))| (*w, *n)).collect();
        for (writer, next) in &previous {
            if body.next_seq(writer) < *next {
                return refuse(format!("the frontier of {writer} moves backwards"));
            }
        }
        // Each log's included tip must be the entry this node holds; if the writer signed
        // another branch, adopt the branch the checkpoint names.
        for f in &body.frontier {
            let (from, from_last) = previous_tips
                .get(&f.writer)
                .copied()
                .unwrap_or((0, Hash32::ZERO));
            if f.next == from {
                if f.last != from_last {
                    return refuse(format!(
                        "the frontier of {} changes without new entries",
                        f.writer
                    ));
                }
                continue;
            }
            if self.log_head(&f.writer).0 < f.next {
                continue; // Missing entries are asked for below.
            }
            let local = self
                .entry(&f.writer, f.next - 1)?
                .map(|e| e.hash(&self.network));
            if local != Some(f.last) {
                match self.adopt_branch(f, from)? {
                    Adoption::Adopted => {}
                    Adoption::Missing { writer, from } => {
                        missing.push(Message::WantEntries { writer, from })
                    }
                    Adoption::Refused(why) => return refuse(why),
                }
            }
        }
        if !missing.is_empty() {
            return Ok(Verification::Missing(missing));
        }
        let read = self.store.read()?;
        for f in &body.frontier {
            let from = previous.get(&f.writer).copied().unwrap_or(0);
            let have = self.heads.get(&f.writer).map_or(0, |h| h.next);
            if have < f.next {
                missing.push(Message::WantEntries {
                    writer: f.writer,
                    from: have,
                });
                continue;
            }
            for seq in from..f.next {
                match read.get(&self.tables.entries, &entry_key(&f.writer, seq))? {
                    Some(e) => entries.push(e),
                    None => missing.push(Message::WantEntries {
                        writer: f.writer,
                        from: seq,
                    }),
                }
            }
        }
        if !missing.is_empty() {
            return Ok(Verification::Missing(missing));
        }
        if entries.is_empty() {
            return refuse("it includes no entries".into());
        }
        if entries.len() > self.limits.max_entries_per_checkpoint {
            return refuse("it includes too many entries".into());
        }
        let refs: Vec<EntryRef> = entries.iter().map(|e| e.reference(&self.network)).collect();
        let ordered = match order::order(&entries, &refs, |h| {
            previous.get(&h.writer).is_some_and(|&n| n > h.seq)
        }) {
            Ok(o) => o,
            Err(e) => return refuse(e.to_string()),
        };
        let place = Place {
            height: body.height,
            time: body.time,
            position,
        };
        if let Some(applier) = &self.applier {
            // Applied on the applier's thread; `take_applied` concludes.
            let job = Job {
                base: self.pending_state(),
                entries: ordered.into_iter().cloned().collect(),
                place,
            };
            drop(read);
            applier.submit(job)?;
            self.in_flight = Some(InFlight {
                checkpoint: checkpoint.clone(),
                indexers,
            });
            return Ok(Verification::Applying);
        }
        let applied = self.apply(&read, self.pending_state(), &ordered, place)?;
        drop(read);
        self.conclude(checkpoint, applied, indexers)
    }

    /// The end of verifying `checkpoint` once its entries are applied: its roots compared
    /// (a divergence raised if they differ), an ack signed if this node is an indexer, and the
    /// checkpoint accepted as pending.
    fn conclude(
        &mut self,
        checkpoint: &Checkpoint,
        applied: Applied,
        indexers: Vec<PublicKey>,
    ) -> Result<Verification, LedgerError> {
        let body = &checkpoint.body;
        let receipts_root = merkle::root(&applied.receipts);
        if applied.root != body.state_root || receipts_root != body.receipts_root {
            let divergence = Divergence {
                height: body.height,
                expected: body.state_root,
                computed: applied.root,
            };
            tracing::error!(
                network = %self.network,
                height = body.height,
                expected = %body.state_root,
                computed = %applied.root,
                receipts_match = (receipts_root == body.receipts_root),
                "DIVERGENCE: this node computes another state for a checkpoint; refusing to ack"
            );
            let mut batch = self.store.write()?;
            batch.put(&self.tables.alarm, &ALARM_KEY.to_string(), &divergence)?;
            batch.commit()?;
            self.divergence = Some(divergence);
            return Ok(Verification::Refused);
        }
        let mut messages = Vec::new();
        if let Some(keypair) = &self.keypair
            && keypair.public() != body.sequencer
            && indexers.contains(&keypair.public())
        {
            let ack = Ack::sign(keypair, &self.network, checkpoint);
            let mut batch = self.store.write()?;
            batch.put(
                &self.tables.acks,
                &height_key(body.height, keypair.public().as_bytes()),
                &ack,
            )?;
            batch.commit()?;
            self.early_acks
                .entry(body.height)
                .or_default()
                .push(ack.clone());
            messages.push(Message::Ack(ack));
        }
        self.accept_pending(checkpoint.clone(), applied, indexers)?;
        // Passed on once verified, so nodes the sequencer cannot reach still learn of it.
        messages.push(Message::Checkpoint(checkpoint.clone()));
        Ok(Verification::Accepted(messages))
    }

    /// Replaces this node's not yet checkpointed entries of `frontier.writer` by the branch the
    /// checkpoint names (the writer signed two branches), once every entry of that branch is
    /// known; asks for what is missing otherwise.
    fn adopt_branch(
        &mut self,
        frontier: &LogFrontier,
        checkpointed: u64,
    ) -> Result<Adoption, LedgerError> {
        let writer = frontier.writer;
        if self.keypair.as_ref().is_some_and(|k| k.public() == writer) {
            return Ok(Adoption::Refused(
                "it names a branch of this node's own log that this node never signed".into(),
            ));
        }
        // Walk the named branch down until it meets the stored log.
        let mut branch = Vec::new();
        let mut seq = frontier.next - 1;
        let mut hash = frontier.last;
        loop {
            if seq < checkpointed {
                return Ok(Adoption::Refused(format!(
                    "the branch of {writer} it names does not join the checkpointed log"
                )));
            }
            let stored = self.entry(&writer, seq)?.map(|e| e.hash(&self.network));
            if stored == Some(hash) {
                break;
            }
            let Some(candidate) = self
                .forks
                .get(&(writer, seq))
                .filter(|c| c.hash(&self.network) == hash)
                .cloned()
            else {
                return Ok(Adoption::Missing { writer, from: seq });
            };
            hash = candidate.body.prev;
            branch.push(candidate);
            if seq == 0 {
                break;
            }
            seq -= 1;
        }
        branch.reverse();
        let first = branch.first().map_or(frontier.next, |e| e.body.seq);
        let (head_next, _) = self.log_head(&writer);
        tracing::warn!(
            %writer,
            seq = first,
            "writer signed two branches of its log: adopting the one the checkpoint names"
        );
        let mut batch = self.store.write()?;
        for seq in first..head_next {
            batch.delete(&self.tables.entries, &entry_key(&writer, seq))?;
        }
        let prev = branch.first().map_or(hash, |e| e.body.prev);
        let head = LogHead {
            next: first,
            last: prev,
        };
        batch.put(&self.tables.logs, &writer.0.to_vec(), &head)?;
        batch.commit()?;
        self.entry_count -= head_next - first;
        self.heads.insert(writer, head);
        self.orphans.retain(|(w, _), _| *w != writer);
        for entry in &branch {
            self.forks.remove(&(writer, entry.body.seq));
            self.store_entry(entry)?;
        }
        Ok(Adoption::Adopted)
    }

    /// Writes the lowest pending checkpoint's state, receipts and record in one transaction.
    fn finalise_first(&mut self) -> Result<(), LedgerError> {
        // Removed only once committed: a failed commit leaves the pending list intact.
        let pending = &self.pending[0];
        let body = &pending.checkpoint.body;
        let mut batch = self.store.write()?;
        // The lowest pending checkpoint's writes are relative to the final state, and its
        // lattice was computed when it was applied (its root checked then): the records are
        // written as they are, not hashed again.
        batch.state_write_folded(&pending.writes, &pending.lattice)?;
        let root = pending.lattice.root();
        for (index, receipt) in pending.receipts.iter().enumerate() {
            batch.put(
                &self.tables.receipts,
                &height_key(body.height, &(index as u32).to_be_bytes()),
                &serde_bytes::ByteBuf::from(receipt.clone()),
            )?;
        }
        let counted = self
            .early_acks
            .get(&body.height)
            .into_iter()
            .flatten()
            .filter(|a| {
                a.body.checkpoint == pending.hash && pending.indexers.contains(&a.body.indexer)
            });
        for ack in counted {
            batch.put(
                &self.tables.acks,
                &height_key(body.height, ack.body.indexer.as_bytes()),
                ack,
            )?;
        }
        let info = FinalInfo {
            height: body.height,
            hash: pending.hash,
            time: body.time,
            frontier: body.frontier.clone(),
            position: pending.position,
            root,
            skipped: self.final_info.skipped + pending.skipped,
        };
        batch.put(&self.tables.meta, &FINAL_KEY.to_string(), &info)?;
        batch.commit()?;
        self.pending.remove(0);
        let height = info.height;
        self.final_info = info;
        self.early_acks.retain(|h, _| *h > height);
        let read = self.store.read()?;
        let overlay = Overlay::new(&read)?;
        self.final_indexers = self.machine.indexers(&overlay)?;
        drop(read);
        self.unconfirmed = None;
        tracing::debug!(height, root = %root, "checkpoint final");
        Ok(())
    }

    fn compute_unconfirmed<R: StoreRead>(
        &self,
        read: &R,
    ) -> Result<(Arc<Diff>, Lattice), LedgerError> {
        let entries = self.candidates(usize::MAX)?;
        let Tip {
            height,
            time,
            position,
            ..
        } = self.tip();
        let refs: Vec<&LogEntry> = entries.iter().collect();
        let place = Place {
            height: height + 1,
            time,
            position,
        };
        let applied = self.apply(read, self.pending_state(), &refs, place)?;
        Ok((applied.writes, applied.lattice))
    }

    /// The receipts of a final checkpoint, in order.
    pub fn receipts(&self, height: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        let read = self.store.read()?;
        Ok(read
            .scan_prefix(&self.tables.receipts, &height.to_be_bytes(), usize::MAX)?
            .into_iter()
            .map(|(_, r)| r.into_vec())
            .collect())
    }

    /// The acks stored for the checkpoint at `height` (for a final one: those that made it
    /// final).
    pub fn acks(&self, height: u64) -> Result<Vec<Ack>, LedgerError> {
        let read = self.store.read()?;
        Ok(read
            .scan_prefix(&self.tables.acks, &height.to_be_bytes(), usize::MAX)?
            .into_iter()
            .map(|(_, ack)| ack)
            .collect())
    }

    /// A stored checkpoint.
    pub fn checkpoint(&self, height: u64) -> Result<Option<Checkpoint>, LedgerError> {
        Ok(self.store.read()?.get(&self.tables.checkpoints, &height)?)
    }
}

/// Applies `entries` (already ordered) on top of `base` over the final state in `read` (the
/// work of verifying or proposing a checkpoint, on the ledger's thread or the applier's).
pub(super) fn apply_on<M: StateMachine, R: StoreRead>(
    machine: &M,
    network: &Hash32,
    read: &R,
    base: Option<PendingState>,
    entries: &[&LogEntry],
    place: Place,
) -> Result<Applied, LedgerError> {
    let mut overlay = match base {
        Some(PendingState { layers, lattice }) => Overlay::with_layers(read, layers, lattice),
        None => Overlay::new(read)?,
    };
    let AppliedBatch {
        receipts,
        position,
        skipped,
    } = apply_entries(
        machine,
        network,
        &mut overlay,
        entries,
        place.height,
        place.time,
        place.position,
    )?;
    let indexers_after = machine.indexers(&overlay)?;
    let lattice = overlay.lattice();
    Ok(Applied {
        root: lattice.root(),
        lattice,
        writes: Arc::new(overlay.into_diff()),
        receipts,
        position,
        skipped,
        indexers_after,
    })
}

impl<M: StateMachine + Send + Sync + 'static> Ledger<M> {
    /// From now on, the entries of a checkpoint being verified are applied on a thread of
    /// their own, one checkpoint at a time, while this ledger goes on taking entries and
    /// messages: `notify` is called (on that thread) when a checkpoint is applied, and the
    /// owner then calls [`Ledger::take_applied`] to conclude its verification. Until then
    /// the ledger behaves as if the checkpoint had not arrived yet (its status, views and
    /// proposals stay at the checkpoint before). The applier reads committed snapshots of the
    /// store only; this ledger remains the only writer.
    pub fn apply_in_background(
        &mut self,
        notify: impl Fn() + Send + 'static,
    ) -> Result<(), LedgerError> {
        if self.applier.is_none() {
            self.applier = Some(Applier::start(
                self.machine.clone(),
                self.store.clone(),
                self.network,
                Box::new(notify),
            )?);
        }
        Ok(())
    }
}

/// What applying a batch of ordered entries produced.
pub(super) struct AppliedBatch {
    /// The receipts, in order.
    pub receipts: Vec<Vec<u8>>,
    /// The position after the last op.
    pub position: u64,
    /// Entries skipped because their writer was not a member.
    pub skipped: u64,
}

/// Entries whose ops are prepared together ([`StateMachine::prepare`]) while the entries
/// before them are applied.
const PREPARE_CHUNK: usize = 1_000;

/// Applies `entries` (already ordered) to `state`: membership checked per entry, every op of
/// a member's entry applied with its position. The machine may batch-verify first: the ops of
/// the first [`PREPARE_CHUNK`] entries are prepared, then each next chunk's on a thread of its
/// own while this one applies the chunk before (preparing only fills the machine's caches, so
/// what is applied does not depend on it).
pub(super) fn apply_entries<M: StateMachine>(
    machine: &M,
    network: &Hash32,
    state: &mut dyn StateAccess,
    entries: &[&LogEntry],
    height: u64,
    time: u64,
    position: u64,
) -> Result<AppliedBatch, LedgerError> {
    let prepare = |chunk: &[&LogEntry]| {
        let ops: Vec<&[u8]> = chunk
            .iter()
            .flat_map(|e| e.body.ops.iter().map(|op| op.as_slice()))
            .collect();
        machine.prepare(&ops);
    };
    let mut chunks = entries.chunks(PREPARE_CHUNK).peekable();
    let mut batch = AppliedBatch {
        receipts: Vec::new(),
        position,
        skipped: 0,
    };
    if let Some(first) = chunks.peek() {
        prepare(first);
    }
    while let Some(chunk) = chunks.next() {
        let next = chunks.peek().copied();
        let applied = std::thread::scope(|scope| {
            // No thread to be had: the next chunk is verified singly as it is applied.
            let _preparer = next.and_then(|next| {
                std::thread::Builder::new()
                    .name("ledger-prepare".into())
                    .spawn_scoped(scope, move || prepare(next))
                    .ok()
            });
            apply_prepared_entries(machine, network, state, chunk, height, time, batch.position)
        })?;
        batch.receipts.extend(applied.receipts);
        batch.position = applied.position;
        batch.skipped += applied.skipped;
    }
    Ok(batch)
}

/// [`apply_entries`] of entries whose ops the machine has prepared already (a replay
/// prepares the next checkpoint on a second thread while it applies one).
pub(super) fn apply_prepared_entries<M: StateMachine>(
    machine: &M,
    network: &Hash32,
    state: &mut dyn StateAccess,
    entries: &[&LogEntry],
    height: u64,
    time: u64,
    mut position: u64,
) -> Result<AppliedBatch, LedgerError> {
    let mut receipts = Vec::new();
    let mut skipped = 0;
    for entry in entries {
        let body = &entry.body;
        if !machine.is_writer(state, &body.writer)? {
            skipped += 1;
            continue;
        }
        let hash = entry.hash(network);
        for (index, op) in body.ops.iter().enumerate() {
            let applied = AppliedOp {
                writer: body.writer,
                entry: hash,
                seq: body.seq,
                index: index as u32,
                position,
                height,
                time,
                bytes: op,
            };
            if let Some(receipt) = machine.apply(state, &applied)? {
                receipts.push(receipt);
            }
            position += 1;
        }
    }
    Ok(AppliedBatch {
        receipts,
        position,
        skipped,
    })
}

/// The outcome of adopting a writer's other branch.
enum Adoption {
    Adopted,
    /// The named branch needs the entries of `writer` from `from` on.
    Missing {
        writer: PublicKey,
        from: u64,
    },
    Refused(String),
}

/// The latest verified checkpoint: what the next one builds on.
struct Tip {
    height: u64,
    hash: Hash32,
    time: u64,
    position: u64,
}

enum Verification {
    Accepted(Vec<Message>),
    Missing(Vec<Message>),
    Refused,
    /// Handed to the applier thread.
    Applying,
}
