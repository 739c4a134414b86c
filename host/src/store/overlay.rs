//! State access for appliers, on disk or in memory.
//!
//! [`StateAccess`] is what a state machine applies operations to: reads see earlier writes, and
//! the root follows every write. A [`WriteBatch`] is the persistent implementation; an
//! [`Overlay`] keeps its writes in memory over a base it only reads (the confirmed state), for
//! speculative application: verifying a checkpoint before it is final, or the unconfirmed view.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use super::lattice::Pending;
use super::{Lattice, StateRecord, StoreError, StoreRead, WriteBatch};
use crate::crypto::Hash32;

/// Read access to the consensus state.
pub trait StateView {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` records with `start <= key < end` (no upper bound when `end` is `None`),
    /// in key order.
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError>;
}

impl<T: StoreRead> StateView for T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.state_get(key)
    }
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        self.state_range(start, end, limit)
    }
}

/// Read and write access to the consensus state, with its root.
pub trait StateAccess: StateView {
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// The root of the state as it is now.
    fn root(&self) -> Result<Hash32, StoreError>;
}

impl StateAccess for WriteBatch<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.state_put_quiet(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.state_delete_quiet(key)
    }
    fn root(&self) -> Result<Hash32, StoreError> {
        self.state_root()
    }
}

/// The writes of an overlay: key → new value (`None`: deleted).
pub type Diff = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Up to `limit` records in `[start, end)` of `base` with the writes of `diff` on top.
pub fn range_through(
    base: &dyn StateView,
    diff: &Diff,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<StateRecord>, StoreError> {
    // The diff's keys in range (a range of the map, not a scan of it).
    let upper = match end {
        Some(end) if end <= start => return Ok(Vec::new()),
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    let written = || diff.range::<[u8], _>((Bound::Included(start), upper));
    // Deleted keys in range can hide base records: fetch that many more.
    let hidden = written().filter(|(_, v)| v.is_none()).count();
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base
        .range(start, end, limit.saturating_add(hidden))?
        .into_iter()
        .collect();
    for (key, value) in written() {
        match value {
            Some(value) => {
                merged.insert(key.clone(), value.clone());
            }
            None => {
                merged.remove(key);
            }
        }
    }
    Ok(merged.into_iter().take(limit).collect())
}

/// The state below an overlay's own writes: the writes of `layers` (newest last) over `base`.
struct Below<'a, R: StoreRead> {
    base: &'a R,
    layers: &'a [Arc<Diff>],
    /// Values read from `base` (a snapshot: they do not change), when the overlay keeps them.
    reads: Option<&'a Mutex<ReadCache>>,
}

/// Most values of the base an overlay keeps.
const MAX_CACHED_READS: usize = 2_048;
/// Longest value of the base an overlay keeps.
const MAX_CACHED_VALUE: usize = 1_024;

/// Values an overlay read from its base, kept for the next reads of the same keys: applying a
/// checkpoint reads the same few keys for every op (the writer's membership, the admin, the
/// switches, the contract), each a B-tree descent in LMDB otherwise. Bounded: once full, new
/// keys are read from the base each time.
#[derive(Default)]
struct ReadCache {
    values: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<R: StoreRead> Below<'_, R> {
    fn base_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(reads) = self.reads else {
            return self.base.state_get(key);
        };
        if let Some(value) = reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .get(key)
        {
            return Ok(value.clone());
        }
        let value = self.base.state_get(key)?;
        if value.as_ref().is_none_or(|v| v.len() <= MAX_CACHED_VALUE) {
            let mut reads = reads.lock().unwrap_or_else(PoisonError::into_inner);
            if reads.values.len() < MAX_CACHED_READS {
                reads.values.insert(key.to_vec(), value.clone());
            }
        }
        Ok(value)
    }
}

impl<R: StoreRead> StateView for Below<'_, R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for layer in self.layers.iter().rev() {
            if let Some(value) = layer.get(key) {
                return Ok(value.clone());
            }
        }
        self.base_get(key)
    }

    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        match self.layers.split_last() {
            None => self.base.state_range(start, end, limit),
            Some((top, layers)) => {
                let below = Below {
                    base: self.base,
                    layers,
                    reads: None,
                };
                range_through(&below, top, start, end, limit)
            }
        }
    }
}

/// In-memory writes over a read-only base, with the root kept up to date (the lattice takes
/// the writes in when the root is asked for, once per key written).
///
/// The base may carry layers of earlier writes (for example those of the pending checkpoints
/// the next one builds on, [`Overlay::with_layers`]): they are read through, shared, never
/// copied, and the overlay's own writes ([`Overlay::diff`]) are only those made on it.
pub struct Overlay<'b, R: StoreRead> {
    base: &'b R,
    /// Writes over `base` that this overlay starts from, oldest first.
    layers: Vec<Arc<Diff>>,
    /// The writes made on this overlay (only the keys whose value changed).
    diff: Diff,
    /// The lattice as of the last fold, and the writes since (behind a lock because asking
    /// for the root folds them; writes reach it without locking).
    lattice: Mutex<(Lattice, Pending)>,
    /// Values read from `base`, kept for the next reads (behind a lock: reads take `&self`).
    reads: Mutex<ReadCache>,
}

impl<'b, R: StoreRead> Overlay<'b, R> {
    /// An empty overlay over `base`.
    pub fn new(base: &'b R) -> Result<Self, StoreError> {
        Ok(Self::with_layers(base, Vec::new(), base.state_lattice()?))
    }

    /// An overlay over the state that the writes of `layers` (oldest first) give over
    /// `base`'s, whose lattice the caller knows already (`lattice`, as [`Overlay::lattice`]
    /// returned it for that state): nothing is hashed or copied.
    pub fn with_layers(base: &'b R, layers: Vec<Arc<Diff>>, lattice: Lattice) -> Self {
        Overlay {
            base,
            layers,
            diff: Diff::new(),
            lattice: Mutex::new((lattice, Pending::default())),
            reads: Mutex::default(),
        }
    }

    /// The lattice of the state as it is now (its root is [`StateAccess::root`]).
    pub fn lattice(&self) -> Lattice {
        let mut guard = self.lattice.lock().unwrap_or_else(PoisonError::into_inner);
        let (lattice, pending) = &mut *guard;
        pending.fold_into(lattice);
        lattice.clone()
    }

    /// The writes made on this overlay (not those of its layers): each key whose value
    /// changed, with its value now (`None`: deleted).
    pub fn diff(&self) -> &Diff {
        &self.diff
    }

    /// Takes the writes made on this overlay.
    pub fn into_diff(self) -> Diff {
        self.diff
    }

    fn below(&self) -> Below<'_, R> {
        Below {
            base: self.base,
            layers: &self.layers,
            reads: Some(&self.reads),
        }
    }

    fn set(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let (_, pending) = self
            .lattice
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // Written since the last fold (a counter, say): the pending write holds the value now,
        // the same as the diff, so neither the diff nor the layers below are read.
        if let Some(now) = pending.now_mut(key) {
            if now.as_deref() != value {
                *now = value.map(<[u8]>::to_vec);
                self.diff.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            }
            return Ok(());
        }
        let old = match self.diff.get(key) {
            Some(old) => old.clone(),
            None => self.below().get(key)?,
        };
        if old.as_deref() == value {
            return Ok(());
        }
        let (_, pending) = self
            .lattice
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        pending.first_write(key, old, value);
        self.diff.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }
}

impl<R: StoreRead> StateView for Overlay<'_, R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.diff.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.below().get(key),
        }
    }

    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        range_through(&self.below(), &self.diff, start, end, limit)
    }
}

impl<R: StoreRead> StateAccess for Overlay<'_, R> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        super::check_key(key)?;
        self.set(key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.set(key, None)
    }

    fn root(&self) -> Result<Hash32, StoreError> {
        Ok(self.lattice().root())
    }
}
