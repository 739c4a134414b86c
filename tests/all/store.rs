//! The LMDB store (`trac_host::store`) on real files: the lattice state root, atomic batches,
//! typed tables, and clean errors for a full map and damaged data files.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use trac_host::crypto::Hash32;
use trac_host::store::{Lattice, MAX_KEY_LEN, Store, StoreError, StoreOptions, StoreRead};

use crate::support::{pseudo_random_bytes, tempdir};

/// Small map, no fsync: fast stores for tests that do not test those options.
const FAST: StoreOptions = StoreOptions {
    map_size: 64 << 20,
    sync: false,
};

fn open(path: &Path) -> Store {
    Store::open(path, FAST).expect("open store")
}

/// Writes `pairs` in order, committing every `chunk` writes (and at the end).
fn apply(store: &Store, pairs: &[(Vec<u8>, Vec<u8>)], chunk: usize) {
    for part in pairs.chunks(chunk.max(1)) {
        let mut batch = store.write().unwrap();
        for (k, v) in part {
            batch.state_put(k, v).unwrap();
        }
        batch.commit().unwrap();
    }
}

fn lattice_of<'a>(records: impl IntoIterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Lattice {
    let mut lattice = Lattice::new();
    for (k, v) in records {
        lattice.insert(k, v);
    }
    lattice
}

fn records() -> impl Strategy<Value = BTreeMap<Vec<u8>, Vec<u8>>> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 1..40),
        proptest::collection::vec(any::<u8>(), 0..100),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The same records written in two orders, in one or several batches, give the same root,
    /// and that root is the lattice of the set.
    #[test]
    fn root_is_independent_of_write_order(
        (pairs, shuffled) in records().prop_flat_map(|map| {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = map.into_iter().collect();
            (Just(pairs.clone()), Just(pairs).prop_shuffle())
        }),
        chunk_a in 1..50usize,
        chunk_b in 1..50usize,
    ) {
        let (dir_a, dir_b) = (tempdir(), tempdir());
        let (a, b) = (open(dir_a.path()), open(dir_b.path()));
        apply(&a, &pairs, chunk_a);
        apply(&b, &shuffled, chunk_b);
        let root = a.state_root().unwrap();
        prop_assert_eq!(root, b.state_root().unwrap());
        let expected = lattice_of(pairs.iter().map(|(k, v)| (k, v)));
        prop_assert_eq!(root, expected.root());
        prop_assert_eq!(a.read().unwrap().state_lattice().unwrap(), expected);
        prop_assert_eq!(b.read().unwrap().state_len().unwrap(), pairs.len() as u64);
        if pairs.is_empty() {
            prop_assert_eq!(root, Lattice::new().root());
        } else {
            prop_assert_ne!(root, Lattice::new().root());
        }
    }

    /// Putting a new record and deleting it again restores the previous root.
    #[test]
    fn put_then_delete_restores_the_root(
        base in records(),
        key in proptest::collection::vec(any::<u8>(), 1..40),
        value in proptest::collection::vec(any::<u8>(), 0..100),
        same_batch in any::<bool>(),
    ) {
        prop_assume!(!base.contains_key(&key));
        let dir = tempdir();
        let store = open(dir.path());
        let pairs: Vec<_> = base.into_iter().collect();
        apply(&store, &pairs, 7);
        let before = store.state_root().unwrap();

        let mut batch = store.write().unwrap();
        prop_assert_eq!(batch.state_put(&key, &value).unwrap(), None);
        let during = batch.state_root().unwrap();
        prop_assert_ne!(during, before);
        if !same_batch {
            batch.commit().unwrap();
            prop_assert_eq!(store.state_root().unwrap(), during);
            batch = store.write().unwrap();
        }
        prop_assert_eq!(batch.state_delete(&key).unwrap(), Some(value));
        prop_assert_eq!(batch.state_delete(&key).unwrap(), None);
        batch.commit().unwrap();
        prop_assert_eq!(store.state_root().unwrap(), before);
    }

    /// Overwriting a key (any number of times, across batches) ends in the same root as writing
    /// the final value directly.
    #[test]
    fn overwriting_equals_writing_the_final_value(
        key in proptest::collection::vec(any::<u8>(), 1..40),
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..6),
        chunk in 1..4usize,
    ) {
        let (dir_a, dir_b) = (tempdir(), tempdir());
        let (a, b) = (open(dir_a.path()), open(dir_b.path()));
        let writes: Vec<_> = values.iter().map(|v| (key.clone(), v.clone())).collect();
        apply(&a, &writes, chunk);
        let last = values.last().unwrap();
        apply(&b, &[(key.clone(), last.clone())], 1);
        prop_assert_eq!(a.state_root().unwrap(), b.state_root().unwrap());
        prop_assert_eq!(a.read().unwrap().state_get(&key).unwrap(), Some(last.clone()));
        prop_assert_eq!(a.read().unwrap().state_len().unwrap(), 1);
    }
}

