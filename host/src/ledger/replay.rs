//! Rebuilding a ledger's state from its stored log alone (entries and final checkpoints), into
//! a scratch store, checking every checkpoint's state and receipts roots on the way.

use std::collections::BTreeMap;

use super::engine::{FINAL_KEY, Tables, apply_entries, entry_key};
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
    let ordered: Vec<LogEntry> = order::order(&entries, &refs, |h| {
        frontier.get(&h.writer).is_some_and(|&n| n > h.seq)
    })?
    .into_iter()
    .cloned()
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
/// checkpoint is read and its signatures verified on a second thread while one is applied.
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
    let mut frontier: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let mut report = ReplayReport {
        height: 0,
        ops: 0,
        entries: 0,
        skipped: 0,
        root: target.read()?.state_root()?,
        divergence: None,
    };
    let verify = options.verify_signatures;
    let mut position = 0u64;
    let mut previous_hash = Hash32::ZERO;
    let mut next = if to >= 1 {
        Some(load_and_prepare(
            source, &tables, network, machine, 1, &frontier, verify,
        ))
    } else {
        None
    };
    for height in 1..=to {
        let Loaded {
            checkpoint,
            entries,
        } = next
            .take()
            .unwrap_or_else(|| Err(LedgerError::Invalid("replay lost its place".into())))?;
        if checkpoint.body.prev != previous_hash {
            return Err(LedgerError::Invalid(format!(
                "checkpoint {height} does not follow checkpoint {}",
                height - 1
            )));
        }
        previous_hash = checkpoint.hash(network);
        let mut frontier_after = frontier.clone();
        for f in &checkpoint.body.frontier {
            frontier_after.insert(f.writer, f.next);
        }
        let first_position = position;
        let refs: Vec<&LogEntry> = entries.iter().collect();
        let (applied, root, batch) = std::thread::scope(|scope| {
            let ahead = (height < to).then(|| {
                let (tables, frontier_after) = (&tables, &frontier_after);
                scope.spawn(move || {
                    load_and_prepare(
                        source,
                        tables,
                        network,
                        machine,
                        height + 1,
                        frontier_after,
                        verify,
                    )
                })
            });
            let outcome = (|| {
                let mut batch = target.write()?;
                let applied = apply_entries(
                    machine,
                    network,
                    &mut batch,
                    &refs,
                    height,
                    checkpoint.body.time,
                    position,
                )?;
                let root = StateAccess::root(&batch)?;
                Ok::<_, LedgerError>((applied, root, batch))
            })();
            if let Some(ahead) = ahead {
                next = Some(ahead.join().unwrap_or_else(|_| {
                    Err(LedgerError::Node(
                        "the replay loader thread panicked".into(),
                    ))
                }));
            }
            outcome
        })?;
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
            return Ok(report);
        }
        batch.commit()?;
        report.ops += applied.position - first_position;
        report.entries += entries.len() as u64;
        report.skipped += applied.skipped;
        report.height = height;
        report.root = root;
        position = applied.position;
        frontier = frontier_after;
        progress(&ReplayProgress {
            height,
            target: to,
            ops: report.ops,
        });
    }
    Ok(report)
}
