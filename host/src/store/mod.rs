//! Storage: one LMDB environment (heed) per store directory, with
//!
//! - the consensus **state**: a flat byte keyspace whose lattice-hash root ([`Lattice`]) follows
//!   every write and is committed in the same transaction as the writes;
//! - typed **tables** ([`Table`]) for everything else, keys ordered by [`TableKey`] and values
//!   in the canonical encoding;
//! - atomic **write batches**: everything written through one [`WriteBatch`] lands in one LMDB
//!   transaction, or nothing does.
//!
//! ```
//! use trac_host::store::{Store, StoreOptions, StoreRead};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
//! let mut batch = store.write().unwrap();
//! batch.state_put(b"chat/1", b"hello").unwrap();
//! let root = batch.state_root().unwrap();
//! batch.commit().unwrap();
//! assert_eq!(store.read().unwrap().state_root().unwrap(), root);
//! ```

mod lattice;
mod overlay;
mod preflight;

use std::marker::PhantomData;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};
use serde::Serialize;
use serde::de::DeserializeOwned;

use lattice::Pending;
pub use lattice::{LANES, LATTICE_BYTES, Lattice};
pub use overlay::{Diff, Overlay, StateAccess, StateView, range_through};

use crate::codec::{self, CodecError};
use crate::crypto::Hash32;

/// Largest key LMDB accepts (its compile-time `MDB_MAXKEYSIZE`).
pub const MAX_KEY_LEN: usize = 511;

/// Default map size: 64 GiB of address space. The file only grows as data is written.
pub const DEFAULT_MAP_SIZE: usize = 64 << 30;

/// One state record: key and value.
pub type StateRecord = (Vec<u8>, Vec<u8>);

