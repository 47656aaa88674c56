//! Parquet datasets (fixtures from scripts/make-parquet-fixtures.py): read into the same table
//! as the CSV they came from, every scalar type and codec, and bad files refused as bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use flywheel_core::protocol::{FailureReason, exit_code};
use flywheel_core::search::space::Task;
use flywheel_trainer::data::{self, RawTable};
use flywheel_trainer::parquet_input::parse_parquet;

mod common;
use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn read(name: &str) -> flywheel_trainer::error::Result<RawTable> {
    parse_parquet(&std::fs::read(fixture(name)).unwrap())
}

fn column<'a>(table: &'a RawTable, name: &str) -> &'a [Option<String>] {
    let index = table.names.iter().position(|n| n == name).unwrap();
    &table.columns[index]
}

#[test]
fn penguins_parquet_prepares_exactly_as_the_csv() {
    let csv = data::parse_csv(&std::fs::read(data("penguins.csv")).unwrap()).unwrap();
    let parquet = read("penguins.parquet").unwrap();
    assert_eq!(parquet.names, csv.names);
    assert_eq!(parquet.rows, csv.rows);
    // Same missing cells; typed int64 columns hold the CSV's "181.0" as "181".
    for (name, (a, b)) in csv
        .names
        .iter()
        .zip(csv.columns.iter().zip(&parquet.columns))
    {
        let missing = |c: &[Option<String>]| c.iter().map(Option::is_none).collect::<Vec<_>>();
        assert_eq!(missing(a), missing(b), "{name}");
    }
    let from_csv = data::infer(csv, "species", Task::Auto).unwrap();
    let from_parquet = data::infer(parquet, "species", Task::Auto).unwrap();
    assert_eq!(
        serde_json::to_value(&from_csv.schema).unwrap(),
        serde_json::to_value(&from_parquet.schema).unwrap()
    );
    for (a, b) in from_csv.features.iter().zip(&from_parquet.features) {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.values), bits(&b.values), "{}", a.name);
        assert_eq!(a.codes, b.codes, "{}", a.name);
    }
}

#[test]
fn every_scalar_type_and_codec_reads_alike() {
    let plain = read("types-none.parquet").unwrap();
    assert_eq!(plain.rows, 24);
    assert_eq!(
        plain.names,
        [
            "flag", "tiny", "count", "big", "small", "ratio", "score", "color", "code", "day",
            "seen", "label"
        ]
    );
    let cells = |name: &str, rows: &[usize]| -> Vec<Option<String>> {
        rows.iter()
            .map(|&r| column(&plain, name)[r].clone())
            .collect()
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(cells("flag", &[0, 1, 2]), [None, s("false"), s("true")]);
    assert_eq!(cells("tiny", &[0, 3]), [s("-2"), s("1")]);
    assert_eq!(cells("big", &[0, 1]), [None, s("1000003")]);
    assert_eq!(cells("small", &[2]), [s("2")]);
    assert_eq!(cells("ratio", &[1, 2]), [s("0.125"), s("0.25")]);
    // NaN and null are both missing; doubles print in shortest round-trip form.
    assert_eq!(cells("score", &[3, 4, 5]), [None, None, s("0.5")]);
    assert_eq!(cells("color", &[0, 5]), [s("red"), None]);
    assert_eq!(cells("code", &[0, 1]), [s("a1"), s("b2")]);
    let day = cells("day", &[0])[0].clone().unwrap();
    assert!(day.starts_with("2024-01-01"), "{day}");
    let seen = cells("seen", &[1])[0].clone().unwrap();
    assert!(seen.starts_with("2024-01-01 12:01"), "{seen}");

    for codec in ["snappy", "zstd"] {
        let table = read(&format!("types-{codec}.parquet")).unwrap();
        assert_eq!(table.names, plain.names, "{codec}");
        assert_eq!(table.columns, plain.columns, "{codec}");
    }
    // Codecs left out of the build: refused with the codec's name and the fix.
    for codec in ["gzip", "lz4"] {
        let error = read(&format!("types-{codec}.parquet")).err().unwrap();
        assert_eq!(error.exit_code(), exit_code::BAD_INPUT);
        let message = error.to_string();
        assert!(
            message.contains(&format!("compressed with {codec}")) && message.contains("snappy"),
            "{message}"
        );
    }

    let data = data::infer(plain, "label", Task::Auto).unwrap();
    let kind = |name: &str| {
        data.schema
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| (c.role, c.kind))
            .unwrap()
    };
    assert_eq!(kind("flag"), ("feature", "boolean"));
    assert_eq!(kind("tiny"), ("feature", "categorical"));
    assert_eq!(kind("ratio"), ("feature", "numeric"));
    assert_eq!(kind("color"), ("feature", "categorical"));
    assert_eq!(kind("label"), ("target", "categorical"));
}

