//! Criterion benchmarks of the checker on generated multi-register
//! histories (10 processes per key, values 1..=5, 5% indeterminate and 2%
//! failed ops), including the 100,000-op / 100-key speed target, the same
//! shapes with one read per key corrupted (invalid: the early verdict by
//! default, and every key judged with `all_failures`), plus EDN parsing of
//! that history. Sample sizes are small so `cargo bench -p jepsen-like`
//! stays within a few minutes on a 2-core machine.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jepsen_like::check::{check, CheckOptions, Verdict};
use jepsen_like::gen::{generate, GenOptions};
use jepsen_like::{Format, ModelKind};

fn history(keys: usize, ops_per_key: usize) -> jepsen_like::History {
    history_with(keys, ops_per_key, 42, false)
}

fn history_with(keys: usize, ops_per_key: usize, seed: u64, corrupt: bool) -> jepsen_like::History {
    generate(&GenOptions {
        model: ModelKind::MultiRegister,
        keys,
        ops_per_key,
        concurrency: 10,
        values: 5,
        info_rate: 0.05,
        fail_rate: 0.02,
        seed,
        corrupt,
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

/// Invalid histories (`gen --corrupt --seed 7`, the seed of the issue's
/// million-op run): how fast the first failure settles the verdict, and
/// what judging every key costs (on 10 keys: with 100, two keys run out of
/// their memory share and take minutes, which is what the early verdict
/// is for).
fn bench_check_invalid(c: &mut Criterion) {
    let mut group = c.benchmark_group("check-multi-register-invalid");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(4));
    for (keys, ops, all_failures) in [(100, 1_000, false), (10, 1_000, false), (10, 1_000, true)] {
        let h = history_with(keys, ops, 7, true);
        let options = CheckOptions {
            all_failures,
            ..CheckOptions::new(ModelKind::MultiRegister)
        };
        // Sanity: the benchmark is only meaningful if the check finds it.
        assert_eq!(
            check(&h, &options).expect("check").verdict,
            Verdict::Invalid
        );
        let mode = if all_failures {
            "all-failures"
        } else {
            "early-verdict"
        };
        group.throughput(Throughput::Elements((keys * ops) as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("{keys}keys-{mode}"), format!("{ops}ops-per-key")),
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

criterion_group!(benches, bench_check, bench_check_invalid, bench_parse);
criterion_main!(benches);
