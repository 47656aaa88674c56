//! The feature cache against real storage: a local folder and a real S3 API (moto_server), with
//! trials racing on one key, and the trainer binary reusing, refusing and replacing entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use flywheel_core::protocol::exit_code;
use flywheel_core::search::space::Task;
use flywheel_store::moto::{MotoServer, with_s3_env};
use flywheel_store::{BlockingStore, Location};
use flywheel_trainer::cache::{CacheKey, FeatureCache, Lookup};
use flywheel_trainer::data::{self, Dataset};

mod common;
use common::*;

const WRITERS: usize = 8;

fn penguins() -> (CacheKey, Dataset) {
    let source = data::fetch(data("penguins.csv").to_str().unwrap()).unwrap();
    let table = data::parse_csv(&source.bytes).unwrap();
    let dataset = data::infer(table, "species", Task::Auto).unwrap();
    (
        CacheKey::new(&source.digest, "csv", "species", Task::Auto),
        dataset,
    )
}

fn schema_json(data: &Dataset) -> String {
    serde_json::to_string(&data.schema).unwrap()
}

/// `WRITERS` threads store one key at once while as many read it: exactly one write lands, no
/// reader ever sees a partial entry, and the entry left is the dataset.
fn race(open: impl Fn() -> FeatureCache + Sync) {
    let (key, dataset) = penguins();
    let barrier = Arc::new(Barrier::new(WRITERS * 2));
    let (written, seen): (Vec<bool>, Vec<Vec<&'static str>>) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let cache = open();
                let barrier = barrier.clone();
                let (key, dataset) = (&key, &dataset);
                scope.spawn(move || {
                    barrier.wait();
                    cache.save(key, dataset, false).unwrap()
                })
            })
            .collect();
        let readers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let cache = open();
                let barrier = barrier.clone();
                let key = &key;
                scope.spawn(move || {
                    barrier.wait();
                    (0..20)
                        .map(|_| match cache.load(key) {
                            Lookup::Hit(_) => "hit",
                            Lookup::Miss => "miss",
                            Lookup::Unusable(reason) => panic!("a reader saw {reason}"),
                        })
                        .collect()
                })
            })
            .collect();
        (
            writers.into_iter().map(|w| w.join().unwrap()).collect(),
            readers.into_iter().map(|r| r.join().unwrap()).collect(),
        )
    });
    assert_eq!(
        written.iter().filter(|&&w| w).count(),
        1,
        "exactly one writer lands: {written:?}"
    );
    // Once a reader has seen the entry it keeps seeing it.
    for reads in &seen {
        let first_hit = reads
            .iter()
            .position(|r| *r == "hit")
            .unwrap_or(reads.len());
        assert!(reads[first_hit..].iter().all(|r| *r == "hit"), "{reads:?}");
    }
    match open().load(&key) {
        Lookup::Hit(cached) => {
            assert_eq!(schema_json(&cached), schema_json(&dataset));
            assert_eq!(cached.source_rows, dataset.source_rows);
        }
        _ => panic!("no entry after the race"),
    }
}

#[test]
fn concurrent_writers_on_one_key_in_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    race(|| FeatureCache::open(root.to_str().unwrap()).unwrap());
    // Only the entry: every writer's temporary file is gone.
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".fwds"), "{names:?}");
}

#[test]
fn concurrent_writers_on_one_key_in_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("flywheel");
    let root = Location::parse("s3://flywheel/cache/features").unwrap();
    race(|| FeatureCache::with_store(root.clone(), BlockingStore::new(moto.store()).unwrap()));
    let store = BlockingStore::new(moto.store()).unwrap();
    assert_eq!(store.list(&root).unwrap().len(), 1);
}