#[test]
fn bad_parquet_files_are_refused_with_the_fix() {
    let message = |result: flywheel_trainer::error::Result<RawTable>| {
        let error = result.err().expect("refused");
        assert_eq!(error.exit_code(), exit_code::BAD_INPUT, "{error}");
        error.to_string()
    };
    let nested = message(read("nested.parquet"));
    assert!(
        nested.contains("\"tags\"") && nested.contains("flatten"),
        "{nested}"
    );
    let binary = message(read("binary.parquet"));
    assert!(
        binary.contains("\"blob\"") && binary.contains("UTF-8"),
        "{binary}"
    );
    let not_parquet = message(parse_parquet(b"species,island\nAdelie,Dream\n"));
    assert!(not_parquet.contains("--format csv"), "{not_parquet}");
    // Cut in the middle: the footer is gone.
    let bytes = std::fs::read(fixture("penguins.parquet")).unwrap();
    let truncated = message(parse_parquet(&bytes[..bytes.len() / 2]));
    assert!(truncated.contains("parquet"), "{truncated}");
    // Data pages overwritten, footer intact: caught while reading rows.
    let mut corrupt = bytes.clone();
    for byte in &mut corrupt[8..600] {
        *byte = 0xa5;
    }
    let corrupt = message(parse_parquet(&corrupt));
    assert!(corrupt.contains("parquet"), "{corrupt}");
}

#[test]
fn the_trainer_trains_on_parquet_like_on_csv() {
    let dir = tempfile::tempdir().unwrap();
    // No telling extension: auto-detection by the magic bytes.
    let unnamed = dir.path().join("penguins.data");
    std::fs::copy(fixture("penguins.parquet"), &unnamed).unwrap();
    let csv = trainer(&data("penguins.csv"), "species", "random_forest", &[]).succeeded();
    for (path, extra) in [
        (fixture("penguins.parquet"), &[][..]),
        (unnamed.clone(), &[][..]),
        (unnamed.clone(), &["--format", "parquet"][..]),
    ] {
        let run = trainer(&path, "species", "random_forest", extra).succeeded();
        assert_eq!(run.result().metrics, csv.result().metrics, "{path:?}");
        assert_eq!(run.schema(), csv.schema());
        assert_eq!(run.holdout()["rows"], csv.holdout()["rows"]);
    }

    // Forced to CSV, the binary file is no CSV.
    let run = trainer(
        &fixture("penguins.parquet"),
        "species",
        "decision_tree",
        &["--format", "csv"],
    );
    assert_eq!(run.code, exit_code::BAD_INPUT, "{}", run.stderr);

    // A missing target names the columns there are.
    let run = trainer(&fixture("penguins.parquet"), "price", "decision_tree", &[]);
    assert_eq!(run.code, exit_code::BAD_INPUT, "{}", run.stderr);
    let result = run.result();
    assert_eq!(result.reason, Some(FailureReason::BadInput));
    let message = result.message.unwrap_or_default();
    assert!(
        message.contains("\"price\"") && message.contains("island"),
        "{message}"
    );

    // A corrupt file.
    let corrupt = dir.path().join("corrupt.parquet");
    let bytes = std::fs::read(fixture("penguins.parquet")).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() - 20]).unwrap();
    let run = trainer(&corrupt, "species", "decision_tree", &[]);
    assert_eq!(run.code, exit_code::BAD_INPUT, "{}", run.stderr);
    assert!(run.result().message.unwrap_or_default().contains("parquet"));

    // An unknown format is a usage error.
    let run = trainer(
        &fixture("penguins.parquet"),
        "species",
        "decision_tree",
        &["--format", "orc"],
    );
    assert_eq!(run.code, exit_code::BAD_INPUT, "{}", run.stderr);
}
