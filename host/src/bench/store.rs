//! The `store` suite: what a state write costs with the lattice root, per batch size.

use std::hint::black_box;
use std::time::Instant;

use super::Measurement;
use crate::store::{Lattice, Store, StoreOptions, StoreRead};

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"bench/key/000000";
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn open(sync: bool) -> anyhow::Result<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            sync,
            ..StoreOptions::default()
        },
    )?;
    Ok((dir, store))
}

/// Writes `total` keys in batches of `batch`; returns the measurement.
fn writes(name: &str, total: u64, batch: u64, sync: bool) -> anyhow::Result<Measurement> {
    let (_dir, store) = open(sync)?;
    let value = [7u8; 64];
    let start = Instant::now();
    let mut i = 0;
    while i < total {
        let mut b = store.write()?;
        for _ in 0..batch.min(total - i) {
            b.state_put(&key(i), &value)?;
            i += 1;
        }
        b.commit()?;
    }
    Ok(Measurement::throughput(name, total, start.elapsed()))
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    let mut lattice = Lattice::new();
    let value = [7u8; 64];
    out.push(Measurement::time(
        "lattice insert (1 record)",
        200_000,
        |i| lattice.insert(&key(i), &value),
    ));
    out.push(Measurement::time("lattice root", 50_000, |_| {
        black_box(lattice.root());
    }));
    out.push(writes(
        "state write, batches of 1000, no fsync",
        200_000,
        1000,
        false,
    )?);
    out.push(writes(
        "state write, batches of 100, fsync",
        50_000,
        100,
        true,
    )?);
    out.push(writes("commit of 1 write, fsync", 500, 1, true)?);
    out.push(writes("commit of 1 write, no fsync", 20_000, 1, false)?);
    let (_dir, store) = open(false)?;
    {
        let mut b = store.write()?;
        for i in 0..100_000 {
            b.state_put(&key(i), &value)?;
        }
        b.commit()?;
    }
    let read = store.read()?;
    let mut found = 0u64;
    out.push(Measurement::time("state read (100k keys)", 500_000, |i| {
        if read.state_get(&key(i % 100_000)).ok().flatten().is_some() {
            found += 1;
        }
    }));
    anyhow::ensure!(found == 500_000, "state reads missed keys");
    Ok(out)
}
