//! A ledger's log as one portable file: a header, then every entry, checkpoint and ack as
//! length-prefixed canonical [`Message`]s, so that a log replays on another machine.
//!
//! Layout: `"TRACLOG1"` ‖ u32be(len) ‖ encode(ArchiveHeader) ‖ { u32be(len) ‖ encode(Message) }*
//! ‖ u32be(0). Entries come first (each log in sequence order), then checkpoints by height,
//! each followed by its acks.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::engine::{FINAL_KEY, Tables};
use super::{LedgerError, Message};
use crate::codec;
use crate::crypto::Hash32;
use crate::store::{Store, StoreRead};

/// The file's magic bytes.
pub const ARCHIVE_MAGIC: &[u8; 8] = b"TRACLOG1";

/// Largest record an archive may hold (an entry is at most 4 MiB of ops).
const MAX_RECORD_BYTES: usize = 8 << 20;

/// What the file is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    /// Format version (1).
    pub version: u8,
    /// The ledger's network id.
    pub network: Hash32,
    /// What the state machine needs to start (for a subnet: its encoded genesis).
    pub genesis: ByteBuf,
    /// The last final checkpoint in the file.
    pub final_height: u64,
}

/// Counts of what an archive holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Entries.
    pub entries: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// Acks.
    pub acks: u64,
    /// Bytes written or read.
    pub bytes: u64,
}

fn io_error(e: std::io::Error) -> LedgerError {
    LedgerError::Invalid(format!("archive i/o: {e}"))
}

fn write_record(
    out: &mut dyn Write,
    bytes: &[u8],
    stats: &mut ArchiveStats,
) -> Result<(), LedgerError> {
    out.write_all(&(bytes.len() as u32).to_be_bytes())
        .and_then(|()| out.write_all(bytes))
        .map_err(io_error)?;
    stats.bytes += 4 + bytes.len() as u64;
    Ok(())
}

/// Writes the ledger of `network` in `store` (final checkpoints only, with the entries they
/// include and every stored entry beyond them) to `out`.
pub fn export(
    store: &Store,
    network: &Hash32,
    genesis: &[u8],
    out: &mut dyn Write,
) -> Result<ArchiveStats, LedgerError> {
    let tables = Tables::open(store)?;
    let read = store.read()?;
    let final_height = read
        .get(&tables.meta, &FINAL_KEY.to_string())?
        .map_or(0, |i| i.height);
    let mut stats = ArchiveStats::default();
    out.write_all(ARCHIVE_MAGIC).map_err(io_error)?;
    let header = ArchiveHeader {
        version: 1,
        network: *network,
        genesis: ByteBuf::from(genesis.to_vec()),
        final_height,
    };
    write_record(out, &codec::encode(&header), &mut stats)?;
    // Keys sort by writer then big-endian seq: each log in order.
    for (_, entry) in read.scan_prefix(&tables.entries, &[], usize::MAX)? {
        write_record(out, &codec::encode(&Message::Entry(entry)), &mut stats)?;
        stats.entries += 1;
    }
    for height in 1..=final_height {
        let Some(checkpoint) = read.get(&tables.checkpoints, &height)? else {
            return Err(LedgerError::Invalid(format!(
                "checkpoint {height} is missing from the store"
            )));
        };
        write_record(
            out,
            &codec::encode(&Message::Checkpoint(checkpoint)),
            &mut stats,
        )?;
        stats.checkpoints += 1;
        for (_, ack) in read.scan_prefix(&tables.acks, &height.to_be_bytes(), usize::MAX)? {
            write_record(out, &codec::encode(&Message::Ack(ack)), &mut stats)?;
            stats.acks += 1;
        }
    }
    out.write_all(&0u32.to_be_bytes()).map_err(io_error)?;
    out.flush().map_err(io_error)?;
    stats.bytes += ARCHIVE_MAGIC.len() as u64 + 4;
    Ok(stats)
}

/// Reads an archive: its header, then its messages one by one.
pub struct ArchiveReader<R: Read> {
    input: R,
    header: ArchiveHeader,
    done: bool,
}

fn read_record<R: Read>(input: &mut R) -> Result<Option<Vec<u8>>, LedgerError> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|e| LedgerError::Invalid(format!("archive is truncated (no end marker): {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_RECORD_BYTES {
        return Err(LedgerError::TooLarge(format!(
            "archive record of {len} bytes (at most {MAX_RECORD_BYTES})"
        )));
    }
    let mut bytes = vec![0u8; len];
    input
        .read_exact(&mut bytes)
        .map_err(|e| LedgerError::Invalid(format!("archive is truncated: {e}")))?;
    Ok(Some(bytes))
}

impl<R: Read> ArchiveReader<R> {
    /// Opens an archive and reads its header.
    pub fn new(mut input: R) -> Result<Self, LedgerError> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| LedgerError::Invalid(format!("not a log archive: {e}")))?;
        if &magic != ARCHIVE_MAGIC {
            return Err(LedgerError::Invalid(
                "not a log archive (bad magic bytes)".into(),
            ));
        }
        let bytes = read_record(&mut input)?
            .ok_or_else(|| LedgerError::Invalid("archive has no header".into()))?;
        let header: ArchiveHeader = codec::decode(&bytes)
            .map_err(|e| LedgerError::Invalid(format!("archive header: {e}")))?;
        if header.version != 1 {
            return Err(LedgerError::Version {
                what: "archive",
                got: header.version,
            });
        }
        Ok(ArchiveReader {
            input,
            header,
            done: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }
}

impl<R: Read> Iterator for ArchiveReader<R> {
    type Item = Result<Message, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match read_record(&mut self.input) {
            Ok(Some(bytes)) => Some(
                codec::decode::<Message>(&bytes)
                    .map_err(|e| LedgerError::Invalid(format!("archive record: {e}"))),
            ),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
