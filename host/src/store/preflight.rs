//! Checks an LMDB data file before it is memory-mapped.
//!
//! LMDB maps the file and trusts it: a file cut short (a full disk during a copy, a partial
//! restore) makes the process die of SIGBUS on the first read past its end instead of returning
//! an error. Reading the two meta pages first turns that into a clear error.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// LMDB's magic number at the start of each meta page's payload.
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
/// Size of a page header (`pgno` 8, `pad` 2, `flags` 2, `lower` 2, `upper` 2).
const PAGE_HEADER: usize = 16;
/// Offsets inside the meta payload (64-bit build): magic 0, version 4, address 8, mapsize 16,
/// dbs[0] 24 (its first field `md_pad` holds the page size), dbs[1] 72, last_pg 120, txnid 128.
const META_PSIZE: usize = 24;
const META_LAST_PG: usize = 120;
const META_TXNID: usize = 128;
const META_END: usize = 136;

/// What the meta pages say about a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetaSummary {
    pub page_size: u64,
    pub last_page: u64,
    pub txnid: u64,
}

/// Why a data file cannot be opened safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreflightError {
    /// The file is shorter than its own meta page says.
    Truncated { expected: u64, actual: u64 },
    /// The file does not look like an LMDB data file at all.
    NotLmdb(String),
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn parse_meta(page: &[u8]) -> Option<MetaSummary> {
    let meta = page.get(PAGE_HEADER..PAGE_HEADER + META_END)?;
    if read_u32(meta, 0) != MDB_MAGIC {
        return None;
    }
    Some(MetaSummary {
        page_size: u64::from(read_u32(meta, META_PSIZE)),
        last_page: read_u64(meta, META_LAST_PG),
        txnid: read_u64(meta, META_TXNID),
    })
}

/// Checks `data.mdb` (if it exists) against its meta pages. A missing or empty file is fine:
/// LMDB creates it.
pub(crate) fn check_data_file(path: &Path) -> Result<Option<MetaSummary>, PreflightError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let actual = file
        .metadata()
        .map_err(|e| PreflightError::NotLmdb(e.to_string()))?
        .len();
    if actual == 0 {
        return Ok(None);
    }
    let mut first = vec![0u8; PAGE_HEADER + META_END];
    if file.read_exact(&mut first).is_err() {
        return Err(PreflightError::Truncated {
            expected: (PAGE_HEADER + META_END) as u64,
            actual,
        });
    }
    let meta0 = parse_meta(&first)
        .ok_or_else(|| PreflightError::NotLmdb("no LMDB meta page at the start".into()))?;
    let page_size = meta0.page_size;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(PreflightError::NotLmdb(format!(
            "implausible page size {page_size}"
        )));
    }
    // The second meta page starts at offset `page_size`.
    let mut whole_meta_pages = vec![0u8; 2 * page_size as usize];
    let mut file = File::open(path).map_err(|e| PreflightError::NotLmdb(e.to_string()))?;
    if file.read_exact(&mut whole_meta_pages).is_err() {
        return Err(PreflightError::Truncated {
            expected: 2 * page_size,
            actual,
        });
    }
    let meta1 = parse_meta(&whole_meta_pages[page_size as usize..]);
    // The newest committed meta page describes the live database.
    let live = match meta1 {
        Some(m1) if m1.txnid > meta0.txnid => m1,
        _ => meta0,
    };
    let expected = live.last_page.saturating_add(1).saturating_mul(page_size);
    if actual < expected {
        return Err(PreflightError::Truncated { expected, actual });
    }
    Ok(Some(live))
}
