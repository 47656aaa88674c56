//! Cold against cached dataset preparation (`scripts/bench-trainer.sh cache`, or
//! `cargo bench -p flywheel-trainer --bench feature_cache -- [DATASET] [TARGET]`).
//!
//! Cold is what a trial without a cache does after reading the file: parse and infer the schema.
//! Cached is what a trial does on a hit: read the entry from a local cache folder, check it and
//! decode it. Both sides also read the dataset and hash it (the key needs the digest), shown
//! separately and in the "whole load" row. Medians over repeated runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flywheel_core::search::space::Task;
use flywheel_trainer::cache::{CacheKey, FeatureCache, Lookup};
use flywheel_trainer::data::{self, Format};

const RUNS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; positional arguments are the dataset and target.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dataset = args.first().cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/datasets/adult.csv"
        )
        .to_string()
    });
    let target = args.get(1).cloned().unwrap_or_else(|| "income".to_string());
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::open(dir.path().to_str().unwrap()).unwrap();

    let fetch = time(|| data::fetch(&dataset).unwrap());
    let source = data::fetch(&dataset).unwrap();
    let format = Format::Auto.resolve(&source);
    let key = CacheKey::new(&source.digest, format.as_str(), &target, Task::Auto);
    let parse = time(|| data::parse(&source, format).unwrap());
    let infer = time(|| {
        let table = data::parse(&source, format).unwrap();
        data::infer(table, &target, Task::Auto).unwrap()
    })
    .saturating_sub(parse);
    let prepared = data::infer(data::parse(&source, format).unwrap(), &target, Task::Auto).unwrap();
    assert!(cache.save(&key, &prepared, false).unwrap());
    let entry_bytes = std::fs::metadata(dir.path().join(format!("{}.fwds", key.id())))
        .unwrap()
        .len();
    let cached = time(|| match cache.load(&key) {
        Lookup::Hit(data) => data,
        _ => panic!("the entry just written is not a hit"),
    });
    let cold = parse + infer;
    println!(
        "{} ({} rows, {} features; entry {:.1} MB)\n",
        dataset,
        prepared.rows,
        prepared.features.len(),
        entry_bytes as f64 / 1e6
    );
    println!("| step | cold ms | cached ms | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| preparation (parse {} + infer {} / cache read + check + decode) | {} | {} | {:.1}× |",
        ms(parse),
        ms(infer),
        ms(cold),
        ms(cached),
        cold.as_secs_f64() / cached.as_secs_f64()
    );
    println!(
        "| whole load (+ read and sha256 of the file, {} ms, both sides) | {} | {} | {:.1}× |",
        ms(fetch),
        ms(fetch + cold),
        ms(fetch + cached),
        (fetch + cold).as_secs_f64() / (fetch + cached).as_secs_f64()
    );
}
