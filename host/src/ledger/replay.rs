//! Rebuilding a ledger's state from its stored log alone (entries and final checkpoints), into
//! a scratch store, checking every checkpoint's state and receipts roots on the way.

use std::collections::BTreeMap;
use std::sync::mpsc;

use super::engine::{FINAL_KEY, Tables, apply_prepared_entries, entry_key};
use super::{Checkpoint, LedgerError, LedgerLimits, LogEntry, StateMachine, merkle, order};
use crate::crypto::{Hash32, PublicKey};
use crate::store::{StateAccess, Store, StoreRead};

/// What to replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Stop after this checkpoint height (default: the last final one).
    pub to: Option<u64>,
    /// Also check every entry's signature and chain (the roots are always compared).
    pub verify_signatures: bool,
}

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// The checkpoint just replayed.
    pub height: u64,
    /// The last height to replay.
    pub target: u64,
    /// Ops applied so far.
    pub ops: u64,
}

/// A checkpoint whose recomputed state differs from the one it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayDivergence {
    /// The checkpoint.
    pub height: u64,
    /// Position of its first op: the divergence is in `first_position..end_position`.
    pub first_position: u64,
    /// Position after its last op.
    pub end_position: u64,
    /// The root it records.
    pub expected: Hash32,
    /// The root the replay computed.
    pub computed: Hash32,
    /// Whether the receipts roots agree.
    pub receipts_match: bool,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// The last checkpoint replayed (and matched).
    pub height: u64,
    /// Ops applied.
    pub ops: u64,
    /// Entries applied or skipped.
    pub entries: u64,
    /// Entries skipped (writer not a member at their position).
    pub skipped: u64,
    /// The state root after the last matching checkpoint.
    pub root: Hash32,
    /// The first divergent checkpoint, if one was found (the replay stops there).
    pub divergence: Option<ReplayDivergence>,
}

/// The last final checkpoint height of the ledger in `store` (0 when it has none).
pub fn final_height(store: &Store) -> Result<u64, LedgerError> {
    let tables = Tables::open(store)?;
    let info = store.read()?.get(&tables.meta, &FINAL_KEY.to_string())?;
    Ok(info.map_or(0, |i| i.height))
}

/// A checkpoint read from the source with its entries in order.
struct Loaded {
    checkpoint: Checkpoint,
    entries: Vec<LogEntry>,
}

/// Reads checkpoint `height` and the entries it includes beyond `frontier`, ordered, with
/// their signatures checked when asked.
fn load(
    source: &Store,
    tables: &Tables,
    network: &Hash32,
    height: u64,
    frontier: &BTreeMap<PublicKey, u64>,
    verify_signatures: bool,
) -> Result<Loaded, LedgerError> {
    let limits = LedgerLimits::default();
    let read = source.read()?;
    let checkpoint = read.get(&tables.checkpoints, &height)?.ok_or_else(|| {
        LedgerError::Invalid(format!("checkpoint {height} is missing from the store"))
    })?;
    let mut entries: Vec<LogEntry> = Vec::new();
    for f in &checkpoint.body.frontier {
        let from = frontier.get(&f.writer).copied().unwrap_or(0);
        for seq in from..f.next {
            let entry = read
                .get(&tables.entries, &entry_key(&f.writer, seq))?
                .ok_or_else(|| {
                    LedgerError::Invalid(format!(
                        "entry {}/{seq} of checkpoint {height} is missing from the store",
                        f.writer
                    ))
                })?;
            if verify_signatures {
                entry.verify(network, &limits)?;
            }
            entries.push(entry);
        }
    }
    drop(read);
    let refs: Vec<_> = entries.iter().map(|e| e.reference(network)).collect();
    let at: BTreeMap<(PublicKey, u64), usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.body.writer, e.body.seq), i))
        .collect();
    let order: Vec<usize> = order::order(&entries, &refs, |h| {
        frontier.get(&h.writer).is_some_and(|&n| n > h.seq)
    })?
    .into_iter()
    .map(|e| at[&(e.body.writer, e.body.seq)])
    .collect();
    // Moved into their order rather than copied.
    let mut slots: Vec<Option<LogEntry>> = entries.into_iter().map(Some).collect();
    let ordered: Vec<LogEntry> = order
        .into_iter()
        .map(|i| slots[i].take().expect("an entry is ordered once"))
        .collect();
    Ok(Loaded {
        checkpoint,
        entries: ordered,
    })
}

/// Loads checkpoint `height` and lets the machine verify its ops' signatures ahead of
/// applying (runs on a second thread while the previous checkpoint is applied).
fn load_and_prepare<M: StateMachine>(
    source: &Store,
    tables: &Tables,
    network: &Hash32,
    machine: &M,
    height: u64,
    frontier: &BTreeMap<PublicKey, u64>,
    verify_signatures: bool,
) -> Result<Loaded, LedgerError> {
    let loaded = load(source, tables, network, height, frontier, verify_signatures)?;
    let ops: Vec<&[u8]> = loaded
        .entries
        .iter()
        .flat_map(|e| e.body.ops.iter().map(|op| op.as_slice()))
        .collect();
    machine.prepare(&ops);
    Ok(loaded)
}