#[test]
fn put_returns_the_previous_value() {
    let dir = tempdir();
    let store = open(dir.path());
    let mut batch = store.write().unwrap();
    assert_eq!(batch.state_put(b"k", b"1").unwrap(), None);
    assert_eq!(batch.state_put(b"k", b"2").unwrap(), Some(b"1".to_vec()));
    // Writing the same value again changes nothing.
    let root = batch.state_root().unwrap();
    assert_eq!(batch.state_put(b"k", b"2").unwrap(), Some(b"2".to_vec()));
    assert_eq!(batch.state_root().unwrap(), root);
    // A batch reads its own writes.
    assert_eq!(batch.state_get(b"k").unwrap(), Some(b"2".to_vec()));
    batch.commit().unwrap();
    assert_eq!(store.state_root().unwrap(), root);
}

#[test]
fn a_dropped_batch_changes_nothing() {
    let dir = tempdir();
    let store = open(dir.path());
    let table = store.table::<u64, String>("notes").unwrap();
    let mut batch = store.write().unwrap();
    batch.state_put(b"kept", b"1").unwrap();
    batch.put(&table, &1, &"kept".to_string()).unwrap();
    batch.commit().unwrap();
    let root = store.state_root().unwrap();

    let mut batch = store.write().unwrap();
    batch.state_put(b"dropped", b"2").unwrap();
    batch.state_put(b"kept", b"changed").unwrap();
    batch.state_delete(b"kept").unwrap();
    batch.put(&table, &2, &"dropped".to_string()).unwrap();
    batch.delete(&table, &1).unwrap();
    assert_ne!(batch.state_root().unwrap(), root);
    drop(batch);

    let read = store.read().unwrap();
    assert_eq!(read.state_root().unwrap(), root);
    assert_eq!(read.state_get(b"kept").unwrap(), Some(b"1".to_vec()));
    assert_eq!(read.state_get(b"dropped").unwrap(), None);
    assert_eq!(read.state_len().unwrap(), 1);
    assert_eq!(read.get(&table, &1).unwrap(), Some("kept".to_string()));
    assert_eq!(read.get(&table, &2).unwrap(), None);
}

#[test]
fn a_read_snapshot_does_not_see_later_commits() {
    let dir = tempdir();
    let store = open(dir.path());
    apply(&store, &[(b"a".to_vec(), b"1".to_vec())], 1);
    let snapshot = store.read().unwrap();
    let root = snapshot.state_root().unwrap();
    apply(&store, &[(b"a".to_vec(), b"2".to_vec())], 1);
    assert_eq!(snapshot.state_get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(snapshot.state_root().unwrap(), root);
    drop(snapshot);
    assert_ne!(store.state_root().unwrap(), root);
}

#[test]
fn reopening_gives_the_same_root_and_data() {
    let dir = tempdir();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32)
        .map(|i| (format!("key/{i:04}").into_bytes(), i.to_be_bytes().to_vec()))
        .collect();
    let root = {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        apply(&store, &pairs, 33);
        let table = store.table::<String, u64>("t").unwrap();
        let mut batch = store.write().unwrap();
        batch.put(&table, &"x".to_string(), &42).unwrap();
        batch.commit().unwrap();
        store.state_root().unwrap()
    };
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.state_root().unwrap(), root);
    // Tables are opened before the read snapshot that uses them (an LMDB rule).
    let table = store.table::<String, u64>("t").unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.state_len().unwrap(), 200);
    assert_eq!(
        read.state_get(b"key/0123").unwrap(),
        Some(123u32.to_be_bytes().to_vec())
    );
    assert_eq!(read.get(&table, &"x".to_string()).unwrap(), Some(42));
}