const STATE_TABLE: &str = "state";
const META_TABLE: &str = "meta";
const LATTICE_KEY: &[u8] = b"state-lattice";
const MAX_TABLES: u32 = 64;

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Upper bound of the data file in bytes. Writes beyond it fail with
    /// [`StoreError::MapFull`].
    pub map_size: usize,
    /// Flush to disk on every commit (durable against power loss). Without it a commit
    /// survives a process crash but not an OS crash.
    pub sync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            map_size: DEFAULT_MAP_SIZE,
            sync: true,
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's map is full.
    #[error(
        "store {path} is full: its map size of {map_size} bytes is used up; nothing of the failed write was kept. Free disk space is not the issue: reopen with a larger map size"
    )]
    MapFull {
        /// Store directory.
        path: PathBuf,
        /// The configured map size.
        map_size: usize,
    },
    /// The data file is shorter than its own header says.
    #[error(
        "store {path} is truncated: data.mdb has {actual} bytes but its header needs at least {expected}; restore it from a copy or rebuild it with `trac replay`"
    )]
    Truncated {
        /// Store directory.
        path: PathBuf,
        /// Bytes the header needs.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The data file is damaged or not an LMDB file.
    #[error("store {path} is corrupt: {reason}")]
    Corrupt {
        /// Store directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key of length 0 or above [`MAX_KEY_LEN`].
    #[error("key of {0} bytes refused: keys must be 1 to {MAX_KEY_LEN} bytes")]
    KeyLength(usize),
    /// A stored value does not decode as its table's type.
    #[error("table {table}: stored value does not decode: {source}")]
    Decode {
        /// The table.
        table: String,
        /// The codec error.
        source: CodecError,
    },
    /// The table name is reserved or empty.
    #[error("table name {0:?} is reserved or empty")]
    TableName(String),
    /// Any other LMDB failure.
    #[error("store {path}: {source}")]
    Lmdb {
        /// Store directory.
        path: PathBuf,
        /// The LMDB error.
        source: heed::Error,
    },
    /// Creating the store directory failed.
    #[error("store {path}: {source}")]
    Io {
        /// Store directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An open store. Cheap to share by reference across threads.
pub struct Store {
    env: Env<WithoutTls>,
    path: PathBuf,
    map_size: usize,
    state: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// The data file is checked before LMDB maps it, so a truncated or foreign file gives
    /// [`StoreError::Truncated`] or [`StoreError::Corrupt`] instead of a crash.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match preflight::check_data_file(&path.join("data.mdb")) {
            Ok(_) => {}
            Err(preflight::PreflightError::Truncated { expected, actual }) => {
                return Err(StoreError::Truncated {
                    path: path.to_path_buf(),
                    expected,
                    actual,
                });
            }
            Err(preflight::PreflightError::NotLmdb(reason)) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                });
            }
        }
        let mut open = EnvOpenOptions::new().read_txn_without_tls();
        open.map_size(options.map_size).max_dbs(MAX_TABLES);
        if !options.sync {
            // SAFETY: NO_SYNC only trades durability against OS crashes for speed; LMDB's
            // consistency (a commit is all or nothing) is unaffected.
            unsafe {
                open.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: heed requires that the same environment is not opened twice in one process
        // with different options; heed itself refuses a second open of the same path
        // (`EnvAlreadyOpened`), which surfaces as an error here.
        let env = unsafe { open.open(path) }.map_err(|e| lmdb_error(path, options.map_size, e))?;
        let mut txn = env
            .write_txn()
            .map_err(|e| lmdb_error(path, options.map_size, e))?;
        let state = env
            .create_database::<Bytes, Bytes>(&mut txn, Some(STATE_TABLE))
            .map_err(|e| lmdb_error(path, options.map_size, e))?;
        let meta = env
            .create_database::<Bytes, Bytes>(&mut txn, Some(META_TABLE))
            .map_err(|e| lmdb_error(path, options.map_size, e))?;
        txn.commit()
            .map_err(|e| lmdb_error(path, options.map_size, e))?;
        Ok(Store {
            env,
            path: path.to_path_buf(),
            map_size: options.map_size,
            state,
            meta,
        })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating if needed) the typed table `name`.
    pub fn table<K: TableKey, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Table<K, V>, StoreError> {
        if name.is_empty() || name == STATE_TABLE || name == META_TABLE {
            return Err(StoreError::TableName(name.to_string()));
        }
        let mut txn = self.env.write_txn().map_err(|e| self.error(e))?;
        let db = self
            .env
            .create_database::<Bytes, Bytes>(&mut txn, Some(name))
            .map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))?;
        Ok(Table {
            db,
            name: name.to_string(),
            _types: PhantomData,
        })
    }

    /// Starts a read transaction: a consistent snapshot that later commits do not change.
    pub fn read(&self) -> Result<ReadTxn<'_>, StoreError> {
        Ok(ReadTxn {
            txn: self.env.read_txn().map_err(|e| self.error(e))?,
            store: self,
        })
    }

    /// Starts a write batch. Only one batch is open at a time per store; a second caller waits
    /// for the first to commit or drop.
    pub fn write(&self) -> Result<WriteBatch<'_>, StoreError> {
        Ok(WriteBatch {
            txn: self.env.write_txn().map_err(|e| self.error(e))?,
            store: self,
            lattice: Mutex::new(BatchLattice::default()),
        })
    }

    /// The committed state root.
    pub fn state_root(&self) -> Result<Hash32, StoreError> {
        self.read()?.state_root()
    }

    fn error(&self, e: heed::Error) -> StoreError {
        lmdb_error(&self.path, self.map_size, e)
    }
}