/// The trainer binary with only the given S3 settings (none from the test's environment).
fn trainer_with_s3(cache: &str, env: &[(String, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel-trainer"));
    command
        .arg("--dataset")
        .arg(data("iris.csv"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .args(["--target", "species", "--family", "decision_tree"])
        .args(["--feature-cache", cache])
        .env(
            "FLYWHEEL_TERMINATION_LOG",
            dir.path().join("termination-log"),
        );
    with_s3_env(&mut command, env);
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trials_share_an_s3_cache_and_need_its_credentials() {
    let moto = MotoServer::start();
    moto.create_bucket("flywheel");
    let cache = "s3://flywheel/cache/features";
    let (code, stderr) = trainer_with_s3(cache, &moto.env());
    assert_eq!(code, exit_code::SUCCESS, "{stderr}");
    assert!(stderr.contains("feature cache stored"), "{stderr}");
    let (code, stderr) = trainer_with_s3(cache, &moto.env());
    assert_eq!(code, exit_code::SUCCESS, "{stderr}");
    assert!(
        stderr.contains("feature cache hit: s3://flywheel/cache/features/"),
        "{stderr}"
    );
    let store = BlockingStore::new(moto.store()).unwrap();
    assert_eq!(
        store.list(&Location::parse(cache).unwrap()).unwrap().len(),
        1
    );

    // Asked for an S3 cache without credentials: refused before any work, naming the fix.
    let endpoint_only = vec![("AWS_ENDPOINT_URL".to_string(), moto.endpoint())];
    let (code, stderr) = trainer_with_s3(cache, &endpoint_only);
    assert_eq!(code, exit_code::BAD_INPUT, "{stderr}");
    assert!(
        stderr.contains("--feature-cache") && stderr.contains("AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
}

#[test]
fn a_replaced_entry_overwrites_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::open(dir.path().to_str().unwrap()).unwrap();
    let (key, dataset) = penguins();
    let Location::Local(path) = cache.location(&key) else {
        panic!("a local cache has local entries");
    };
    std::fs::write(&path, b"species,island\nAdelie,Dream\n").unwrap();
    assert!(matches!(cache.load(&key), Lookup::Unusable(reason) if reason.contains("truncated")));
    // Without `replace` the damaged entry stays (a plain store never replaces an entry)…
    assert!(!cache.save(&key, &dataset, false).unwrap());
    assert!(matches!(cache.load(&key), Lookup::Unusable(_)));
    // …with it, it is overwritten.
    assert!(cache.save(&key, &dataset, true).unwrap());
    assert!(matches!(cache.load(&key), Lookup::Hit(_)));
}

fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn trials_share_the_cache_and_recompute_a_corrupt_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("features");
    let flag = ["--feature-cache", cache.to_str().unwrap(), "--seed", "3"];
    let run = |family| trainer(&data("penguins.csv"), "species", family, &flag).succeeded();

    let cold = run("random_forest");
    assert!(
        cold.stderr.contains("feature cache miss"),
        "{}",
        cold.stderr
    );
    assert!(
        cold.stderr.contains("feature cache stored"),
        "{}",
        cold.stderr
    );
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");

    // Another family, same data: a hit, and the same split, schema and metrics as cold.
    let warm = run("random_forest");
    assert!(warm.stderr.contains("feature cache hit"), "{}", warm.stderr);
    assert_eq!(warm.schema(), cold.schema());
    assert_eq!(warm.holdout()["rows"], cold.holdout()["rows"]);
    assert_eq!(warm.result().metrics, cold.result().metrics);
    let other = run("logistic");
    assert!(
        other.stderr.contains("feature cache hit"),
        "{}",
        other.stderr
    );

    // A flipped byte: noticed, ignored, recomputed, replaced.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&entries[0], &bytes).unwrap();
    let repaired = run("random_forest");
    assert!(
        repaired.stderr.contains("feature cache entry ignored")
            && repaired.stderr.contains("checksum"),
        "{}",
        repaired.stderr
    );
    assert_eq!(repaired.result().metrics, cold.result().metrics);
    let again = run("random_forest");
    assert!(
        again.stderr.contains("feature cache hit"),
        "{}",
        again.stderr
    );

    // Another target is another key.
    let island = trainer(&data("penguins.csv"), "island", "decision_tree", &flag).succeeded();
    assert!(
        island.stderr.contains("feature cache miss"),
        "{}",
        island.stderr
    );
    assert_eq!(cache_entries(&cache).len(), 2);
}

#[test]
fn an_empty_cache_uri_means_no_cache() {
    let run = trainer(
        &data("iris.csv"),
        "species",
        "decision_tree",
        &["--feature-cache", ""],
    )
    .succeeded();
    assert!(!run.stderr.contains("feature cache"), "{}", run.stderr);
}

#[test]
fn an_unusable_cache_uri_is_bad_input() {
    let run = trainer(
        &data("iris.csv"),
        "species",
        "decision_tree",
        &["--feature-cache", "gs://bucket/cache"],
    );
    assert_eq!(run.code, exit_code::BAD_INPUT, "{}", run.stderr);
    let message = run.result().message.unwrap_or_default();
    assert!(
        message.contains("--feature-cache") && message.contains("s3://"),
        "{message}"
    );
}