#[test]
fn state_range_bounds_and_limit() {
    let dir = tempdir();
    let store = open(dir.path());
    let keys: [&[u8]; 6] = [b"a", b"b", b"b/1", b"b/2", b"c", b"d"];
    let pairs: Vec<_> = keys
        .iter()
        .map(|k| (k.to_vec(), [b"v-", *k].concat()))
        .collect();
    apply(&store, &pairs, 100);
    let read = store.read().unwrap();
    let keys_of = |records: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
        records
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(v, [b"v-", &k[..]].concat());
                k
            })
            .collect()
    };
    let all = |ks: &[&[u8]]| -> Vec<Vec<u8>> { ks.iter().map(|k| k.to_vec()).collect() };
    // start is included, end excluded.
    assert_eq!(
        keys_of(read.state_range(b"b", Some(b"c"), 100).unwrap()),
        all(&[b"b", b"b/1", b"b/2"])
    );
    assert_eq!(
        keys_of(read.state_range(b"b/", Some(b"b/2"), 100).unwrap()),
        all(&[b"b/1"])
    );
    // No upper bound.
    assert_eq!(
        keys_of(read.state_range(b"c", None, 100).unwrap()),
        all(&[b"c", b"d"])
    );
    // A start between keys.
    assert_eq!(
        keys_of(read.state_range(b"a0", None, 2).unwrap()),
        all(&[b"b", b"b/1"])
    );
    // Limit.
    assert_eq!(
        keys_of(read.state_range(b"a", None, 3).unwrap()),
        all(&[b"a", b"b", b"b/1"])
    );
    assert!(read.state_range(b"a", None, 0).unwrap().is_empty());
    // Empty ranges.
    assert!(read.state_range(b"e", None, 10).unwrap().is_empty());
    assert!(read.state_range(b"b", Some(b"b"), 10).unwrap().is_empty());
    // The empty key is below every key: as a start it means "from the first record", as an
    // end it gives an empty range.
    assert_eq!(read.state_range(b"", None, 100).unwrap().len(), 6);
    assert_eq!(
        keys_of(read.state_range(b"", Some(b"b/"), 100).unwrap()),
        all(&[b"a", b"b"])
    );
    assert!(read.state_range(b"", Some(b""), 10).unwrap().is_empty());
    assert!(read.state_range(b"a", Some(b""), 10).unwrap().is_empty());
    // Bounds longer than any key are still bounds.
    assert_eq!(
        keys_of(read.state_range(&[b'b'; 600], None, 100).unwrap()),
        all(&[b"c", b"d"])
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    author: String,
    amount: u128,
    parent: Option<Hash32>,
}

#[test]
fn typed_tables_put_get_delete_scan() {
    let dir = tempdir();
    let store = open(dir.path());
    let by_seq = store.table::<u64, Entry>("entries").unwrap();
    let by_owner = store.table::<(Hash32, u64), String>("by-owner").unwrap();
    assert_eq!(by_seq.name(), "entries");
    let entry = |i: u64| Entry {
        author: format!("author {i}"),
        amount: u128::from(i) << 70,
        parent: (i > 0).then_some(Hash32([i as u8; 32])),
    };
    let owner = |i: u8| Hash32([i; 32]);

    let mut batch = store.write().unwrap();
    // Inserted out of order; u64 keys are big-endian, so scans are in numeric order.
    for i in [300u64, 2, 70_000, 1, 256] {
        batch.put(&by_seq, &i, &entry(i)).unwrap();
    }
    for (o, n) in [(1u8, 5u64), (2, 1), (1, 2), (1, 9), (3, 0)] {
        batch
            .put(&by_owner, &(owner(o), n), &format!("{o}/{n}"))
            .unwrap();
    }
    batch.commit().unwrap();

    let read = store.read().unwrap();
    assert_eq!(read.get(&by_seq, &256).unwrap(), Some(entry(256)));
    assert_eq!(read.get(&by_seq, &3).unwrap(), None);
    let all = read.scan_prefix(&by_seq, &[], 100).unwrap();
    let seqs: Vec<u64> = all
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(seqs, vec![1, 2, 256, 300, 70_000]);
    assert!(
        all.iter()
            .all(|(k, v)| { *v == entry(u64::from_be_bytes(k.as_slice().try_into().unwrap())) })
    );
    assert_eq!(read.scan_prefix(&by_seq, &[], 2).unwrap().len(), 2);
    // Prefix of the first component of a pair key.
    let of_one: Vec<String> = read
        .scan_prefix(&by_owner, owner(1).as_bytes(), 100)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(of_one, vec!["1/2", "1/5", "1/9"]);
    assert!(
        read.scan_prefix(&by_owner, owner(4).as_bytes(), 100)
            .unwrap()
            .is_empty()
    );
    drop(read);

    let mut batch = store.write().unwrap();
    assert!(batch.delete(&by_seq, &256).unwrap());
    assert!(!batch.delete(&by_seq, &256).unwrap());
    batch.put(&by_seq, &1, &entry(99)).unwrap();
    batch.commit().unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.get(&by_seq, &256).unwrap(), None);
    assert_eq!(read.get(&by_seq, &1).unwrap(), Some(entry(99)));
    assert_eq!(read.scan_prefix(&by_seq, &[], 100).unwrap().len(), 4);
    // Tables are separate from the state.
    assert_eq!(read.state_len().unwrap(), 0);
    assert_eq!(read.state_root().unwrap(), Lattice::new().root());
}