fn lmdb_error(path: &Path, map_size: usize, e: heed::Error) -> StoreError {
    match e {
        heed::Error::Mdb(MdbError::MapFull) => StoreError::MapFull {
            path: path.to_path_buf(),
            map_size,
        },
        heed::Error::Mdb(MdbError::Corrupted | MdbError::Invalid | MdbError::PageNotFound) => {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        source => StoreError::Lmdb {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyLength(key.len()));
    }
    Ok(())
}

/// A key type of a typed table: its byte form decides the order of iteration.
pub trait TableKey {
    /// The key's bytes (1 to [`MAX_KEY_LEN`] bytes).
    fn key_bytes(&self) -> Vec<u8>;
}

impl TableKey for u64 {
    /// Big-endian, so numeric order is byte order.
    fn key_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
}

impl TableKey for Hash32 {
    fn key_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl TableKey for Vec<u8> {
    fn key_bytes(&self) -> Vec<u8> {
        self.clone()
    }
}

impl TableKey for String {
    fn key_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl<A: TableKey, B: TableKey> TableKey for (A, B) {
    /// Concatenation; use fixed-size first components so the order is well defined.
    fn key_bytes(&self) -> Vec<u8> {
        let mut out = self.0.key_bytes();
        out.extend_from_slice(&self.1.key_bytes());
        out
    }
}

/// A typed table: keys by [`TableKey`], values in the canonical encoding.
pub struct Table<K, V> {
    db: Database<Bytes, Bytes>,
    name: String,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Table {
            db: self.db,
            name: self.name.clone(),
            _types: PhantomData,
        }
    }
}

impl<K: TableKey, V: Serialize + DeserializeOwned> Table<K, V> {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, StoreError> {
        codec::decode(bytes).map_err(|source| StoreError::Decode {
            table: self.name.clone(),
            source,
        })
    }
}

/// Read access shared by [`ReadTxn`] and [`WriteBatch`] (a batch reads its own writes).
pub trait StoreRead {
    #[doc(hidden)]
    fn ro(&self) -> &RoTxn<'_>;
    #[doc(hidden)]
    fn store(&self) -> &Store;

    /// The value of a state key.
    fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.store();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        Ok(store
            .state
            .get(self.ro(), key)
            .map_err(|e| store.error(e))?
            .map(<[u8]>::to_vec))
    }

    /// State records with `start <= key < end` (no upper bound when `end` is `None`), in key
    /// order, at most `limit` of them.
    fn state_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        let store = self.store();
        let upper = match end {
            // No key is below the empty key.
            Some([]) => return Ok(Vec::new()),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        // LMDB refuses an empty key even as a bound; every key is at or above it.
        let lower = match start {
            [] => Bound::Unbounded,
            start => Bound::Included(start),
        };
        let range = (lower, upper);
        let iter = store
            .state
            .range(self.ro(), &range)
            .map_err(|e| store.error(e))?;
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(|e| store.error(e))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Number of records in the state.
    fn state_len(&self) -> Result<u64, StoreError> {
        let store = self.store();
        store.state.len(self.ro()).map_err(|e| store.error(e))
    }

    /// The state root as of this transaction.
    fn state_root(&self) -> Result<Hash32, StoreError> {
        Ok(self.state_lattice()?.root())
    }

    /// The state lattice as of this transaction.
    fn state_lattice(&self) -> Result<Lattice, StoreError> {
        let store = self.store();
        match store
            .meta
            .get(self.ro(), LATTICE_KEY)
            .map_err(|e| store.error(e))?
        {
            None => Ok(Lattice::new()),
            Some(bytes) => Lattice::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
                path: store.path.clone(),
                reason: format!("state lattice has {} bytes", bytes.len()),
            }),
        }
    }

    /// The value of `key` in a typed table.
    fn get<K: TableKey, V: Serialize + DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<Option<V>, StoreError> {
        let store = self.store();
        let bytes = key.key_bytes();
        check_key(&bytes)?;
        match table
            .db
            .get(self.ro(), &bytes)
            .map_err(|e| store.error(e))?
        {
            None => Ok(None),
            Some(raw) => table.decode(raw).map(Some),
        }
    }

    /// Up to `limit` entries of a typed table with key bytes starting with `prefix`, in order.
    fn scan_prefix<K: TableKey, V: Serialize + DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, StoreError> {
        let store = self.store();
        // LMDB refuses an empty key as a prefix; the empty prefix means the whole table.
        let (whole, prefixed) = if prefix.is_empty() {
            let whole = table.db.iter(self.ro()).map_err(|e| store.error(e))?;
            (Some(whole), None)
        } else {
            let prefixed = table
                .db
                .prefix_iter(self.ro(), prefix)
                .map_err(|e| store.error(e))?;
            (None, Some(prefixed))
        };
        let iter = whole
            .into_iter()
            .flatten()
            .chain(prefixed.into_iter().flatten());
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(|e| store.error(e))?;
            out.push((k.to_vec(), table.decode(v)?));
        }
        Ok(out)
    }
}

