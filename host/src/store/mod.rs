//! Storage: one LMDB environment (heed) per store directory, with
//!
//! - the consensus **state**: a flat byte keyspace whose lattice-hash root ([`Lattice`]) is
//!   updated on every write and committed in the same transaction as the write;
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

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
            lattice: None,
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
pub struct WriteBatch<'s> {
    txn: RwTxn<'s>,
    store: &'s Store,
    /// The state lattice, loaded on the first state write and saved at commit.
    lattice: Option<Lattice>,
}

impl StoreRead for WriteBatch<'_> {
    fn ro(&self) -> &RoTxn<'_> {
        &self.txn
    }
    fn store(&self) -> &Store {
        self.store
    }
    fn state_lattice(&self) -> Result<Lattice, StoreError> {
        match &self.lattice {
            Some(lattice) => Ok(lattice.clone()),
            None => {
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
        }
    }
}

impl WriteBatch<'_> {
    fn lattice_mut(&mut self) -> Result<&mut Lattice, StoreError> {
        if self.lattice.is_none() {
            self.lattice = Some(self.state_lattice()?);
        }
        Ok(self.lattice.as_mut().expect("loaded above"))
    }

    /// Sets a state key, updating the state root. Returns the previous value.
    pub fn state_put(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let store = self.store;
        let old = self.state_get(key)?;
        if old.as_deref() == Some(value) {
            return Ok(old);
        }
        store
            .state
            .put(&mut self.txn, key, value)
            .map_err(|e| store.error(e))?;
        let lattice = self.lattice_mut()?;
        if let Some(old) = &old {
            lattice.remove(key, old);
        }
        lattice.insert(key, value);
        Ok(old)
    }

    /// Deletes a state key, updating the state root. Returns the previous value.
    pub fn state_delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.store;
        let Some(old) = self.state_get(key)? else {
            return Ok(None);
        };
        store
            .state
            .delete(&mut self.txn, key)
            .map_err(|e| store.error(e))?;
        self.lattice_mut()?.remove(key, &old);
        Ok(Some(old))
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
        if let Some(lattice) = self.lattice.take() {
            store
                .meta
                .put(&mut self.txn, LATTICE_KEY, &lattice.to_bytes())
                .map_err(|e| store.error(e))?;
        }
        self.txn.commit().map_err(|e| store.error(e))
    }
}
