//! Exporting and importing a subnet's log.
//!
//! [`export`] writes a subnet store's log (entries, final checkpoints, acks) as one portable
//! archive ([`crate::ledger::archive`]) whose header carries the encoded [`SubnetGenesis`], so
//! the file alone is enough to rebuild the subnet. [`import`] reads such a file into a new
//! store through the ledger itself: every entry, checkpoint and ack is verified as if it came
//! from the network, every checkpoint's root is recomputed, and the result must reach the
//! final height the header announces.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::replay::{SubnetStoreError, check_empty_target, open_empty_store, open_subnet_store};
use super::{SubnetGenesis, SubnetMachine};
use crate::codec;
use crate::crypto::Hash32;
use crate::ledger::archive::{self, ArchiveReader, ArchiveStats};
use crate::ledger::{Ledger, LedgerError, LedgerLimits, Message};
use crate::runtime::Runtime;
use crate::store::StoreError;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// The store could not be used (missing, not a subnet's, not empty…).
    #[error(transparent)]
    Store(#[from] SubnetStoreError),
    /// The log file could not be read or written.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a readable log archive, or record `index` of it is damaged
    /// (records count from 1 after the header; 0 is the header).
    #[error("{path}: record {index}: {error}")]
    Archive {
        /// The file.
        path: PathBuf,
        /// The record.
        index: u64,
        /// What is wrong.
        error: LedgerError,
    },
    /// The header's genesis does not decode or is invalid.
    #[error("{path}: the header's subnet genesis is invalid: {reason}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The header's genesis defines another subnet than the header's network id.
    #[error("{path}: the header names network {header} but its genesis defines subnet {genesis}")]
    NetworkMismatch {
        /// The file.
        path: PathBuf,
        /// The header's network id.
        header: Hash32,
        /// The genesis's subnet id.
        genesis: Hash32,
    },
    /// The ledger refused record `index`.
    #[error("{path}: record {index} ({kind}) refused: {error}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The record (from 1 after the header).
        index: u64,
        /// What it is (`entry`, `checkpoint`, `ack`, `request`).
        kind: &'static str,
        /// Why.
        error: LedgerError,
    },
    /// A checkpoint of the file does not reproduce its state root.
    #[error(
        "{path}: checkpoint {height} does not reproduce its state root (expected {expected}, computed {computed})"
    )]
    Diverged {
        /// The file.
        path: PathBuf,
        /// The checkpoint.
        height: u64,
        /// The root it records.
        expected: Hash32,
        /// The root the import computed.
        computed: Hash32,
    },
    /// The import ended below the final height the header announces.
    #[error(
        "{path}: the log reaches final checkpoint {reached} but its header announces {announced}"
    )]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// The final height reached.
        reached: u64,
        /// The header's final height.
        announced: u64,
    },
}

impl From<StoreError> for LogFileError {
    fn from(e: StoreError) -> Self {
        LogFileError::Store(SubnetStoreError::Store(e))
    }
}