#[test]
fn reserved_table_names_and_mismatched_types_are_refused() {
    let dir = tempdir();
    let store = open(dir.path());
    for name in ["", "state", "meta"] {
        assert!(
            matches!(store.table::<u64, u64>(name), Err(StoreError::TableName(n)) if n == name),
            "{name:?}"
        );
    }
    // A value written as one type and read as another is a decode error, not garbage.
    let strings = store.table::<u64, String>("t").unwrap();
    let mut batch = store.write().unwrap();
    batch.put(&strings, &1, &"text".to_string()).unwrap();
    batch.commit().unwrap();
    let numbers = store.table::<u64, u64>("t").unwrap();
    let err = store.read().unwrap().get(&numbers, &1).unwrap_err();
    assert!(
        matches!(&err, StoreError::Decode { table, .. } if table == "t"),
        "{err:?}"
    );
}

#[test]
fn key_lengths_are_checked() {
    let dir = tempdir();
    let store = open(dir.path());
    let table = store.table::<Vec<u8>, u64>("t").unwrap();
    let mut batch = store.write().unwrap();
    let too_long = vec![7u8; MAX_KEY_LEN + 1];
    assert_eq!(too_long.len(), 512);
    assert!(matches!(
        batch.state_put(b"", b"v"),
        Err(StoreError::KeyLength(0))
    ));
    assert!(matches!(
        batch.state_put(&too_long, b"v"),
        Err(StoreError::KeyLength(512))
    ));
    assert!(matches!(
        batch.put(&table, &Vec::new(), &1),
        Err(StoreError::KeyLength(0))
    ));
    assert!(matches!(
        batch.put(&table, &too_long, &1),
        Err(StoreError::KeyLength(512))
    ));
    assert!(matches!(
        batch.delete(&table, &too_long),
        Err(StoreError::KeyLength(512))
    ));
    assert!(matches!(
        batch.get(&table, &too_long),
        Err(StoreError::KeyLength(512))
    ));
    let err = batch.state_put(&too_long, b"v").unwrap_err();
    assert!(err.to_string().contains("512"), "{err}");
    // The longest key is fine, in the state and in tables; the refused writes left no trace.
    let longest = vec![7u8; MAX_KEY_LEN];
    batch.state_put(&longest, b"v").unwrap();
    batch.put(&table, &longest, &1).unwrap();
    batch.commit().unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.state_get(&longest).unwrap(), Some(b"v".to_vec()));
    assert_eq!(read.get(&table, &longest).unwrap(), Some(1));
    assert_eq!(read.state_len().unwrap(), 1);
    // Reading a key that cannot exist is simply absent.
    assert_eq!(read.state_get(b"").unwrap(), None);
    assert_eq!(read.state_get(&too_long).unwrap(), None);
}

