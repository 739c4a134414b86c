//! The `ledger` suite: ops from append to final on one node that is writer and sole indexer
//! (real LMDB, fsync on every checkpoint commit), one op per entry and 100 ops per entry,
//! checkpoints of up to 1,000 entries.

use std::sync::Arc;
use std::time::Instant;

use super::Measurement;
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::ledger::{AppliedOp, Ledger, LedgerLimits, StateMachine};
use crate::store::{StateAccess, Store, StoreError, StoreOptions};

/// Every key may write; the only indexer is the genesis key; an op is `key ‖ 0x00 ‖ value`.
struct KvMachine {
    indexer: PublicKey,
}

impl StateMachine for KvMachine {
    fn genesis(&self, _state: &mut dyn StateAccess) -> Result<(), StoreError> {
        Ok(())
    }
    fn is_writer(&self, _state: &dyn StateAccess, _writer: &PublicKey) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn indexers(&self, _state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError> {
        Ok(vec![self.indexer])
    }
    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, crate::ledger::LedgerError> {
        if let Some(split) = op.bytes.iter().position(|b| *b == 0) {
            state.put(&op.bytes[..split], &op.bytes[split + 1..])?;
        }
        Ok(Some(op.entry.0.to_vec()))
    }
}

fn op(i: u64) -> Vec<u8> {
    let mut op = format!("msg/{i}").into_bytes();
    op.push(0);
    op.extend_from_slice(&[b'x'; 64]);
    op
}

fn run_case(name: &str, total: u64, ops_per_entry: u64) -> anyhow::Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default())?);
    let key = Keypair::from_seed(&[7; 32]);
    let mut ledger = Ledger::open(
        store,
        KvMachine {
            indexer: key.public(),
        },
        Hash32([1; 32]),
        Some(key),
        LedgerLimits::default(),
    )?;
    let start = Instant::now();
    let mut i = 0;
    let mut entries = 0;
    while i < total {
        let batch: Vec<Vec<u8>> = (i..(i + ops_per_entry).min(total)).map(op).collect();
        i += batch.len() as u64;
        ledger.append(batch)?;
        entries += 1;
        if entries % 1_000 == 0 {
            ledger.propose(entries)?;
        }
    }
    ledger.propose(entries)?;
    anyhow::ensure!(
        ledger.status().position == total,
        "only {} of {total} ops final",
        ledger.status().position
    );
    Ok(Measurement::throughput(name, total, start.elapsed()))
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    Ok(vec![
        run_case("ops appended → final, 1 op per entry", 10_000, 1)?,
        run_case("ops appended → final, 100 ops per entry", 100_000, 100)?,
    ])
}