impl From<LedgerError> for LogFileError {
    fn from(e: LedgerError) -> Self {
        LogFileError::Store(SubnetStoreError::Ledger(e))
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The subnet id.
    pub subnet: Hash32,
    /// The subnet's channel.
    pub channel: String,
    /// The last final checkpoint written.
    pub final_height: u64,
    /// Counts of records and bytes.
    pub stats: ArchiveStats,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The subnet id.
    pub subnet: Hash32,
    /// The subnet's channel.
    pub channel: String,
    /// The last final checkpoint reached (the header's).
    pub final_height: u64,
    /// The confirmed state root after it.
    pub final_root: Hash32,
    /// Entries read.
    pub entries: u64,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Acks read.
    pub acks: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogFileError + '_ {
    move |error| LogFileError::File {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes the log of the subnet stored in `store_dir` to `file` (replaced if it exists; the
/// file appears only once complete).
pub fn export(store_dir: &Path, file: &Path) -> Result<ExportReport, LogFileError> {
    let (store, genesis) = open_subnet_store(store_dir)?;
    let subnet = genesis.id();
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let partial = tempfile::NamedTempFile::new_in(parent).map_err(file_error(file))?;
    let mut out = BufWriter::new(partial);
    let stats = archive::export(&store, &subnet, &codec::encode(&genesis), &mut out)?;
    let partial = out
        .into_inner()
        .map_err(|e| file_error(file)(e.into_error()))?;
    partial.as_file().sync_all().map_err(file_error(file))?;
    partial
        .persist(file)
        .map_err(|e| file_error(file)(e.error))?;
    // One checkpoint per height, 1 to the final one, all in the same read transaction.
    let final_height = stats.checkpoints;
    tracing::info!(%subnet, file = %file.display(), entries = stats.entries, checkpoints = stats.checkpoints, "log exported");
    Ok(ExportReport {
        subnet,
        channel: genesis.channel,
        final_height,
        stats,
    })
}

/// Imports the log archive `file` into a new subnet store in `store_dir` (new or empty),
/// running contracts on `runtime`. Every record goes through the ledger's checks; on any
/// failure the partial store is removed again.
pub fn import(
    file: &Path,
    store_dir: &Path,
    runtime: Arc<Runtime>,
) -> Result<ImportReport, LogFileError> {
    check_empty_target(store_dir)?;
    let existed = store_dir.exists();
    let result = import_into(file, store_dir, runtime);
    match &result {
        Ok(_) => {
            // The store was written without a flush per commit: flush it once.
            if let Ok(data) = File::open(store_dir.join("data.mdb")) {
                data.sync_all()
                    .map_err(file_error(&store_dir.join("data.mdb")))?;
            }
        }
        Err(e) => {
            tracing::debug!("import failed ({e}); removing the partial store");
            // The directory was new or empty: everything in it is the partial import's.
            let removed = if existed {
                std::fs::read_dir(store_dir).and_then(|entries| {
                    entries.flatten().try_for_each(|entry| {
                        let path = entry.path();
                        if path.is_dir() {
                            std::fs::remove_dir_all(path)
                        } else {
                            std::fs::remove_file(path)
                        }
                    })
                })
            } else if store_dir.exists() {
                std::fs::remove_dir_all(store_dir)
            } else {
                Ok(())
            };
            if let Err(e) = removed {
                tracing::warn!(store = %store_dir.display(), "could not remove the partial store: {e}");
            }
        }
    }
    result
}

fn import_into(
    file: &Path,
    store_dir: &Path,
    runtime: Arc<Runtime>,
) -> Result<ImportReport, LogFileError> {
    let input = File::open(file).map_err(file_error(file))?;
    let bytes = input.metadata().map_err(file_error(file))?.len();
    let archive_error = |index: u64| {
        move |error: LedgerError| LogFileError::Archive {
            path: file.to_path_buf(),
            index,
            error,
        }
    };
    let reader = ArchiveReader::new(BufReader::new(input)).map_err(archive_error(0))?;
    let header = reader.header().clone();
    let genesis: SubnetGenesis =
        codec::decode(&header.genesis).map_err(|e| LogFileError::Genesis {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
    genesis.check().map_err(|reason| LogFileError::Genesis {
        path: file.to_path_buf(),
        reason,
    })?;
    let subnet = genesis.id();
    if subnet != header.network {
        return Err(LogFileError::NetworkMismatch {
            path: file.to_path_buf(),
            header: header.network,
            genesis: subnet,
        });
    }
    let store = Arc::new(open_empty_store(store_dir)?);
    let channel = genesis.channel.clone();
    let machine = SubnetMachine::standard(genesis, runtime);
    let mut ledger = Ledger::open(store, machine, subnet, None, LedgerLimits::default())?;
    let (mut entries, mut checkpoints, mut acks) = (0u64, 0u64, 0u64);
    for (n, message) in reader.enumerate() {
        let index = n as u64 + 1;
        let message = message.map_err(archive_error(index))?;
        let kind = match &message {
            Message::Entry(_) => {
                entries += 1;
                "entry"
            }
            Message::Checkpoint(_) => {
                checkpoints += 1;
                "checkpoint"
            }
            Message::Ack(_) => {
                acks += 1;
                "ack"
            }
            Message::WantEntries { .. } | Message::WantCheckpoints { .. } => {
                return Err(LogFileError::Refused {
                    path: file.to_path_buf(),
                    index,
                    kind: "request",
                    error: LedgerError::Invalid("a log archive holds no requests".into()),
                });
            }
        };
        ledger
            .handle(message)
            .map_err(|error| LogFileError::Refused {
                path: file.to_path_buf(),
                index,
                kind,
                error,
            })?;
    }
    let status = ledger.status();
    if let Some(d) = status.divergence {
        return Err(LogFileError::Diverged {
            path: file.to_path_buf(),
            height: d.height,
            expected: d.expected,
            computed: d.computed,
        });
    }
    if status.final_height != header.final_height {
        return Err(LogFileError::Incomplete {
            path: file.to_path_buf(),
            reached: status.final_height,
            announced: header.final_height,
        });
    }
    tracing::info!(%subnet, store = %store_dir.display(), entries, checkpoints, acks, "log imported");
    Ok(ImportReport {
        subnet,
        channel,
        final_height: status.final_height,
        final_root: status.final_root,
        entries,
        checkpoints,
        acks,
        bytes,
    })
}
