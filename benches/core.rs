//! Micro-benchmarks of the data path's CPU-bound pieces: ring lookup, version-vector
//! merge and compare, the wire codec, replica storage on RocksDB and in memory, and one
//! whole quorum write + read through an in-process three-node cluster (in-memory
//! network and storage: the protocol's own cost, without sockets or disks).
//!
//! Run with `cargo bench --bench core`; figures go to docs/BENCHMARKS.md. Kept short
//! (small samples) because this machine is shared; compare medians, not single runs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use quorumkv::causality::VersionVector;
use quorumkv::config::DEFAULT_VNODES;
use quorumkv::inprocess::MemoryCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::object::Object;
use quorumkv::proto::{self, ClientRequest, GetRequest, Message, PutRequest};
use quorumkv::ring::Ring;
use quorumkv::storage::{BatchOp, MemoryStorage, RocksStorage, Storage};

fn ring_lookup(c: &mut Criterion) {
    let nodes: Vec<String> = (1..=10).map(|i| format!("n{i}")).collect();
    let ring = Ring::new(&nodes, DEFAULT_VNODES).unwrap();
    let keys: Vec<String> = (0..1024).map(|i| format!("user:{i}")).collect();
    let mut i = 0;
    c.bench_function("ring/preference_list n=3 of 10 nodes x256 vnodes", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ring.preference_list(keys[i].as_bytes(), 3))
        })
    });
}

/// Two replicas' objects after a few concurrent writes each.
fn diverged_objects() -> (Object, Object) {
    let mut a = Object::default();
    for i in 0..3 {
        a.apply_write(
            &format!("n{i}"),
            &VersionVector::new(),
            Some(vec![i as u8; 100]),
            0,
        )
        .unwrap();
    }
    let mut b = a.clone();
    let ctx = a.vv.clone();
    a.apply_write("n1", &ctx, Some(vec![1; 100]), 1).unwrap();
    b.apply_write("n4", &VersionVector::new(), Some(vec![4; 100]), 2)
        .unwrap();
    (a, b)
}

fn causality(c: &mut Criterion) {
    let (a, b) = diverged_objects();
    c.bench_function("causality/object merge (4 siblings)", |bench| {
        bench.iter(|| black_box(a.merged(&b)))
    });
    c.bench_function("causality/version vector compare", |bench| {
        bench.iter(|| black_box(a.vv.partial_cmp_vv(&b.vv)))
    });
}

fn codec(c: &mut Criterion) {
    let msg = Message::Client(ClientRequest::Put(PutRequest {
        keyspace: "default".into(),
        key: Key::parse("user:42/profile"),
        value: Some(vec![7u8; 1024]),
        context: "gaJuMQE".into(),
        w: Some(2),
        trace: false,
        if_context: false,
        timestamp: None,
        actor: None,
        pw: None,
    }));
    let frame = proto::encode(&msg);
    c.bench_function("codec/encode put 1 KiB", |b| {
        b.iter(|| black_box(proto::encode(&msg)))
    });
    c.bench_function("codec/decode put 1 KiB", |b| {
        b.iter(|| black_box(proto::decode::<Message>(&frame, 1 << 20).unwrap()))
    });
}

fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engines: Vec<(&str, Box<dyn Storage>)> = vec![
        ("memory", Box::new(MemoryStorage::new())),
        (
            "rocksdb sync=false",
            Box::new(RocksStorage::open(&dir.path().join("nosync"), false).unwrap()),
        ),
        (
            "rocksdb sync=true",
            Box::new(RocksStorage::open(&dir.path().join("sync"), true).unwrap()),
        ),
    ];
    for (name, s) in &engines {
        let mut i = 0u64;
        c.bench_function(&format!("storage/{name} put 100 B"), |b| {
            b.iter(|| {
                i += 1;
                s.write(vec![BatchOp::Put(i.to_be_bytes().to_vec(), vec![0u8; 100])])
                    .unwrap()
            })
        });
        c.bench_function(&format!("storage/{name} get"), |b| {
            let mut j = 0u64;
            b.iter(|| {
                j = j % i.max(1) + 1;
                black_box(s.get(&j.to_be_bytes()).unwrap())
            })
        });
    }
}

fn quorum_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(async {
        MemoryCluster::new(
            3,
            vec![KeyspaceDef::new("ks", 3, 2, 2)],
            Duration::from_secs(5),
        )
        .unwrap()
    });
    let node = cluster.nodes[0].clone();
    let mut i = 0u64;
    c.bench_function("quorum/put then get, N=3 W=2 R=2, in-process", |b| {
        b.iter(|| {
            i += 1;
            let key = Key::parse(&format!("user:{}", i % 1024));
            rt.block_on(async {
                // A fresh write each time: the read context of the last round.
                let ctx = node
                    .get(GetRequest {
                        keyspace: "ks".into(),
                        key: key.clone(),
                        r: None,
                        trace: false,
                        pr: None,
                    })
                    .await
                    .unwrap()
                    .context;
                black_box(
                    node.put(PutRequest {
                        keyspace: "ks".into(),
                        key,
                        value: Some(vec![0u8; 100]),
                        context: ctx,
                        w: None,
                        trace: false,
                        if_context: false,
                        timestamp: None,
                        actor: None,
                        pw: None,
                    })
                    .await
                    .unwrap(),
                )
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = ring_lookup, causality, codec, storage, quorum_round_trip
}
criterion_main!(benches);
