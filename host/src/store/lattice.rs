//! The lattice hash behind the state root (docs/protocol.md, "State root").
//!
//! Each key/value record is expanded with the BLAKE3 extendable output to 2,048 bytes, read as
//! 1,024 little-endian `u16` lanes, and added lane-wise (mod 2¹⁶) into the lattice; deleting the
//! record subtracts the same lanes. The lattice therefore depends only on the set of records,
//! not on the order of writes, and is updated in constant time per write. The 32-byte root is
//! BLAKE3 of the lattice's 2,048 little-endian bytes.

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