/// A read snapshot.
pub struct ReadTxn<'s> {
    txn: RoTxn<'s, WithoutTls>,
    store: &'s Store,
}

impl StoreRead for ReadTxn<'_> {
    fn ro(&self) -> &RoTxn<'_> {
        &self.txn
    }
    fn store(&self) -> &Store {
        self.store
    }
}

/// An atomic batch of writes: [`WriteBatch::commit`] applies all of them in one LMDB
/// transaction; dropping the batch discards all of them.
///
/// State writes reach LMDB at once (reads and ranges of the batch see them); the state lattice
/// takes them in when the root is asked for or at commit, once per key written.
pub struct WriteBatch<'s> {
    txn: RwTxn<'s>,
    store: &'s Store,
    /// The state lattice and the state writes not folded into it yet (behind a lock because
    /// asking for the root folds them; writes reach it without locking).
    lattice: Mutex<BatchLattice>,
}

/// The state lattice of a [`WriteBatch`].
#[derive(Default)]
struct BatchLattice {
    /// The lattice as of the last fold: loaded on the first fold, saved at commit.
    folded: Option<Lattice>,
    /// State writes since the last fold.
    pending: Pending,
    /// Whether the batch changed the state (the lattice is then saved at commit).
    changed: bool,
}

impl StoreRead for WriteBatch<'_> {
    fn ro(&self) -> &RoTxn<'_> {
        &self.txn
    }
    fn store(&self) -> &Store {
        self.store
    }
    fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let lattice = self.lattice.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(now) = lattice.pending.get(key) {
                return Ok(now.map(<[u8]>::to_vec));
            }
        }
        let store = self.store;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        Ok(store
            .state
            .get(&self.txn, key)
            .map_err(|e| store.error(e))?
            .map(<[u8]>::to_vec))
    }
    fn state_lattice(&self) -> Result<Lattice, StoreError> {
        let mut lattice = self.lattice.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(self.fold(&mut lattice)?.clone())
    }
}

