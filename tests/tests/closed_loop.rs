//! The closed loop on one machine, end to end with real processes: a served model meets traffic
//! whose label relationship shifted (a new region where the rule is reversed), feedback flows
//! into the prediction log, `flywheel retrain` fires on it and runs a child study warm-started
//! from the parent, the child serves as the shadow, `flywheel gate` promotes it on the next
//! labelled rows, and lineage answers both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flywheel_core::api::{Study, Trial, TrialOrigin};
use flywheel_core::feedback::{ServerStats, combine};
use serde_json::{Value, json};

mod common;
use common::{KillOnDrop, binary, free_port, get_json, post_json, scratch, trials};

/// A deterministic stream of numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One row: x1 decides the label, x2 is noise; in region C (the shift) the rule is reversed.
fn row(rng: &mut Lcg, regions: &[&str]) -> (f64, f64, String, String) {
    let x1 = (rng.next() * 2.0 - 1.0) * 10.0;
    let x2 = (rng.next() * 2.0 - 1.0) * 10.0;
    let region = regions[(rng.next() * regions.len() as f64) as usize % regions.len()].to_string();
    let positive = (x1 > 0.0) != (region == "C");
    let label = if positive { "yes" } else { "no" }.to_string();
    (
        (x1 * 100.0).round() / 100.0,
        (x2 * 100.0).round() / 100.0,
        region,
        label,
    )
}

fn run_flywheel(args: &[&str]) -> (i32, String) {
    let output = Command::new(binary("flywheel"))
        .args(args)
        .env("FLYWHEEL_TRAINER", binary("flywheel-trainer"))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn start_server(model_dir: &Path, log_dir: &Path, port: u16) -> KillOnDrop {
    let child = Command::new(binary("flywheel-server"))
        .arg(format!("--model-dir={}", model_dir.display()))
        .arg("--model-name=shift")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--log-dir={}", log_dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(port, "/v2/health/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the server never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// Sends `count` shifted rows in batches, then their ground truth; returns the versions that
/// answered.
fn traffic(port: u16, rng: &mut Lcg, count: usize) -> Vec<String> {
    let mut versions = Vec::new();
    for _ in 0..count / 25 {
        let rows: Vec<_> = (0..25).map(|_| row(rng, &["A", "B", "C"])).collect();
        let instances: Vec<Value> = rows
            .iter()
            .map(|(x1, x2, region, _)| json!({"x1": x1, "x2": x2, "region": region}))
            .collect();
        let (code, response) = post_json(
            port,
            "/v1/models/shift:predict",
            &json!({"instances": instances}),
        );
        assert_eq!(code, 200, "{response}");
        versions.push(
            response["model_version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let feedback: Vec<Value> = response["request_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&rows)
            .map(|(id, (_, _, _, label))| json!({"request_id": id, "actual": label}))
            .collect();
        let (code, answer) = post_json(
            port,
            "/v1/models/shift/feedback",
            &json!({"feedback": feedback}),
        );
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["accepted"], 25, "{answer}");
    }
    versions
}

fn load_study(dir: &Path) -> Study {
    serde_json::from_slice(&std::fs::read(dir.join("study.json")).unwrap()).unwrap()
}

fn winner_dir(dir: &Path) -> PathBuf {
    let study = load_study(dir);
    let uri = study
        .status
        .unwrap()
        .best_trial
        .unwrap()
        .artifact_uri
        .unwrap();
    PathBuf::from(uri.strip_prefix("file://").unwrap_or(&uri))
}

fn version_of(model_dir: &Path) -> String {
    let card: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("model.json")).unwrap()).unwrap();
    card["version"].as_str().unwrap().to_string()
}