/// Replays the ledger of `network` stored in `source` into `target` (which must be empty):
/// genesis, then each final checkpoint's entries in their order, one transaction per
/// checkpoint, comparing the roots. Stops at the first divergent checkpoint. The next
/// checkpoints are read and their signatures verified on a second thread while one is applied.
pub fn replay<M: StateMachine + Sync>(
    source: &Store,
    network: &Hash32,
    machine: &M,
    target: &Store,
    options: &ReplayOptions,
    progress: &mut dyn FnMut(&ReplayProgress),
) -> Result<ReplayReport, LedgerError> {
    let tables = Tables::open(source)?;
    let last = final_height(source)?;
    let to = options.to.map_or(last, |to| to.min(last));
    {
        let read = target.read()?;
        if !read.state_range(&[], None, 1)?.is_empty() {
            return Err(LedgerError::Invalid(
                "the replay target store is not empty".into(),
            ));
        }
    }
    let mut batch = target.write()?;
    machine.genesis(&mut batch)?;
    batch.commit()?;
    let mut report = ReplayReport {
        height: 0,
        ops: 0,
        entries: 0,
        skipped: 0,
        root: target.read()?.state_root()?,
        divergence: None,
    };
    let verify = options.verify_signatures;
    let tables = &tables;
    std::thread::scope(|scope| {
        // The loader reads and prepares the checkpoints in order, at most two ahead of the
        // one applied, and frees the entries applied (where they were allocated: freeing them
        // on the applying thread would contend with the loader's allocations).
        let (ready, loaded) = mpsc::sync_channel::<Result<Loaded, LedgerError>>(1);
        let (spent, applied_entries) = mpsc::channel::<Vec<LogEntry>>();
        let loader = scope.spawn(move || {
            let mut frontier: BTreeMap<PublicKey, u64> = BTreeMap::new();
            for height in 1..=to {
                drop(applied_entries.try_iter().collect::<Vec<_>>());
                let next =
                    load_and_prepare(source, tables, network, machine, height, &frontier, verify);
                let failed = next.is_err();
                if let Ok(next) = &next {
                    for f in &next.checkpoint.body.frontier {
                        frontier.insert(f.writer, f.next);
                    }
                }
                if ready.send(next).is_err() || failed {
                    break;
                }
            }
            drop(ready);
            drop(applied_entries.iter().collect::<Vec<_>>());
        });
        let outcome = apply_loaded(
            network,
            machine,
            target,
            to,
            &loaded,
            &spent,
            &mut report,
            progress,
        );
        drop(loaded);
        drop(spent);
        // A panic of the loader surfaced as a closed channel; the scope must not re-raise it.
        let _ = loader.join();
        outcome
    })?;
    Ok(report)
}

/// Applies the checkpoints `loaded` delivers, 1 to `to`, one transaction each, comparing the
/// roots; stops at the first divergent one (recorded in `report`). Passes the entries of each
/// applied checkpoint back to the loader through `spent`.
#[allow(clippy::too_many_arguments)]
fn apply_loaded<M: StateMachine>(
    network: &Hash32,
    machine: &M,
    target: &Store,
    to: u64,
    loaded: &mpsc::Receiver<Result<Loaded, LedgerError>>,
    spent: &mpsc::Sender<Vec<LogEntry>>,
    report: &mut ReplayReport,
    progress: &mut dyn FnMut(&ReplayProgress),
) -> Result<(), LedgerError> {
    let mut position = 0u64;
    let mut previous_hash = Hash32::ZERO;
    for height in 1..=to {
        let Loaded {
            checkpoint,
            entries,
        } = loaded.recv().unwrap_or_else(|_| {
            Err(LedgerError::Node(
                "the replay loader thread panicked".into(),
            ))
        })?;
        if checkpoint.body.prev != previous_hash {
            return Err(LedgerError::Invalid(format!(
                "checkpoint {height} does not follow checkpoint {}",
                height - 1
            )));
        }
        previous_hash = checkpoint.hash(network);
        let first_position = position;
        let refs: Vec<&LogEntry> = entries.iter().collect();
        let mut batch = target.write()?;
        // `load_and_prepare` prepared the ops.
        let applied = apply_prepared_entries(
            machine,
            network,
            &mut batch,
            &refs,
            height,
            checkpoint.body.time,
            position,
        )?;
        let root = StateAccess::root(&batch)?;
        drop(refs);
        let receipts_root = merkle::root(&applied.receipts);
        if root != checkpoint.body.state_root || receipts_root != checkpoint.body.receipts_root {
            report.divergence = Some(ReplayDivergence {
                height,
                first_position,
                end_position: applied.position,
                expected: checkpoint.body.state_root,
                computed: root,
                receipts_match: receipts_root == checkpoint.body.receipts_root,
            });
            return Ok(());
        }
        batch.commit()?;
        report.ops += applied.position - first_position;
        report.entries += entries.len() as u64;
        report.skipped += applied.skipped;
        report.height = height;
        report.root = root;
        position = applied.position;
        // The loader is gone only if it failed, which the next `recv` reports.
        let _ = spent.send(entries);
        progress(&ReplayProgress {
            height,
            target: to,
            ops: report.ops,
        });
    }
    Ok(())
}
