//! YCSB core workloads (A–F) and their key choosers (zipfian, uniform, latest).
//!
//! The load generator needs the same operation mixes and key popularity as YCSB so that
//! figures are comparable with other stores. The random source is a small SplitMix64
//! generator: reproducible from a seed, cheap, and no extra dependency.

use std::fmt;
use std::str::FromStr;

/// Errors parsing workload parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// Not one of a–f.
    #[error("unknown workload {0:?}: expected one of a, b, c, d, e, f")]
    UnknownWorkload(String),
    /// Not zipfian, uniform or latest.
    #[error("unknown distribution {0:?}: expected zipfian, uniform or latest")]
    UnknownDistribution(String),
}

/// SplitMix64: a fast, seedable pseudo-random generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// FNV-1a over the 8 bytes of `v` (YCSB's key hash).
pub fn fnv64(v: u64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// YCSB's zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Zipfian ranks over [0, n): rank 0 is the most popular (Gray et al., as in YCSB). The
/// item count may grow; zeta is then extended incrementally.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// Over `items` items with YCSB's constant.
    pub fn new(items: u64) -> Self {
        let theta = ZIPFIAN_CONSTANT;
        let mut z = Zipfian {
            items: 0,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2: 1.0 + 0.5f64.powf(theta),
            zetan: 0.0,
            eta: 0.0,
        };
        z.resize(items.max(1));
        z
    }

    fn resize(&mut self, items: u64) {
        if items < self.items {
            self.items = 0;
            self.zetan = 0.0;
        }
        for i in self.items..items {
            self.zetan += 1.0 / ((i + 1) as f64).powf(self.theta);
        }
        self.items = items;
        self.eta =
            (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan);
    }

    /// A rank in [0, n) (n ≥ 1), 0 the most likely.
    pub fn next(&mut self, rng: &mut Rng, n: u64) -> u64 {
        let n = n.max(1);
        if n != self.items {
            self.resize(n);
        }
        if n == 1 {
            return 0;
        }
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(n - 1)
    }
}

/// How keys are picked among the records that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// YCSB scrambled zipfian: a few hot keys, spread over the keyspace by a hash.
    Zipfian,
    /// Every record equally likely.
    Uniform,
    /// The most recently inserted records are the hottest (zipfian by age).
    Latest,
}

impl FromStr for Distribution {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "zipfian" => Ok(Distribution::Zipfian),
            "uniform" => Ok(Distribution::Uniform),
            "latest" => Ok(Distribution::Latest),
            _ => Err(WorkloadError::UnknownDistribution(s.to_string())),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distribution::Zipfian => "zipfian",
            Distribution::Uniform => "uniform",
            Distribution::Latest => "latest",
        })
    }
}

/// Picks a record number in [0, count) where `count` records exist (it may grow).
#[derive(Debug, Clone)]
pub struct KeyChooser {
    dist: Distribution,
    zipf: Zipfian,
    /// The scrambled zipfian keeps the item count it started with (as YCSB does) and
    /// maps ranks onto the current count by hash.
    base: u64,
}

impl KeyChooser {
    /// A chooser for `dist` over an initial `records` records.
    pub fn new(dist: Distribution, records: u64) -> Self {
        KeyChooser {
            dist,
            zipf: Zipfian::new(records.max(1)),
            base: records.max(1),
        }
    }

    /// A record number in [0, count) (0 if count is 0).
    pub fn next(&mut self, rng: &mut Rng, count: u64) -> u64 {
        if count == 0 {
            return 0;
        }
        match self.dist {
            Distribution::Uniform => rng.below(count),
            Distribution::Zipfian => {
                let rank = self.zipf.next(rng, self.base);
                fnv64(rank) % count
            }
            Distribution::Latest => count - 1 - self.zipf.next(rng, count),
        }
    }
}

/// One operation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read one record.
    Read,
    /// Overwrite one record.
    Update,
    /// Write a new record.
    Insert,
    /// Read a run of records of one partition.
    Scan,
    /// Read a record, then write it back with the read's context.
    ReadModifyWrite,
}

impl Op {
    /// Every operation type.
    pub const ALL: [Op; 5] = [
        Op::Read,
        Op::Update,
        Op::Insert,
        Op::Scan,
        Op::ReadModifyWrite,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
            Op::ReadModifyWrite => "read_modify_write",
        }
    }

    /// Index into per-op arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A YCSB core workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Update heavy: 50% read, 50% update.
    A,
    /// Read mostly: 95% read, 5% update.
    B,
    /// Read only.
    C,
    /// Read latest: 95% read, 5% insert, latest distribution.
    D,
    /// Short ranges: 95% scan, 5% insert.
    E,
    /// Read-modify-write: 50% read, 50% read-modify-write.
    F,
}

impl FromStr for Workload {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "a" => Ok(Workload::A),
            "b" => Ok(Workload::B),
            "c" => Ok(Workload::C),
            "d" => Ok(Workload::D),
            "e" => Ok(Workload::E),
            "f" => Ok(Workload::F),
            _ => Err(WorkloadError::UnknownWorkload(s.to_string())),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::D => "d",
            Workload::E => "e",
            Workload::F => "f",
        };
        f.write_str(c)
    }
}

/// Rows per partition in workload E's `partition/sort` records.
pub const ROWS_PER_PARTITION: u64 = 100;
/// Longest scan (YCSB `maxscanlength`), in records.
pub const MAX_SCAN_LENGTH: u32 = 100;

impl Workload {
    /// The operation mix as (op, proportion) pairs summing to 1.
    pub fn mix(self) -> &'static [(Op, f64)] {
        match self {
            Workload::A => &[(Op::Read, 0.5), (Op::Update, 0.5)],
            Workload::B => &[(Op::Read, 0.95), (Op::Update, 0.05)],
            Workload::C => &[(Op::Read, 1.0)],
            Workload::D => &[(Op::Read, 0.95), (Op::Insert, 0.05)],
            Workload::E => &[(Op::Scan, 0.95), (Op::Insert, 0.05)],
            Workload::F => &[(Op::Read, 0.5), (Op::ReadModifyWrite, 0.5)],
        }
    }

    /// YCSB's request distribution for this workload.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    /// Draw the next operation.
    pub fn next_op(self, rng: &mut Rng) -> Op {
        let mix = self.mix();
        let mut u = rng.next_f64();
        for &(op, p) in mix {
            if u < p {
                return op;
            }
            u -= p;
        }
        mix[mix.len() - 1].0
    }

    /// The key text of record `n`: `user<hash>` (YCSB's hashed key shape); in workload
    /// E `user<hash of n / 100>/<n % 100, 6 digits>` so that records share partitions
    /// and a scan of a partition reads a run of them.
    pub fn key_text(self, n: u64) -> String {
        match self {
            Workload::E => format!(
                "user{}/{:06}",
                fnv64(n / ROWS_PER_PARTITION),
                n % ROWS_PER_PARTITION
            ),
            _ => format!("user{}", fnv64(n)),
        }
    }

    /// Workload E: the partition and first sort key of a scan starting at record `n`.
    pub fn scan_start(n: u64) -> (String, String) {
        (
            format!("user{}", fnv64(n / ROWS_PER_PARTITION)),
            format!("{:06}", n % ROWS_PER_PARTITION),
        )
    }
}
