//! A bounded memory of signatures already verified, so that a batch verification done ahead of
//! applying (many signatures at once) spares the single verification at apply time.

use std::collections::HashSet;
use std::sync::Mutex;

use super::{BatchItem, Hash32, PublicKey, Signature, hash_parts, verify_batch, verify_hash};

/// Most remembered signatures; the memory is cleared when it is full.
const CAPACITY: usize = 1 << 16;

/// Remembers verified `(key, hash, signature)` triples.
#[derive(Debug, Default)]
pub struct VerifiedSignatures {
    seen: Mutex<HashSet<Hash32>>,
}

fn fingerprint(key: &PublicKey, hash: &Hash32, signature: &Signature) -> Hash32 {
    hash_parts(&[key.as_bytes(), hash.as_bytes(), signature.as_bytes()])
}

impl VerifiedSignatures {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `items` as one batch and remembers them when the batch holds; when it does
    /// not, nothing is remembered (each is then verified singly by [`Self::verify`]).
    /// Items remembered already are not verified again (a batch prepared ahead, on another
    /// thread, is then free when it is applied).
    pub fn verify_batch(&self, items: &[BatchItem<'_>]) {
        let prints: Vec<Hash32> = items
            .iter()
            .map(|i| fingerprint(i.key, i.hash, i.signature))
            .collect();
        let (fresh, prints): (Vec<BatchItem<'_>>, Vec<Hash32>) = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            items
                .iter()
                .zip(prints)
                .filter(|(_, print)| !seen.contains(print))
                .map(|(item, print)| (*item, print))
                .unzip()
        };
        if fresh.len() < 2 || verify_batch(&fresh).is_err() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() + prints.len() > CAPACITY {
            seen.clear();
        }
        seen.extend(prints);
    }

    /// Whether `signature` by `key` over `hash` is valid: remembered from a batch, or verified
    /// now. A remembered triple is forgotten (each is used once).
    pub fn verify(&self, key: &PublicKey, hash: &Hash32, signature: &Signature) -> bool {
        let print = fingerprint(key, hash, signature);
        if self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&print)
        {
            return true;
        }
        verify_hash(key, hash, signature).is_ok()
    }
}
