//! Issue 17: tables whose target and features span 1e-3 to 1e6 (a target from 1e-3 to 1e6 next
//! to features in the hundreds of thousands, a 0.0/1.0 flag) train, export and pass the parity
//! gate in every family, and the ONNX checker accepts every file. Before the export computed the
//! model in double, float32 arithmetic on the large terms failed these trials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use flywheel_core::model_card::ColumnKind;

mod common;
use common::*;

/// A deterministic uniform in [0, 1) (splitmix64), so the table is the same on every machine.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `rows` rows: `tiny` in [1e-3, 1e-2], `big` in [1e5, 1e6], `spread` log-uniform over
/// [1e-3, 1e6], `mid` around 50, `flag` 0.0/1.0, `kind` a string category; `price` (1e-3 to
/// 1e6) and `band` (six classes cut from a score of the same features).
fn write_table(dir: &Path, rows: usize) -> PathBuf {
    let mut u = Uniform(17);
    let mut csv = String::from("tiny,big,spread,mid,flag,kind,price,band\n");
    for _ in 0..rows {
        let tiny = 1e-3 + 9e-3 * u.next();
        let big = 1e5 + 9e5 * u.next();
        let spread = 10f64.powf(-3.0 + 9.0 * u.next());
        let mid = 40.0 + 20.0 * u.next();
        let flag = if u.next() < 0.4 { 1.0 } else { 0.0 };
        let kind = ["a", "b", "c"][(u.next() * 3.0) as usize];
        // Mostly `spread` (so it spans 1e-3 to 1e6 too) plus terms from the large features: a
        // linear model's intercept and coefficients times features run in the hundreds of
        // thousands while many predictions are below 1.
        let price = spread * (0.9 + 0.2 * u.next())
            + 1e-3 * tiny * big * flag
            + if kind == "b" { 2e-3 } else { 0.0 };
        let score = spread.log10() + 3.0 * big / 1e6 + 100.0 * tiny + flag + (u.next() - 0.5) * 1.5;
        let band = ((score + 2.5) / 2.0).clamp(0.0, 5.0) as usize;
        csv.push_str(&format!(
            "{tiny},{big},{spread},{mid},{flag:.1},{kind},{price},b{band}\n"
        ));
    }
    let path = dir.join("wide.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Every family trains on the table for `target`, passes the parity gate and the ONNX checker,
/// and reads `flag` as boolean; `check` looks at each run.
fn every_family(target: &str, task: &str, linear: &str, check: impl Fn(&str, &Run)) {
    let dir = tempfile::tempdir().unwrap();
    let table = write_table(dir.path(), 1500);
    for family in [
        linear,
        "svm",
        "decision_tree",
        "random_forest",
        "gradient_boosting",
        "mlp",
    ] {
        let run = trainer(
            &table,
            target,
            family,
            &["--seed", "5", "--task", task, "--budget", "60"],
        )
        .succeeded();
        let kinds: Vec<(String, ColumnKind)> = run
            .card()
            .inputs
            .iter()
            .map(|i| (i.name.clone(), i.kind))
            .collect();
        assert!(
            kinds.contains(&("flag".to_string(), ColumnKind::Boolean)),
            "{family}: a 0.0/1.0 column is boolean: {kinds:?}"
        );
        check(family, &run);
    }
}

#[test]
fn wide_range_regression_passes_parity_in_every_family() {
    every_family("price", "regression", "linear", |family, run| {
        assert!(
            run.metric("r2") > 0.5,
            "{family}: {:?}",
            run.result().metrics
        );
    });
}

#[test]
fn wide_range_six_classes_pass_parity_in_every_family() {
    every_family("band", "multiclass", "logistic", |family, run| {
        assert_eq!(run.card().classes.len(), 6, "{family}");
    });
}
