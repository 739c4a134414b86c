//! The ledger engine, in process.

use std::sync::Arc;

use trac_host::crypto::{Hash32, Keypair};
use trac_host::ledger::{Ledger, LedgerLimits, Message};
use trac_host::store::{Store, StoreOptions};

use crate::ledger_support::{TestMachine, TestOp};

fn open(dir: &std::path::Path, key: &Keypair, admin: &Keypair) -> Ledger<TestMachine> {
    let store = Arc::new(
        Store::open(
            dir,
            StoreOptions {
                sync: false,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    Ledger::open(
        store,
        TestMachine {
            admin: admin.public(),
        },
        Hash32([9; 32]),
        Some(key.clone()),
        LedgerLimits::default(),
    )
    .unwrap()
}

#[test]
fn single_indexer_smoke() {
    let admin = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let mut a = open(d1.path(), &admin, &admin);
    let mut b = open(d2.path(), &bob, &admin);
    let e1 = a
        .append(vec![
            TestOp::Put {
                key: "x".into(),
                value: "1".into(),
            }
            .encode(),
            TestOp::AddWriter(bob.public()).encode(),
        ])
        .unwrap();
    b.handle(Message::Entry(e1)).unwrap();
    let e2 = b
        .append(vec![
            TestOp::Put {
                key: "y".into(),
                value: "2".into(),
            }
            .encode(),
        ])
        .unwrap();
    assert_eq!(
        e2.body.heads.len(),
        1,
        "bob's entry names admin's as a causal head"
    );
    a.handle(Message::Entry(e2)).unwrap();
    let out = a.propose(1000).unwrap();
    assert_eq!(a.status().final_height, 1);
    for m in out {
        b.handle(m).unwrap();
    }
    assert_eq!(b.status().final_height, 1, "{:?}", b.status());
    assert_eq!(a.status().final_root, b.status().final_root);
    let y = b.read(true, |s| s.get(b"app/y").unwrap()).unwrap();
    assert_eq!(y.as_deref(), Some(&b"2"[..]));
}
