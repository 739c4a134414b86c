//! The receipts Merkle root of a checkpoint.
//!
//! Leaves are `BLAKE3(0x00 ‖ receipt)`, inner nodes `BLAKE3(0x01 ‖ left ‖ right)`; an odd node
//! at the end of a level is carried up unchanged. No receipts: [`Hash32::ZERO`].

use crate::crypto::{Hash32, hash_parts};

/// The leaf hash of a receipt.
pub fn leaf(receipt: &[u8]) -> Hash32 {
    hash_parts(&[&[0x00], receipt])
}

fn node(left: &Hash32, right: &Hash32) -> Hash32 {
    hash_parts(&[&[0x01], left.as_bytes(), right.as_bytes()])
}

/// The level above `level`.
fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node(l, r),
            [one] => *one,
            _ => unreachable!("chunks of two"),
        })
        .collect()
}

/// The Merkle root of `receipts`, in order.
pub fn root<R: AsRef<[u8]>>(receipts: &[R]) -> Hash32 {
    let mut level: Vec<Hash32> = receipts.iter().map(|r| leaf(r.as_ref())).collect();
    if level.is_empty() {
        return Hash32::ZERO;
    }
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// The sibling hashes proving the receipt at `index` (bottom up; `true` = sibling on the
/// right), or `None` if `index` is out of range.
pub fn proof<R: AsRef<[u8]>>(receipts: &[R], index: usize) -> Option<Vec<(Hash32, bool)>> {
    if index >= receipts.len() {
        return None;
    }
    let mut level: Vec<Hash32> = receipts.iter().map(|r| leaf(r.as_ref())).collect();
    let mut index = index;
    let mut path = Vec::new();
    while level.len() > 1 {
        let sibling = index ^ 1;
        if sibling < level.len() {
            path.push((level[sibling], sibling > index));
        }
        level = next_level(&level);
        index /= 2;
    }
    Some(path)
}

/// Every level of the tree over `receipts`, leaves first and the root last (one empty level
/// for no receipts): built once, it gives the path of any receipt with [`path`], the same
/// as [`proof`] gives from the receipts.
pub fn levels<R: AsRef<[u8]>>(receipts: &[R]) -> Vec<Vec<Hash32>> {
    let mut levels = vec![
        receipts
            .iter()
            .map(|r| leaf(r.as_ref()))
            .collect::<Vec<_>>(),
    ];
    while let Some(top) = levels.last()
        && top.len() > 1
    {
        let next = next_level(top);
        levels.push(next);
    }
    levels
}

/// The path of the receipt at `index` in the tree of [`levels`] (what [`proof`] returns),
/// or `None` if `index` is out of range.
pub fn path(levels: &[Vec<Hash32>], index: usize) -> Option<Vec<(Hash32, bool)>> {
    if index >= levels.first().map_or(0, Vec::len) {
        return None;
    }
    let mut index = index;
    let mut path = Vec::new();
    for level in levels.iter().take_while(|level| level.len() > 1) {
        let sibling = index ^ 1;
        if sibling < level.len() {
            path.push((level[sibling], sibling > index));
        }
        index /= 2;
    }
    Some(path)
}

/// Whether `receipt` with `proof` leads to `root`.
pub fn verify(root: &Hash32, receipt: &[u8], proof: &[(Hash32, bool)]) -> bool {
    let mut acc = leaf(receipt);
    for (sibling, right) in proof {
        acc = if *right {
            node(&acc, sibling)
        } else {
            node(sibling, &acc)
        };
    }
    acc == *root
}
