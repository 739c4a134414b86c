//! Rebuilding a subnet's state from its log alone.
//!
//! [`replay`] opens a subnet's store, reads the subnet's genesis from its state
//! (`sys/subnet`), builds the [`SubnetMachine`] and replays every final checkpoint into a
//! scratch store (a temporary directory, or one the caller keeps) with
//! [`crate::ledger::replay::replay`], comparing each checkpoint's state and receipts roots and
//! stopping at the first divergence. It can record what one transaction did on the way
//! ([`SubnetMachine::trace`]). The source store is only read (opening it creates the ledger's
//! tables when they are missing, nothing else).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{SubnetGenesis, SubnetMachine, TxTrace};
use crate::crypto::Hash32;
use crate::ledger::LedgerError;
use crate::ledger::replay::{self as ledger_replay, ReplayOptions, ReplayProgress, ReplayReport};
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};
use crate::store::{Store, StoreError, StoreOptions};

/// Name of the compiled-contract cache directory inside a scratch or target directory.
pub const CACHE_DIR_NAME: &str = "compile-cache";

/// Why a subnet store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SubnetStoreError {
    /// The directory holds no store.
    #[error("no store at {0} (no data.mdb there)")]
    Missing(PathBuf),
    /// The store's state has no subnet record.
    #[error("{0} is not a subnet store: its state has no subnet record (sys/subnet)")]
    NotASubnet(PathBuf),
    /// A target that must be new or empty is not.
    #[error("{0} is not empty: give a new or empty directory")]
    NotEmpty(PathBuf),
    /// Something other than a directory is where a directory must be.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A file-system operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The contract runtime could not be set up.
    #[error("contract runtime: {0}")]
    Runtime(RuntimeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What to replay and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetReplayOptions {
    /// Stop after this checkpoint height (default: the source's last final checkpoint).
    pub to: Option<u64>,
    /// Also check every entry's signature and chain.
    pub verify_signatures: bool,
    /// Record what this transaction (MSB tx hash) does when it is applied.
    pub trace: Option<Hash32>,
    /// Rebuild into this directory (new or empty) and keep it; default: a temporary directory
    /// removed afterwards.
    pub into: Option<PathBuf>,
    /// Directory of compiled contracts; default: [`CACHE_DIR_NAME`] inside the scratch
    /// directory (or inside `into`).
    pub cache_dir: Option<PathBuf>,
}

/// What a subnet replay did.
#[derive(Debug, Clone)]
pub struct SubnetReplayReport {
    /// The subnet id (the ledger's network id).
    pub subnet: Hash32,
    /// The subnet's channel.
    pub channel: String,
    /// The source store's last final checkpoint.
    pub source_final_height: u64,
    /// The source store's confirmed state root (after its last final checkpoint).
    pub source_root: Hash32,
    /// What the ledger replay did (its `root` is the rebuilt root).
    pub replay: ReplayReport,
    /// The traced transaction, when one was asked for and applied.
    pub trace: Option<TxTrace>,
    /// Where the rebuilt store was kept (`into`), if anywhere.
    pub kept: Option<PathBuf>,
    /// How long the replay took.
    pub elapsed: Duration,
}

impl SubnetReplayReport {
    /// Whether the replay reached the source's last final checkpoint without divergence.
    pub fn complete(&self) -> bool {
        self.replay.divergence.is_none() && self.replay.height == self.source_final_height
    }

    /// Whether the rebuilt root equals the source's confirmed root; `None` when the replay
    /// stopped earlier (`to`, or a divergence), so the two are not comparable.
    pub fn matches_source(&self) -> Option<bool> {
        self.complete()
            .then_some(self.replay.root == self.source_root)
    }

    /// Ops applied per second.
    pub fn ops_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.replay.ops as f64 / seconds
        } else {
            0.0
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SubnetStoreError + '_ {
    move |error| SubnetStoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn store_options() -> StoreOptions {
    // Replays and imports commit once per checkpoint or entry: durability against an OS
    // crash is not worth a flush each time (a commit still survives a process crash).
    StoreOptions {
        sync: false,
        ..StoreOptions::default()
    }
}

/// Opens the existing subnet store in `dir` and reads its genesis from the state. Refuses a
/// directory without a store (it is never created) and a store that is not a subnet's.
pub fn open_subnet_store(dir: &Path) -> Result<(Store, SubnetGenesis), SubnetStoreError> {
    if !dir.join("data.mdb").is_file() {
        return Err(SubnetStoreError::Missing(dir.to_path_buf()));
    }
    let store = Store::open(dir, store_options())?;
    let genesis = SubnetMachine::genesis_in(&store.read()?)?
        .ok_or_else(|| SubnetStoreError::NotASubnet(dir.to_path_buf()))?;
    Ok((store, genesis))
}

/// Checks that `dir` is new or an empty directory, without creating anything.
pub fn check_empty_target(dir: &Path) -> Result<(), SubnetStoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SubnetStoreError::NotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // A file (or anything else that is not a directory) is in the way.
        Err(_) if dir.exists() && !dir.is_dir() => {
            Err(SubnetStoreError::NotADirectory(dir.to_path_buf()))
        }
        Err(e) => Err(io_error(dir)(e)),
    }
}