#[test]
fn a_full_map_is_a_clean_error_and_the_store_survives() {
    const MAP: usize = 1 << 20;
    let options = StoreOptions {
        map_size: MAP,
        sync: false,
    };
    let dir = tempdir();
    let value = |i: usize| pseudo_random_bytes(&i.to_be_bytes(), 64 << 10);
    let mut committed = Vec::new();
    let error = {
        let store = Store::open(dir.path(), options).unwrap();
        let mut error = None;
        // 64 writes of 64 KiB are 4 MiB: far more than the map holds, so the loop must end
        // with an error well before its bound.
        for i in 0..64usize {
            let key = format!("big/{i:02}").into_bytes();
            let result = store
                .write()
                .and_then(|mut batch| {
                    batch.state_put(&key, &value(i))?;
                    Ok(batch)
                })
                .and_then(|batch| batch.commit());
            match result {
                Ok(()) => committed.push(i),
                Err(e) => {
                    error = Some((i, e));
                    break;
                }
            }
        }
        let (failed, error) = error.expect("a 1 MiB map cannot hold 4 MiB");
        assert!(!committed.is_empty(), "the first writes fit");
        // The store is still usable for reading: all committed data is there, the failed write
        // left nothing.
        let read = store.read().unwrap();
        for &i in &committed {
            let key = format!("big/{i:02}").into_bytes();
            assert_eq!(read.state_get(&key).unwrap(), Some(value(i)), "{i}");
        }
        let failed_key = format!("big/{failed:02}").into_bytes();
        assert_eq!(read.state_get(&failed_key).unwrap(), None);
        assert_eq!(read.state_len().unwrap(), committed.len() as u64);
        error
    };
    match &error {
        StoreError::MapFull { path, map_size } => {
            assert_eq!(*map_size, MAP);
            assert_eq!(path, dir.path());
        }
        other => panic!("expected MapFull, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("1048576"), "{message}");
    assert!(message.contains("map size"), "{message}");

    // Reopened (same map size), the committed data is intact and a small write still fits.
    let store = Store::open(dir.path(), options).unwrap();
    let expected = lattice_of(
        committed
            .iter()
            .map(|&i| (format!("big/{i:02}").into_bytes(), value(i)))
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, v)| (k, v)),
    );
    assert_eq!(store.state_root().unwrap(), expected.root());
    let mut batch = store.write().unwrap();
    batch.state_put(b"small", b"fits").unwrap();
    batch.commit().unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.state_get(b"small").unwrap(), Some(b"fits".to_vec()));
    let last = *committed.last().unwrap();
    assert_eq!(
        read.state_get(format!("big/{last:02}").as_bytes()).unwrap(),
        Some(value(last))
    );
}

/// A store holding several MiB, closed again; returns the size of its data file.
fn fill_store(path: &Path) -> u64 {
    let store = open(path);
    for chunk in 0..8usize {
        let mut batch = store.write().unwrap();
        for i in 0..16usize {
            let n = chunk * 16 + i;
            batch
                .state_put(
                    format!("blob/{n:03}").as_bytes(),
                    &pseudo_random_bytes(&n.to_be_bytes(), 32 << 10),
                )
                .unwrap();
        }
        batch.commit().unwrap();
    }
    drop(store);
    std::fs::metadata(path.join("data.mdb")).unwrap().len()
}

#[test]
fn a_truncated_data_file_is_reported_not_crashed_on() {
    let dir = tempdir();
    let size = fill_store(dir.path());
    assert!(size >= 4 << 20, "data.mdb has only {size} bytes");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("data.mdb"))
        .unwrap();
    file.set_len(size / 2).unwrap();
    drop(file);

    let err = Store::open(dir.path(), FAST).unwrap_err();
    match &err {
        StoreError::Truncated {
            path,
            expected,
            actual,
        } => {
            assert_eq!(path, dir.path());
            assert_eq!(*actual, size / 2);
            assert!(*expected > *actual && *expected <= size, "{err:?}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("truncated"), "{message}");
    // Refusing to open does not damage the file further; a second attempt says the same.
    assert!(matches!(
        Store::open(dir.path(), FAST),
        Err(StoreError::Truncated { .. })
    ));

    // Cut inside the meta pages as well.
    for len in [100u64, 5000] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("data.mdb"))
            .unwrap();
        file.set_len(len).unwrap();
        drop(file);
        let err = Store::open(dir.path(), FAST).unwrap_err();
        assert!(
            matches!(err, StoreError::Truncated { actual, .. } if actual == len),
            "{len}: {err:?}"
        );
    }
}

#[test]
fn a_garbage_data_file_is_corrupt() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("data.mdb"),
        pseudo_random_bytes(b"garbage", 1 << 20),
    )
    .unwrap();
    let err = Store::open(dir.path(), FAST).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path == dir.path()),
        "{err:?}"
    );
    assert!(err.to_string().contains("corrupt"), "{err}");

    // A data file of zeros is not LMDB either.
    let dir = tempdir();
    std::fs::write(dir.path().join("data.mdb"), vec![0u8; 64 << 10]).unwrap();
    assert!(matches!(
        Store::open(dir.path(), FAST),
        Err(StoreError::Corrupt { .. })
    ));
}
