//! Caches of compiled contracts: `InstancePre`s in memory, compiled artifacts on disk.
//!
//! A disk artifact is named by its key (BLAKE3 of code hash, engine compatibility hash and
//! call-depth limit) and stores `BLAKE3(payload) ‖ payload`, where the payload is
//! `Component::serialize`. An artifact whose checksum does not match is ignored and rebuilt,
//! so a damaged cache can cost time but never correctness.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::{Hash32, hash};

/// A bounded map from code hash to a loaded contract; the oldest entry goes first.
pub(crate) struct MemoryCache<V> {
    capacity: usize,
    map: HashMap<Hash32, Arc<V>>,
    order: VecDeque<Hash32>,
}

impl<V> MemoryCache<V> {
    pub fn new(capacity: usize) -> Self {
        MemoryCache {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &Hash32) -> Option<Arc<V>> {
        self.map.get(key).cloned()
    }

    pub fn insert(&mut self, key: Hash32, value: Arc<V>) {
        if self.map.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

/// Compiled artifacts on disk.
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(DiskCache {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &Hash32) -> PathBuf {
        self.dir.join(format!("{}.cwasm", key.to_hex()))
    }

    /// The artifact's payload, if present and intact.
    pub fn load(&self, key: &Hash32) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        if bytes.len() < 32 {
            return None;
        }
        let (sum, payload) = bytes.split_at(32);
        if hash(payload).as_bytes() != sum {
            tracing::warn!(key = %key, "ignoring a damaged compiled-contract cache entry");
            return None;
        }
        Some(payload.to_vec())
    }

    /// Stores an artifact (atomically: temporary file, then rename). Failures only cost a
    /// later recompilation, so they are logged, not returned.
    pub fn store(&self, key: &Hash32, payload: &[u8]) {
        let path = self.path(key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = Vec::with_capacity(32 + payload.len());
        bytes.extend_from_slice(hash(payload).as_bytes());
        bytes.extend_from_slice(payload);
        let result = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled-contract cache");
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