/// Opens a new store in `dir`, which must be new or empty.
pub fn open_empty_store(dir: &Path) -> Result<Store, SubnetStoreError> {
    check_empty_target(dir)?;
    Ok(Store::open(dir, store_options())?)
}

/// A contract runtime keeping its compiled artifacts in `cache_dir` (in memory only when
/// `None`).
pub fn runtime(cache_dir: Option<&Path>) -> Result<Arc<Runtime>, SubnetStoreError> {
    if let Some(dir) = cache_dir {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    Ok(Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: cache_dir.map(Path::to_path_buf),
            ..RuntimeConfig::default()
        })
        .map_err(SubnetStoreError::Runtime)?,
    ))
}

/// Replays the subnet stored in `store_dir` into a scratch store (see the module
/// documentation), calling `progress` after each checkpoint. A divergence is not an error:
/// it is in the report's `replay.divergence`.
pub fn replay(
    store_dir: &Path,
    options: &SubnetReplayOptions,
    progress: &mut dyn FnMut(&ReplayProgress),
) -> Result<SubnetReplayReport, SubnetStoreError> {
    let (source, genesis) = open_subnet_store(store_dir)?;
    let subnet = genesis.id();
    let channel = genesis.channel.clone();
    let source_root = source.state_root()?;
    let source_final_height = ledger_replay::final_height(&source)?;

    // The scratch directory: kept (`into`) or temporary.
    let scratch = match &options.into {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(io_error(Path::new("temporary directory")))?),
    };
    let (target_dir, default_cache) = match (&options.into, &scratch) {
        (Some(into), _) => (into.clone(), into.join(CACHE_DIR_NAME)),
        (None, Some(tmp)) => (tmp.path().join("store"), tmp.path().join(CACHE_DIR_NAME)),
        (None, None) => unreachable!("a scratch directory exists when `into` is not given"),
    };
    // The target first: the default cache directory lives inside it.
    let target = open_empty_store(&target_dir)?;
    let cache_dir = options.cache_dir.clone().unwrap_or(default_cache);
    let runtime = runtime(Some(&cache_dir))?;
    let machine = SubnetMachine::standard(genesis, runtime);
    if let Some(tx) = options.trace {
        machine.trace(tx);
    }
    tracing::info!(
        subnet = %subnet,
        source = %store_dir.display(),
        target = %target_dir.display(),
        final_height = source_final_height,
        "replaying"
    );
    let started = Instant::now();
    let report = ledger_replay::replay(
        &source,
        &subnet,
        &machine,
        &target,
        &ReplayOptions {
            to: options.to,
            verify_signatures: options.verify_signatures,
        },
        progress,
    )?;
    let elapsed = started.elapsed();
    if let Some(d) = &report.divergence {
        tracing::warn!(
            height = d.height,
            expected = %d.expected,
            computed = %d.computed,
            "replay diverged"
        );
    }
    drop(target);
    Ok(SubnetReplayReport {
        subnet,
        channel,
        source_final_height,
        source_root,
        replay: report,
        trace: machine.take_trace(),
        kept: options.into.clone(),
        elapsed,
    })
}