impl WriteBatch<'_> {
    /// The lattice as committed before this batch.
    fn stored_lattice(&self) -> Result<Lattice, StoreError> {
        let store = self.store;
        match store
            .meta
            .get(&self.txn, LATTICE_KEY)
            .map_err(|e| store.error(e))?
        {
            None => Ok(Lattice::new()),
            Some(bytes) => Lattice::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
                path: store.path.clone(),
                reason: format!("state lattice has {} bytes", bytes.len()),
            }),
        }
    }

    /// Folds the pending writes into the lattice (loading it first if needed).
    fn fold<'l>(&self, lattice: &'l mut BatchLattice) -> Result<&'l Lattice, StoreError> {
        if lattice.folded.is_none() {
            lattice.folded = Some(self.stored_lattice()?);
        }
        let folded = lattice.folded.as_mut().expect("loaded above");
        lattice.pending.fold_into(folded);
        Ok(folded)
    }

    /// Sets (`Some`) or deletes (`None`) a state key. Returns the previous value when
    /// `want_old`.
    fn state_set(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        want_old: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.store;
        let lattice = self
            .lattice
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(now) = lattice.pending.now_mut(key) {
            // Written before in this batch: the lattice takes the key in once, at the fold.
            if now.as_deref() == value {
                return Ok(if want_old { now.clone() } else { None });
            }
            match value {
                Some(value) => store.state.put(&mut self.txn, key, value),
                None => store.state.delete(&mut self.txn, key).map(|_| ()),
            }
            .map_err(|e| store.error(e))?;
            return Ok(std::mem::replace(now, value.map(<[u8]>::to_vec)));
        }
        let old = if key.is_empty() || key.len() > MAX_KEY_LEN {
            None
        } else {
            store
                .state
                .get(&self.txn, key)
                .map_err(|e| store.error(e))?
                .map(<[u8]>::to_vec)
        };
        if old.as_deref() == value {
            return Ok(old);
        }
        match value {
            Some(value) => store.state.put(&mut self.txn, key, value),
            None => store.state.delete(&mut self.txn, key).map(|_| ()),
        }
        .map_err(|e| store.error(e))?;
        lattice.changed = true;
        let pending = &mut lattice.pending;
        if want_old {
            pending.first_write(key, old.clone(), value);
            Ok(old)
        } else {
            pending.first_write(key, old, value);
            Ok(None)
        }
    }

    /// Sets a state key, updating the state root. Returns the previous value.
    pub fn state_put(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        self.state_set(key, Some(value), true)
    }

    /// Deletes a state key, updating the state root. Returns the previous value.
    pub fn state_delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.state_set(key, None, true)
    }

    /// Sets a state key like [`Self::state_put`], without returning the previous value.
    pub(crate) fn state_put_quiet(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        self.state_set(key, Some(value), false).map(|_| ())
    }

    /// Deletes a state key like [`Self::state_delete`], without returning the previous value.
    pub(crate) fn state_delete_quiet(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.state_set(key, None, false).map(|_| ())
    }

    /// Writes `diff` into the state and sets the state lattice to `lattice`, the lattice of
    /// the state after those writes as an [`Overlay`] over this batch's committed state
    /// computed it ([`Overlay::lattice`]): the records are not hashed again. Comes before any
    /// other state write of the batch (their changes would be lost from the lattice). Debug
    /// builds check the lattice against the one the writes give.
    pub(crate) fn state_write_folded(
        &mut self,
        diff: &Diff,
        lattice: &Lattice,
    ) -> Result<(), StoreError> {
        #[cfg(debug_assertions)]
        {
            for (key, value) in diff {
                match value {
                    Some(value) => self.state_put_quiet(key, value)?,
                    None => self.state_delete_quiet(key)?,
                }
            }
            let computed = self.state_lattice()?;
            debug_assert!(
                computed == *lattice,
                "the lattice handed over ({}) differs from the writes' ({})",
                lattice.root(),
                computed.root()
            );
        }
        #[cfg(not(debug_assertions))]
        {
            let store = self.store;
            for (key, value) in diff {
                match value {
                    Some(value) => {
                        check_key(key)?;
                        store.state.put(&mut self.txn, key, value)
                    }
                    None => store.state.delete(&mut self.txn, key).map(|_| ()),
                }
                .map_err(|e| store.error(e))?;
            }
        }
        let batch = self
            .lattice
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        batch.pending = Pending::default();
        batch.folded = Some(lattice.clone());
        batch.changed = true;
        Ok(())
    }

    /// Sets `key` in a typed table.
    pub fn put<K: TableKey, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), StoreError> {
        let bytes = key.key_bytes();
        check_key(&bytes)?;
        let store = self.store;
        table
            .db
            .put(&mut self.txn, &bytes, &codec::encode(value))
            .map_err(|e| store.error(e))
    }

    /// Deletes `key` from a typed table; whether it existed.
    pub fn delete<K: TableKey, V: Serialize + DeserializeOwned>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<bool, StoreError> {
        let bytes = key.key_bytes();
        check_key(&bytes)?;
        let store = self.store;
        table
            .db
            .delete(&mut self.txn, &bytes)
            .map_err(|e| store.error(e))
    }

    /// Commits every write of the batch atomically (the state lattice included).
    pub fn commit(mut self) -> Result<(), StoreError> {
        let store = self.store;
        let mut lattice = std::mem::take(
            self.lattice
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if lattice.changed {
            let bytes = self.fold(&mut lattice)?.to_bytes();
            store
                .meta
                .put(&mut self.txn, LATTICE_KEY, &bytes)
                .map_err(|e| store.error(e))?;
        }
        self.txn.commit().map_err(|e| store.error(e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    /// The lattice of the records of `model`, built eagerly.
    fn lattice_of(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Lattice {
        let mut lattice = Lattice::new();
        for (key, value) in model {
            lattice.insert(key, value);
        }
        lattice
    }

    /// A write of a test: key index, and a value (`None`: delete), or a request for the root.
    #[derive(Debug, Clone)]
    enum Step {
        Write(u8, Option<u8>),
        Root,
    }

    fn steps(keys: u8) -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                8 => (0..keys, prop::option::of(0u8..4)).prop_map(|(k, v)| Step::Write(k, v)),
                1 => Just(Step::Root),
            ],
            0..200,
        )
    }

    fn key(k: u8) -> Vec<u8> {
        format!("key/{k}").into_bytes()
    }

    fn value(k: u8, v: u8) -> Vec<u8> {
        vec![k, v, 7]
    }

    /// Applies a write step to `state` and to `model`; false for a root step.
    fn write(
        state: &mut dyn StateAccess,
        model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        step: &Step,
    ) -> bool {
        match *step {
            Step::Write(k, Some(v)) => {
                state.put(&key(k), &value(k, v)).unwrap();
                model.insert(key(k), value(k, v));
            }
            Step::Write(k, None) => {
                state.delete(&key(k)).unwrap();
                model.remove(&key(k));
            }
            Step::Root => return false,
        }
        true
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            sync: false,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        (dir, store)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Writes folded into the lattice when the root is asked for (once per key) give the
        /// root of the set of records, whatever the writes and wherever the roots are asked;
        /// every write returns the previous value and every read sees the writes.
        #[test]
        fn batch_root_is_the_lattice_of_the_records(
            first in steps(6),
            second in steps(6),
        ) {
            let (_dir, store) = open();
            let mut model = BTreeMap::new();
            for steps in [first, second] {
                let mut batch = store.write().unwrap();
                for step in steps {
                    match step {
                        Step::Write(k, Some(v)) => {
                            let old = batch.state_put(&key(k), &value(k, v)).unwrap();
                            prop_assert_eq!(old, model.insert(key(k), value(k, v)));
                        }
                        Step::Write(k, None) => {
                            let old = batch.state_delete(&key(k)).unwrap();
                            prop_assert_eq!(old, model.remove(&key(k)));
                        }
                        Step::Root => {
                            prop_assert_eq!(batch.state_root().unwrap(), lattice_of(&model).root());
                        }
                    }
                    for k in 0..6 {
                        prop_assert_eq!(batch.state_get(&key(k)).unwrap(), model.get(&key(k)).cloned());
                    }
                }
                prop_assert_eq!(batch.state_root().unwrap(), lattice_of(&model).root());
                batch.commit().unwrap();
                prop_assert_eq!(store.state_root().unwrap(), lattice_of(&model).root());
            }
        }

        /// The same through [`StateAccess`] on a batch and on an overlay over the committed
        /// state.
        #[test]
        fn overlay_root_is_the_lattice_of_the_records(base in steps(6), writes in steps(6)) {
            let (_dir, store) = open();
            let mut model = BTreeMap::new();
            let mut batch = store.write().unwrap();
            for step in base {
                if let Step::Write(k, v) = step {
                    match v {
                        Some(v) => {
                            StateAccess::put(&mut batch, &key(k), &value(k, v)).unwrap();
                            model.insert(key(k), value(k, v));
                        }
                        None => {
                            StateAccess::delete(&mut batch, &key(k)).unwrap();
                            model.remove(&key(k));
                        }
                    }
                }
            }
            prop_assert_eq!(StateAccess::root(&batch).unwrap(), lattice_of(&model).root());
            batch.commit().unwrap();
            let read = store.read().unwrap();
            let mut overlay = Overlay::new(&read).unwrap();
            for step in writes {
                if !write(&mut overlay, &mut model, &step) {
                    prop_assert_eq!(overlay.root().unwrap(), lattice_of(&model).root());
                }
            }
            prop_assert_eq!(overlay.root().unwrap(), lattice_of(&model).root());
        }

        /// Overlays stacked on the writes of earlier ones ([`Overlay::with_layers`]) read
        /// through them and have the root of the records; a batch that takes the lowest
        /// layer's writes and lattice as they are ([`WriteBatch::state_write_folded`]) commits
        /// that state, and the layers above then read the same over the new committed state
        /// (debug builds also check the lattice against the one the writes give).
        #[test]
        fn layered_overlays_read_through_and_commit_as_they_are(
            base in steps(6),
            first in steps(6),
            second in steps(6),
        ) {
            let (_dir, store) = open();
            let mut model = BTreeMap::new();
            let mut batch = store.write().unwrap();
            for step in base {
                if let Step::Write(k, Some(v)) = step {
                    batch.state_put(&key(k), &value(k, v)).unwrap();
                    model.insert(key(k), value(k, v));
                }
            }
            batch.commit().unwrap();
            let read = store.read().unwrap();
            let mut layers: Vec<Arc<Diff>> = Vec::new();
            let mut lattice = Overlay::new(&read).unwrap().lattice();
            let mut models = Vec::new();
            for steps in [first, second] {
                let mut overlay = Overlay::with_layers(&read, layers.clone(), lattice.clone());
                for step in steps {
                    if !write(&mut overlay, &mut model, &step) {
                        let all = overlay.range(b"key/", None, 100).unwrap();
                        let expected: Vec<_> = model.clone().into_iter().collect();
                        prop_assert_eq!(all, expected);
                    }
                }
                prop_assert_eq!(overlay.root().unwrap(), lattice_of(&model).root());
                lattice = overlay.lattice();
                models.push((model.clone(), lattice.clone()));
                layers.push(Arc::new(overlay.into_diff()));
            }
            drop(read);
            // The lowest layer becomes the committed state.
            let mut batch = store.write().unwrap();
            batch.state_write_folded(&layers[0], &models[0].1).unwrap();
            batch.commit().unwrap();
            prop_assert_eq!(store.state_root().unwrap(), lattice_of(&models[0].0).root());
            let read = store.read().unwrap();
            for k in 0..6 {
                prop_assert_eq!(read.state_get(&key(k)).unwrap(), models[0].0.get(&key(k)).cloned());
            }
            // The top layer over the new committed state reads the final model.
            let overlay = Overlay::with_layers(&read, layers[1..].to_vec(), lattice.clone());
            for k in 0..6 {
                prop_assert_eq!(overlay.get(&key(k)).unwrap(), model.get(&key(k)).cloned());
            }
            let all = overlay.range(b"key/", None, 100).unwrap();
            prop_assert_eq!(all, model.clone().into_iter().collect::<Vec<_>>());
            prop_assert_eq!(overlay.root().unwrap(), lattice_of(&model).root());
        }
    }

    /// Enough keys to fold on several threads give the lattice folded on one.
    #[test]
    fn many_writes_fold_as_few() {
        let (_dir, store) = open();
        let mut model = BTreeMap::new();
        let mut batch = store.write().unwrap();
        for i in 0..3_000u32 {
            let key = format!("k/{}", i % 2_000).into_bytes();
            let value = i.to_be_bytes().to_vec();
            if i % 7 == 3 {
                batch.state_delete(&key).unwrap();
                model.remove(&key);
            } else {
                batch.state_put(&key, &value).unwrap();
                model.insert(key, value);
            }
        }
        assert_eq!(batch.state_root().unwrap(), lattice_of(&model).root());
        batch.commit().unwrap();
        assert_eq!(store.state_root().unwrap(), lattice_of(&model).root());
    }

    /// A batch that writes nothing, or only values already there, leaves the stored lattice
    /// record as it was.
    #[test]
    fn unchanged_state_saves_no_lattice() {
        let (_dir, store) = open();
        let batch = store.write().unwrap();
        batch.state_root().unwrap();
        batch.commit().unwrap();
        let read = store.read().unwrap();
        assert!(store.meta.get(&read.txn, LATTICE_KEY).unwrap().is_none());
        drop(read);
        let mut batch = store.write().unwrap();
        batch.state_put(b"a", b"1").unwrap();
        batch.commit().unwrap();
        let root = store.state_root().unwrap();
        let mut batch = store.write().unwrap();
        assert_eq!(batch.state_put(b"a", b"1").unwrap(), Some(b"1".to_vec()));
        assert_eq!(batch.state_delete(b"b").unwrap(), None);
        batch.commit().unwrap();
        assert_eq!(store.state_root().unwrap(), root);
    }
}
