//! Keys: the storage-key decoder (`Key::decode`, for keys read back from the engine), the
//! text forms of the CLI (`Key::parse`) and shell (`key_of`), and the laws scans rely on:
//! encoding is the decoder's exact inverse, and a partition's items sort inside
//! `[partition_prefix, prefix_end(partition_prefix))`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumkv::key::{partition_prefix, Key};
use quorumkv::shell::parse::key_of;
use quorumkv::storage::prefix_end;

fn laws(keyspace: &str, key: &Key) {
    let _ = key.validate(1024);
    let _ = key.to_string();
    let stored = key.encode(keyspace);
    let (ks, back) = Key::decode(&stored).expect("an encoded key decodes");
    assert_eq!(ks, keyspace);
    assert_eq!(&back, key);
    let prefix = partition_prefix(keyspace, &key.partition);
    assert!(stored.starts_with(&prefix));
    if let Some(end) = prefix_end(&prefix) {
        assert!(stored < end, "a key sorts past its partition's scan range");
    }
}

fuzz_target!(|data: &[u8]| {
    // Stored bytes: whatever decodes re-encodes to exactly the same bytes.
    if let Ok((ks, key)) = Key::decode(data) {
        assert_eq!(key.encode(&ks), data, "decode is not the inverse of encode");
        laws(&ks, &key);
    }
    // The text forms, in a keyspace (names never hold NUL: keyspace::validate_name).
    laws("ks", &key_of(data));
    laws("ks", &Key::parse(&String::from_utf8_lossy(data)));
});
