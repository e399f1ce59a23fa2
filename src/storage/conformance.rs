//! One behaviour suite for every storage engine: what the rest of quorumkv relies on.

#[cfg(feature = "rocksdb")]
use super::RocksStorage;
use super::{prefix_end, BatchOp, MemoryStorage, Storage};

/// Run every check against a fresh engine from `make`.
fn suite(make: &dyn Fn() -> Box<dyn Storage>) {
    point_reads_and_overwrites(&*make());
    batches_are_applied_whole(&*make());
    scans_are_ordered_bounded_and_limited(&*make());
    empty_and_binary_keys(&*make());
    hint_records_and_data_share_one_ordered_key_space(&*make());
    deferred_writes_are_visible_atomic_and_synced(&*make());
}

/// A deferred batch (an overlapped lead's store) is seen whole by reads at once, mixes
/// with synced writes in order, and `sync` succeeds on a healthy engine.
fn deferred_writes_are_visible_atomic_and_synced(s: &dyn Storage) {
    s.write_deferred(vec![
        BatchOp::Put(b"d/1".to_vec(), b"a".to_vec()),
        BatchOp::Put(b"d/2".to_vec(), b"b".to_vec()),
    ])
    .unwrap();
    assert_eq!(get(s, b"d/1"), Some(b"a".to_vec()));
    assert_eq!(s.scan(b"d/", b"d0", 10).unwrap().len(), 2);
    s.write(vec![BatchOp::Put(b"d/1".to_vec(), b"c".to_vec())])
        .unwrap();
    s.write_deferred(vec![BatchOp::Delete(b"d/2".to_vec())])
        .unwrap();
    s.sync().unwrap();
    assert_eq!(get(s, b"d/1"), Some(b"c".to_vec()));
    assert_eq!(get(s, b"d/2"), None);
}

/// The RocksDB engine keeps hint records (`0xFE "hint"`) in a column family of their own;
/// callers must not notice: one atomic batch across both, one key order in scans that
/// cross the prefix, limits counted across both.
fn hint_records_and_data_share_one_ordered_key_space(s: &dyn Storage) {
    let hint = |k: &str| [crate::hints::HINT_PREFIX, k.as_bytes()].concat();
    let before = b"\xFEaae".to_vec(); // sorts before the hint prefix
    let after = b"\xFEtomb".to_vec(); // and after it
    s.write(vec![
        BatchOp::Put(before.clone(), b"1".to_vec()),
        BatchOp::Put(hint("a"), b"2".to_vec()),
        BatchOp::Put(hint("b"), b"3".to_vec()),
        BatchOp::Put(after.clone(), b"4".to_vec()),
    ])
    .unwrap();
    assert_eq!(get(s, &hint("a")), Some(b"2".to_vec()));
    let all = s.scan(b"\xFE", b"\xFF", 10).unwrap();
    let keys: Vec<Vec<u8>> = all.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![before.clone(), hint("a"), hint("b"), after.clone()]
    );
    let first3 = s.scan(b"\xFE", b"\xFF", 3).unwrap();
    assert_eq!(first3.len(), 3);
    assert_eq!(first3[2].0, hint("b"));
    let only = s
        .scan(
            crate::hints::HINT_PREFIX,
            &prefix_end(crate::hints::HINT_PREFIX).unwrap(),
            10,
        )
        .unwrap();
    assert_eq!(only.len(), 2);
    s.write(vec![
        BatchOp::Delete(hint("a")),
        BatchOp::Delete(before.clone()),
    ])
    .unwrap();
    assert_eq!(get(s, &hint("a")), None);
    assert_eq!(s.scan(b"\xFE", b"\xFF", 10).unwrap().len(), 2);
}

/// `get`, checking that `get_cached`, when it answers, answers the same.
fn get(s: &dyn Storage, key: &[u8]) -> Option<Vec<u8>> {
    let v = s.get(key).unwrap();
    if let Some(cached) = s.get_cached(key) {
        assert_eq!(cached.unwrap(), v, "get_cached disagrees with get");
    }
    v
}

fn point_reads_and_overwrites(s: &dyn Storage) {
    assert_eq!(get(s, b"a"), None);
    s.write(vec![BatchOp::Put(b"a".to_vec(), b"1".to_vec())])
        .unwrap();
    assert_eq!(get(s, b"a"), Some(b"1".to_vec()));
    s.write(vec![BatchOp::Put(b"a".to_vec(), b"2".to_vec())])
        .unwrap();
    assert_eq!(get(s, b"a"), Some(b"2".to_vec()));
    s.write(vec![BatchOp::Delete(b"a".to_vec())]).unwrap();
    assert_eq!(get(s, b"a"), None);
}

