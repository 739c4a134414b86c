//! A small state machine for ledger tests: keyed puts, writer and indexer management.

use serde::{Deserialize, Serialize};
use trac_host::codec;
use trac_host::crypto::PublicKey;
use trac_host::ledger::{AppliedOp, StateMachine};
use trac_host::store::{StateAccess, StoreError};

/// The ops of the test machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestOp {
    /// Sets `key` to `value` (keys under `app/`).
    Put { key: String, value: String },
    /// Admits a writer (the admin only).
    AddWriter(PublicKey),
    /// Removes a writer (the admin only).
    RemoveWriter(PublicKey),
    /// Replaces the indexer set, sequencer first (the admin only).
    SetIndexers(Vec<PublicKey>),
}

impl TestOp {
    /// The op's bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// The test machine: the admin (genesis key) is the first writer and indexer.
#[derive(Debug, Clone)]
pub struct TestMachine {
    /// The admin.
    pub admin: PublicKey,
}

fn writer_key(k: &PublicKey) -> Vec<u8> {
    format!("sys/writer/{}", k.to_hex()).into_bytes()
}

impl StateMachine for TestMachine {
    fn genesis(&self, state: &mut dyn StateAccess) -> Result<(), StoreError> {
        state.put(&writer_key(&self.admin), b"1")?;
        state.put(b"sys/indexers", &codec::encode(&vec![self.admin]))
    }

    fn is_writer(&self, state: &dyn StateAccess, writer: &PublicKey) -> Result<bool, StoreError> {
        Ok(state.get(&writer_key(writer))?.is_some())
    }

    fn indexers(&self, state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError> {
        let bytes = state.get(b"sys/indexers")?.unwrap_or_default();
        Ok(codec::decode(&bytes).unwrap_or_else(|_| vec![self.admin]))
    }

    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Ok(decoded) = codec::decode::<TestOp>(op.bytes) else {
            return Ok(Some(b"malformed".to_vec()));
        };
        let admin = op.writer == self.admin;
        let outcome: &[u8] = match decoded {
            TestOp::Put { key, value } => {
                state.put(format!("app/{key}").as_bytes(), value.as_bytes())?;
                state.put(b"app-last-position", &op.position.to_be_bytes())?;
                b"ok"
            }
            TestOp::AddWriter(k) if admin => {
                state.put(&writer_key(&k), b"1")?;
                b"ok"
            }
            TestOp::RemoveWriter(k) if admin => {
                state.delete(&writer_key(&k))?;
                b"ok"
            }
            TestOp::SetIndexers(set) if admin && !set.is_empty() => {
                state.put(b"sys/indexers", &codec::encode(&set))?;
                b"ok"
            }
            _ => b"refused",
        };
        let mut receipt = op.entry.0.to_vec();
        receipt.extend_from_slice(&op.index.to_be_bytes());
        receipt.extend_from_slice(outcome);
        Ok(Some(receipt))
    }
}
