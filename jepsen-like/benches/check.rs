//! Criterion benchmarks of the checker on generated multi-register
//! histories (10 processes per key, values 1..=5, 5% indeterminate and 2%
//! failed ops), including the 100,000-op / 100-key speed target, plus EDN
//! parsing of that history. Sample sizes are small so `cargo bench -p
//! jepsen-like` stays within a few minutes on a 2-core machine.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jepsen_like::check::{check, CheckOptions, Verdict};
use jepsen_like::gen::{generate, GenOptions};
use jepsen_like::{Format, ModelKind};

fn history(keys: usize, ops_per_key: usize) -> jepsen_like::History {
    generate(&GenOptions {
        model: ModelKind::MultiRegister,
        keys,
        ops_per_key,
        concurrency: 10,
        values: 5,
        info_rate: 0.05,
        fail_rate: 0.02,
        seed: 42,
        corrupt: false,
    })
}

fn bench_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check-multi-register");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(4));
    for (keys, ops) in [(10, 1_000), (100, 1_000), (10, 10_000), (1_000, 100)] {
        let h = history(keys, ops);
        let options = CheckOptions::new(ModelKind::MultiRegister);
        // Sanity: the benchmark is only meaningful if the check succeeds.
        assert_eq!(check(&h, &options).expect("check").verdict, Verdict::Valid);
        group.throughput(Throughput::Elements((keys * ops) as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("{keys}keys"), format!("{ops}ops-per-key")),
            &h,
            |b, h| b.iter(|| check(h, &options).expect("check")),
        );
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let h = history(100, 1_000);
    let mut text = Vec::new();
    Format::Edn.write(&h, &mut text).expect("write");
    let text = String::from_utf8(text).expect("utf8");
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("edn-100k-ops", |b| {
        b.iter(|| Format::Edn.parse(&text).expect("parse"))
    });
    group.finish();
}

criterion_group!(benches, bench_check, bench_parse);
criterion_main!(benches);