/// The parent's table (regions A and B only, where the label is x1 > 0) and its study manifest
/// in `scratch`; returns the manifest.
fn parent_study(scratch: &Path, rng: &mut Lcg) -> PathBuf {
    let mut csv = String::from("x1,x2,region,label\n");
    for _ in 0..300 {
        let (x1, x2, region, label) = row(rng, &["A", "B"]);
        csv.push_str(&format!("{x1},{x2},{region},{label}\n"));
    }
    let data = scratch.join("shift.csv");
    std::fs::write(&data, csv).unwrap();
    let manifest = scratch.join("shift.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: Study\nmetadata: {{name: shift}}\nspec:\n  dataset: {{uri: {}, target: label}}\n  objective: {{metric: accuracy}}\n  searchSpace:\n    - family: decision_tree\n      params: {{max_depth: {{int: {{low: 3, high: 8}}}}}}\n  algorithm: {{name: random, seed: 5}}\n  budget: {{maxTrials: 4, parallelism: 2}}\n  promotion: {{deployment: shift}}\n",
            data.display()
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn feedback_retrains_a_warm_started_child_that_the_shadow_gate_promotes() {
    let scratch = scratch("closed-loop");
    let root = scratch.join("studies");
    std::fs::create_dir_all(&root).unwrap();

    let mut rng = Lcg(7);
    let manifest = parent_study(&scratch, &mut rng);
    let parent_dir = root.join("shift");
    let output = Command::new(binary("flywheel"))
        .args(["run", manifest.to_str().unwrap(), "--no-serve", "--dir"])
        .arg(&parent_dir)
        .env("FLYWHEEL_TRAINER", binary("flywheel-trainer"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let parent_model = winner_dir(&parent_dir);
    let parent_version = version_of(&parent_model);

    // Production: region C opened, where the rule is reversed.
    let log_dir = scratch.join("log");
    let port = free_port();
    let server = start_server(&parent_model, &log_dir, port);
    traffic(port, &mut rng, 300);
    // What the operator reads from each replica: the server's stats in core's wire type.
    let (code, stats) = get_json(port, "/v1/models/shift/stats").unwrap();
    assert_eq!(code, 200, "{stats}");
    let stats: ServerStats = serde_json::from_value(stats).unwrap();
    let (labelled, online) = combine(&[stats], &parent_version);
    assert_eq!(labelled, 300);
    let online = online.unwrap();
    assert_eq!(online.name, "accuracy");
    assert!(online.value < 0.9, "region C is reversed: {online:?}");

    // Too few labels for this policy: nothing happens.
    let (code, text) = run_flywheel(&[
        "retrain",
        parent_dir.to_str().unwrap(),
        "--log-dir",
        log_dir.to_str().unwrap(),
        "--min-new-labels",
        "1000",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no retraining trigger fired"), "{text}");
    assert!(!root.join("shift-g1").exists());

    // The online accuracy fell below the threshold: a child study runs.
    let (code, text) = run_flywheel(&[
        "retrain",
        parent_dir.to_str().unwrap(),
        "--log-dir",
        log_dir.to_str().unwrap(),
        "--metric-threshold",
        "0.9",
        "--parallelism",
        "2",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("MetricThreshold"), "{text}");
    assert!(
        text.contains("worst slice region=C"),
        "the report says why: {text}"
    );
    let child_dir = root.join("shift-g1");
    let child = load_study(&child_dir);
    let origin = child.spec.origin.as_ref().unwrap();
    assert_eq!(
        (origin.parent_study.as_str(), origin.generation),
        ("shift", 1)
    );
    assert_eq!(origin.production_rows, 300);
    assert_eq!(origin.error_slices[0].value, "C");
    assert!(
        origin.error_slices[0].error > 0.9,
        "{:?}",
        origin.error_slices
    );

    // Warm start: the child's first trials re-run the parent's best configurations.
    let parent_trials = trials(&parent_dir);
    let child_trials = trials(&child_dir);
    // Warm start ranks the parent's configurations by objective (first index among equals);
    // the served winner can be a cheaper trial that tied with it, so compare with the top one.
    let objective = |t: &Trial| {
        t.status
            .as_ref()
            .and_then(|s| s.objective)
            .unwrap_or(f64::MIN)
    };
    let top = parent_trials
        .iter()
        .reduce(|best, t| {
            if objective(t) > objective(best) {
                t
            } else {
                best
            }
        })
        .unwrap();
    assert_eq!(child_trials[0].spec.origin, Some(TrialOrigin::WarmStart));
    assert_eq!(child_trials[0].spec.params, top.spec.params);
    assert!(parent_trials.len() == 4 && child_trials.len() == 4);

    // The child serves as the shadow; the gate decides on the next labelled rows.
    let child_model = winner_dir(&child_dir);
    let child_version = version_of(&child_model);
    assert_ne!(child_version, parent_version);
    let (code, loaded) = post_json(
        port,
        "/v2/repository/models/shift/load",
        &json!({"parameters": {"shadow_model_dir": child_model.display().to_string()}}),
    );
    assert_eq!(code, 200, "{loaded}");
    // Every served version traces back to its trial, data and studies.
    let (code, lineage) = get_json(port, "/v1/models/shift/lineage").unwrap();
    assert_eq!(code, 200, "{lineage}");
    assert_eq!(lineage["model"]["version"], parent_version.as_str());
    assert_eq!(lineage["model"]["generation"], 0);
    assert_eq!(lineage["shadow"]["version"], child_version.as_str());
    assert_eq!(lineage["shadow"]["study"], "shift-g1");
    assert_eq!(lineage["shadow"]["generation"], 1);
    assert_eq!(lineage["shadow"]["parent_studies"], json!(["shift"]));
    assert_eq!(lineage["shadow"]["dataset_rows"], 600);
    assert_eq!(get_json(port, "/v1/models/nope/lineage").unwrap().0, 404);
    let versions = traffic(port, &mut rng, 300);
    assert!(
        versions.iter().all(|v| *v == parent_version),
        "the shadow never answers"
    );

    let gate = |samples: &str| {
        run_flywheel(&[
            "gate",
            parent_dir.to_str().unwrap(),
            "--log-dir",
            log_dir.to_str().unwrap(),
            "--candidate",
            &child_version,
            "--samples",
            samples,
            "--margin",
            "0.05",
        ])
    };
    let (code, text) = gate("1000");
    assert_eq!(code, 3, "not enough paired rows yet: {text}");
    let (code, text) = gate("250");
    assert_eq!(code, 0, "the child wins: {text}");
    let verdict: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(verdict["decision"], "promote");
    assert_eq!(verdict["test"], "mcnemar");
    assert!(verdict["pValue"].as_f64().unwrap() < 0.05);
    assert!(
        verdict["candidateMetric"].as_f64().unwrap() > verdict["servingMetric"].as_f64().unwrap()
    );

    // Promotion is one load: the child serves, the shadow slot is emptied.
    let (code, promoted) = post_json(
        port,
        "/v2/repository/models/shift/load",
        &json!({"parameters": {"model_dir": child_model.display().to_string(), "shadow_model_dir": ""}}),
    );
    assert_eq!(code, 200, "{promoted}");
    assert_eq!(promoted["version"], child_version.as_str());
    assert_eq!(promoted["previous_version"], parent_version.as_str());
    drop(server);

    // Lineage, backwards from the child and forwards from the parent.
    let (code, text) = run_flywheel(&["lineage", child_dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{text}");
    let lineage: Value = serde_json::from_str(&text).unwrap();
    let ancestry = lineage["ancestry"].as_array().unwrap();
    assert_eq!(ancestry.len(), 2);
    assert_eq!(ancestry[0]["study"], "shift-g1");
    assert_eq!(ancestry[0]["version"], child_version.as_str());
    assert_eq!(ancestry[0]["trigger"], "MetricThreshold");
    assert_eq!(ancestry[0]["datasetRows"], 600);
    assert_eq!(ancestry[1]["study"], "shift");
    assert_eq!(ancestry[1]["version"], parent_version.as_str());
    assert_ne!(ancestry[0]["datasetDigest"], ancestry[1]["datasetDigest"]);
    let (code, text) = run_flywheel(&["lineage", parent_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("retrained by shift-g1 -> version {child_version}")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Polls `check` every 200 ms for up to `seconds`; panics with `what` and the runner's output.
fn eventually<T>(
    seconds: u64,
    what: &str,
    output: &Path,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; runner output:\n{}",
            std::fs::read_to_string(output).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_watching_runner_retrains_shadows_and_promotes_by_itself() {
    let scratch = scratch("closed-loop-watch");
    let root = scratch.join("studies");
    std::fs::create_dir_all(&root).unwrap();
    let mut rng = Lcg(11);
    let manifest = parent_study(&scratch, &mut rng);
    let policy = scratch.join("deployment.yaml");
    std::fs::write(
        &policy,
        "apiVersion: flywheel.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: shift}\nspec:\n  model: {uri: unused, version: unused}\n  retraining:\n    metricThreshold: 0.9\n    minSamples: 200\n    budget: {maxTrials: 4, parallelism: 2}\n    gate: {samples: 250, margin: 0.05}\n",
    )
    .unwrap();
    let parent_dir = root.join("shift");
    let port = free_port();
    let output = scratch.join("runner.out");
    let runner = KillOnDrop(
        Command::new(binary("flywheel"))
            .args(["run", manifest.to_str().unwrap(), "--dir"])
            .arg(&parent_dir)
            .arg(format!("--serve=127.0.0.1:{port}"))
            .arg(format!("--retraining={}", policy.display()))
            .arg("--retrain-interval-seconds=1")
            .env("FLYWHEEL_TRAINER", binary("flywheel-trainer"))
            .env("FLYWHEEL_SERVER", binary("flywheel-server"))
            .stdout(std::fs::File::create(&output).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lineage = || get_json(port, "/v1/models/shift/lineage").filter(|(code, _)| *code == 200);
    let (_, first) = eventually(300, "the parent's winner to serve", &output, lineage);
    let parent_version = first["model"]["version"].as_str().unwrap().to_string();
    assert!(first["shadow"].is_null(), "{first}");

    // Shifted traffic with feedback: the runner notices, retrains and loads the candidate.
    traffic(port, &mut rng, 300);
    let (_, shadowed) = eventually(
        300,
        "the retraining study's winner as the shadow",
        &output,
        || lineage().filter(|(_, l)| !l["shadow"].is_null()),
    );
    assert_eq!(shadowed["model"]["version"], parent_version.as_str());
    assert_eq!(shadowed["shadow"]["study"], "shift-g1");
    assert_eq!(shadowed["shadow"]["parent_studies"], json!(["shift"]));
    let child_version = shadowed["shadow"]["version"].as_str().unwrap().to_string();
    let child = load_study(&root.join("shift-g1"));
    let origin = child.spec.origin.as_ref().unwrap();
    assert_eq!(origin.trigger, "MetricThreshold");
    // The log is read while the traffic still flows: at least the policy's minSamples.
    assert!(
        (200..=300).contains(&origin.production_rows),
        "{}",
        origin.production_rows
    );

    // More labelled traffic: the gate promotes the candidate; the shadow slot empties.
    traffic(port, &mut rng, 300);
    let (_, promoted) = eventually(120, "the gate to promote the candidate", &output, || {
        lineage().filter(|(_, l)| l["model"]["version"] == child_version.as_str())
    });
    assert!(promoted["shadow"].is_null(), "{promoted}");
    assert_eq!(promoted["model"]["generation"], 1);
    let text = eventually(10, "the decision in the output", &output, || {
        std::fs::read_to_string(&output)
            .ok()
            .filter(|t| t.contains("ShadowPromoted"))
    });
    assert!(text.contains("MetricThreshold"), "{text}");
    assert!(text.contains("promote: candidate"), "{text}");
    drop(runner);
    let _ = std::fs::remove_dir_all(&scratch);
}
