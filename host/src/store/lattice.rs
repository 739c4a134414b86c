//! The lattice hash behind the state root (docs/protocol.md, "State root").
//!
//! Each key/value record is expanded with the BLAKE3 extendable output to 2,048 bytes, read as
//! 1,024 little-endian `u16` lanes, and added lane-wise (mod 2¹⁶) into the lattice; deleting the
//! record subtracts the same lanes. The lattice therefore depends only on the set of records,
//! not on the order of writes, and is updated in constant time per write. The 32-byte root is
//! BLAKE3 of the lattice's 2,048 little-endian bytes.

use std::collections::HashMap;

use crate::crypto::{Domain, DomainKind, Hash32};

/// Number of 16-bit lanes.
pub const LANES: usize = 1024;
/// Serialised size in bytes.
pub const LATTICE_BYTES: usize = 2 * LANES;

/// An order-independent multiset hash of key/value records.
#[derive(Clone, PartialEq, Eq)]
pub struct Lattice {
    lanes: Box<[u16; LANES]>,
}

impl Default for Lattice {
    fn default() -> Self {
        Lattice {
            lanes: Box::new([0u16; LANES]),
        }
    }
}

impl std::fmt::Debug for Lattice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lattice(root {})", self.root())
    }
}

/// The lanes of one record: BLAKE3-XOF of
/// `"trac/v1/state-record" ‖ 0x00 ‖ 0³² ‖ u32be(len(key)) ‖ key ‖ value`.
fn expand(key: &[u8], value: &[u8]) -> [u16; LANES] {
    let mut hasher = Domain::global(DomainKind::StateRecord).hasher();
    hasher.update(&(key.len() as u32).to_be_bytes());
    hasher.update(key);
    hasher.update(value);
    let mut bytes = [0u8; LATTICE_BYTES];
    hasher.finalize_xof().fill(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, chunk) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
    }
    lanes
}

impl Lattice {
    /// The lattice of the empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the record `key → value`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        let record = expand(key, value);
        for (lane, add) in self.lanes.iter_mut().zip(record.iter()) {
            *lane = lane.wrapping_add(*add);
        }
    }

    /// Removes the record `key → value` (which must have been added).
    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        let record = expand(key, value);
        for (lane, sub) in self.lanes.iter_mut().zip(record.iter()) {
            *lane = lane.wrapping_sub(*sub);
        }
    }

    /// Adds every record of `other`.
    fn add(&mut self, other: &Lattice) {
        for (lane, add) in self.lanes.iter_mut().zip(other.lanes.iter()) {
            *lane = lane.wrapping_add(*add);
        }
    }

    /// Replaces the record of `key` holding `before` by one holding `after` (`None`: no
    /// record).
    fn change(&mut self, key: &[u8], before: Option<&[u8]>, after: Option<&[u8]>) {
        if before == after {
            return;
        }
        if let Some(before) = before {
            self.remove(key, before);
        }
        if let Some(after) = after {
            self.insert(key, after);
        }
    }

    /// The 2,048-byte serialised form (little-endian lanes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LATTICE_BYTES);
        for lane in self.lanes.iter() {
            out.extend_from_slice(&lane.to_le_bytes());
        }
        out
    }

    /// Reads the serialised form; `None` unless exactly 2,048 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LATTICE_BYTES {
            return None;
        }
        let mut lattice = Lattice::default();
        for (lane, chunk) in lattice.lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
        }
        Some(lattice)
    }

    /// The state root: BLAKE3 of the serialised lattice.
    pub fn root(&self) -> Hash32 {
        crate::crypto::hash(&self.to_bytes())
    }
}

/// Most threads that fold pending writes.
const MAX_FOLD_THREADS: usize = 4;
/// Fewest keys worth a folding thread.
const MIN_KEYS_PER_THREAD: usize = 256;

/// Threads that may fold pending writes (asking the system each time costs more than folding a
/// few writes).
fn fold_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_FOLD_THREADS)
    })
}

/// State writes not folded into a lattice yet: for each key written since the last fold, the
/// value the lattice holds for it and the value it has now (`None`: absent).
///
/// Folding changes the lattice once per key, however often the key was written in between:
/// keys such as counters are written by every op, and each change of the lattice costs an
/// expansion of the old and of the new record.
#[derive(Debug, Default)]
pub(super) struct Pending {
    writes: HashMap<Vec<u8>, Change>,
}

/// The value a lattice holds for a key and the value the key has now (`None`: absent).
type Change = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Pending {
    /// The value `key` has now, if it was written since the last fold.
    pub(super) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|(_, now)| now.as_deref())
    }

    /// The slot of the value `key` has now, if it was written since the last fold.
    pub(super) fn now_mut(&mut self, key: &[u8]) -> Option<&mut Option<Vec<u8>>> {
        self.writes.get_mut(key).map(|(_, now)| now)
    }

    /// Records the first write of `key` since the last fold: the lattice holds `before` for it
    /// and it now holds `now`.
    pub(super) fn first_write(&mut self, key: &[u8], before: Option<Vec<u8>>, now: Option<&[u8]>) {
        self.writes
            .insert(key.to_vec(), (before, now.map(<[u8]>::to_vec)));
    }

    /// Folds every write into `lattice`, leaving nothing pending. Many writes are folded on
    /// several threads (each sums the changes of a share of the keys; the sum does not depend
    /// on the order).
    pub(super) fn fold_into(&mut self, lattice: &mut Lattice) {
        let threads = (self.writes.len() / MIN_KEYS_PER_THREAD).min(fold_threads());
        if threads < 2 {
            for (key, (before, now)) in self.writes.drain() {
                lattice.change(&key, before.as_deref(), now.as_deref());
            }
            return;
        }
        let writes: Vec<_> = self.writes.drain().collect();
        let share = writes.len().div_ceil(threads);
        let fold = |writes: &[(Vec<u8>, Change)]| {
            let mut delta = Lattice::new();
            for (key, (before, now)) in writes {
                delta.change(key, before.as_deref(), now.as_deref());
            }
            delta
        };
        let mut shares = writes.chunks(share);
        let first = shares.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let others: Vec<_> = shares.map(|s| scope.spawn(move || fold(s))).collect();
            lattice.add(&fold(first));
            for other in others {
                match other.join() {
                    Ok(delta) => lattice.add(&delta),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
}