fn batches_are_applied_whole(s: &dyn Storage) {
    s.write(vec![BatchOp::Put(b"x".to_vec(), b"old".to_vec())])
        .unwrap();
    s.write(vec![
        BatchOp::Put(b"p/1".to_vec(), b"post".to_vec()),
        BatchOp::Put(b"p/2".to_vec(), b"comment".to_vec()),
        BatchOp::Delete(b"x".to_vec()),
    ])
    .unwrap();
    assert_eq!(s.get(b"p/1").unwrap(), Some(b"post".to_vec()));
    assert_eq!(s.get(b"p/2").unwrap(), Some(b"comment".to_vec()));
    assert_eq!(s.get(b"x").unwrap(), None);
    // Within one batch, a later operation on the same key wins.
    s.write(vec![
        BatchOp::Put(b"k".to_vec(), b"1".to_vec()),
        BatchOp::Put(b"k".to_vec(), b"2".to_vec()),
    ])
    .unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"2".to_vec()));
}

fn scans_are_ordered_bounded_and_limited(s: &dyn Storage) {
    let keys: Vec<Vec<u8>> = vec![
        b"s/c".to_vec(),
        b"s/a".to_vec(),
        b"s/b".to_vec(),
        b"t/a".to_vec(),
        b"r/z".to_vec(),
    ];
    s.write(
        keys.iter()
            .map(|k| BatchOp::Put(k.clone(), k.clone()))
            .collect(),
    )
    .unwrap();
    let end = prefix_end(b"s/").unwrap();
    let got: Vec<Vec<u8>> = s
        .scan(b"s/", &end, 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, vec![b"s/a".to_vec(), b"s/b".to_vec(), b"s/c".to_vec()]);
    assert_eq!(s.scan(b"s/", &end, 2).unwrap().len(), 2);
    assert_eq!(
        s.scan(b"s/b", &end, 100).unwrap().len(),
        2,
        "start is inclusive"
    );
    assert_eq!(
        s.scan(b"s/a", b"s/c", 100).unwrap().len(),
        2,
        "end is exclusive"
    );
    assert!(
        s.scan(b"z", b"a", 10).is_err(),
        "inverted range is an error"
    );
}

fn empty_and_binary_keys(s: &dyn Storage) {
    let k = vec![0u8, 0xFF, 0, 1];
    s.write(vec![BatchOp::Put(k.clone(), vec![])]).unwrap();
    assert_eq!(s.get(&k).unwrap(), Some(vec![]), "empty values are values");
}

/// Goal: the in-memory engine meets the storage contract.
#[test]
fn memory_engine_conformance() {
    suite(&|| Box::new(MemoryStorage::new()));
}

/// Goal: the simulator's disks (synced and unsynced) behave as the real engines do.
#[test]
fn simulated_engine_conformance() {
    suite(&|| Box::new(crate::sim::storage::SimDisk::new(false, 1).open()));
    suite(&|| Box::new(crate::sim::storage::SimDisk::new(true, 1).open()));
}

/// Goal: the RocksDB engine meets the same contract.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_engine_conformance() {
    let dirs = std::sync::Mutex::new(Vec::new());
    suite(&|| {
        let d = tempfile::tempdir().unwrap();
        let s = RocksStorage::open(d.path(), true).unwrap();
        dirs.lock().unwrap().push(d);
        Box::new(s)
    });
}

/// Goal: a synced RocksDB write is there after the database is closed and reopened, and a
/// second open of a live database is refused rather than corrupting it; the
/// memory-only read answers a fresh write.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_reopen_keeps_writes_and_locks() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = RocksStorage::open(d.path(), true).unwrap();
        s.write(vec![BatchOp::Put(b"durable".to_vec(), b"yes".to_vec())])
            .unwrap();
        let second = RocksStorage::open(d.path(), true);
        assert!(second.is_err(), "a second open must fail on the lock");
    }
    let s = RocksStorage::open(d.path(), true).unwrap();
    assert_eq!(get(&s, b"durable"), Some(b"yes".to_vec()));
    // A fresh write is in the memtable: the non-blocking read answers it.
    s.write(vec![BatchOp::Put(b"hot".to_vec(), b"v".to_vec())])
        .unwrap();
    assert_eq!(
        s.get_cached(b"hot").expect("in the memtable").unwrap(),
        Some(b"v".to_vec())
    );
}

/// Goal: a deferred RocksDB write is durable once `sync` returned: it is there after the
/// database is closed and reopened (the SyncWAL path, not only the memtable).
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_deferred_write_survives_reopen_after_sync() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = RocksStorage::open(d.path(), true).unwrap();
        s.write_deferred(vec![BatchOp::Put(b"deferred".to_vec(), b"yes".to_vec())])
            .unwrap();
        s.sync().unwrap();
    }
    let s = RocksStorage::open(d.path(), true).unwrap();
    assert_eq!(get(&s, b"deferred"), Some(b"yes".to_vec()));
}

/// Goal: prefix_end bounds exactly the keys with the prefix.
#[test]
fn prefix_end_bounds() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
    assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
}
