//! How long one TPE suggestion takes with a history of 100 and 1,000 completed trials, next to
//! Optuna's `TPESampler` on the very same history.
//!
//! `cargo bench -p flywheel-core --bench tpe` writes each history to
//! `target/tpe-bench/history-<n>.json` and prints Flywheel's timings; with `OPTUNA_TIMINGS` naming
//! the JSON file `scripts/bench-tpe-optuna.py` writes from those histories, it prints both side
//! by side. `scripts/bench-tpe.sh` runs the whole comparison.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flywheel_core::api::Direction;
use flywheel_core::search::random::{sample_space, stream};
use flywheel_core::search::space::{Domain, Family, ParamValue, Params};
use flywheel_core::search::tpe::TpeSampler;
use flywheel_core::search::{
    FamilySpace, Observation, ObservationState, Sampler, Space, SuggestContext,
};
use serde_json::{Value, json};

const SIZES: [usize; 2] = [100, 1000];
const SEED: u64 = 42;

fn float(low: f64, high: f64, log: bool) -> Domain {
    Domain::Float {
        low,
        high,
        log,
        steps: None,
    }
}

fn int(low: i64, high: i64, log: bool) -> Domain {
    Domain::Int { low, high, log }
}

/// A gradient-boosting-like space: linear and log floats, linear and log ints, a categorical.
fn space() -> Space {
    let domains = BTreeMap::from([
        ("learning_rate".to_string(), float(0.01, 0.3, true)),
        ("subsample".to_string(), float(0.5, 1.0, false)),
        ("l2".to_string(), float(1e-3, 10.0, true)),
        ("max_depth".to_string(), int(3, 12, false)),
        ("max_leaves".to_string(), int(8, 128, true)),
        ("n_estimators".to_string(), int(50, 1000, true)),
        (
            "booster".to_string(),
            Domain::Categorical {
                values: ["gbtree", "dart", "goss"]
                    .map(|v| ParamValue::Str(v.to_string()))
                    .to_vec(),
            },
        ),
    ]);
    Space {
        families: vec![FamilySpace {
            family: Family::GradientBoosting,
            domains,
            fixed: Params::new(),
        }],
    }
}

/// A smooth synthetic loss with its optimum inside the box, deterministic in the parameters.
fn objective(params: &Params) -> f64 {
    let num = |name: &str| params[name].as_f64().unwrap_or(f64::NAN);
    let booster = match params["booster"].as_str() {
        Some("dart") => 0.0,
        Some("gbtree") => 0.1,
        _ => 0.3,
    };
    (num("learning_rate").ln() - 0.05f64.ln()).powi(2)
        + 4.0 * (num("subsample") - 0.8).powi(2)
        + 0.1 * (num("l2").ln() - 1.0f64.ln()).powi(2)
        + ((num("max_depth") - 7.0) / 3.0).powi(2)
        + 0.5 * (num("max_leaves").ln() - 31f64.ln()).powi(2)
        + 0.2 * (num("n_estimators").ln() - 300f64.ln()).powi(2)
        + booster
}

fn history(space: &Space, n: usize) -> Vec<Observation> {
    (0..n)
        .map(|i| {
            let index = u32::try_from(i).expect("histories are small");
            let point =
                sample_space(space, &mut stream(SEED, index, 0)).expect("the space is samplable");
            let value = objective(&point.params);
            Observation {
                family: point.family,
                params: point.params,
                state: ObservationState::Complete,
                value: Some(value),
            }
        })
        .collect()
}

fn domain_json(domain: &Domain) -> Value {
    match domain {
        Domain::Float { low, high, log, .. } => {
            json!({"type": "float", "low": low, "high": high, "log": log})
        }
        Domain::Int { low, high, log } => {
            json!({"type": "int", "low": low, "high": high, "log": log})
        }
        Domain::Categorical { values } => json!({"type": "categorical", "choices": values}),
    }
}

/// The history as `scripts/bench-tpe-optuna.py` reads it, with the sampler settings to mirror.
fn history_json(
    space: &Space,
    history: &[Observation],
    sampler: &TpeSampler,
    repeats: usize,
) -> Value {
    let domains: serde_json::Map<String, Value> = space.families[0]
        .domains
        .iter()
        .map(|(name, domain)| (name.clone(), domain_json(domain)))
        .collect();
    let trials: Vec<Value> = history
        .iter()
        .map(|o| json!({"params": o.params, "value": o.value}))
        .collect();
    json!({
        "direction": "minimize",
        "space": domains,
        "trials": trials,
        "startup_trials": sampler.startup_trials,
        "candidates": sampler.candidates,
        "gamma": sampler.gamma,
        "repeats": repeats,
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The median wall time of one suggestion, in microseconds.
fn time_suggest(
    sampler: &TpeSampler,
    space: &Space,
    history: &[Observation],
    repeats: usize,
) -> f64 {
    let index = u32::try_from(history.len()).expect("histories are small");
    let ctx = SuggestContext {
        space,
        history,
        direction: Direction::Minimize,
        seed: SEED,
        index,
    };
    for _ in 0..3 {
        black_box(sampler.suggest(black_box(&ctx)));
    }
    let samples = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            black_box(sampler.suggest(black_box(&ctx)));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(samples)
}

fn output_dir() -> PathBuf {
    std::env::var_os("TPE_BENCH_DIR").map_or_else(
        || {
            let core = Path::new(env!("CARGO_MANIFEST_DIR"));
            core.parent().unwrap_or(core).join("target/tpe-bench")
        },
        PathBuf::from,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let space = space();
    let sampler = TpeSampler::default();
    let dir = output_dir();
    std::fs::create_dir_all(&dir)?;
    let optuna: Option<Value> = match std::env::var_os("OPTUNA_TIMINGS") {
        Some(path) => Some(serde_json::from_str(&std::fs::read_to_string(path)?)?),
        None => None,
    };

    println!("TPE suggest, median of repeated runs (7 parameters, 24 candidates, startup 10)");
    println!("| history size | flywheel µs | optuna µs | ratio (optuna / flywheel) |");
    println!("|---:|---:|---:|---:|");
    for n in SIZES {
        let repeats = if n <= 100 { 201 } else { 51 };
        let history = history(&space, n);
        let path = dir.join(format!("history-{n}.json"));
        std::fs::write(
            &path,
            serde_json::to_string(&history_json(&space, &history, &sampler, repeats))?,
        )?;
        let flywheel = time_suggest(&sampler, &space, &history, repeats);
        let theirs = optuna
            .as_ref()
            .and_then(|timings| timings.get(n.to_string())?.get("median_us")?.as_f64());
        match theirs {
            Some(theirs) => println!(
                "| {n} | {flywheel:.1} | {theirs:.1} | {:.1}x |",
                theirs / flywheel
            ),
            None => println!("| {n} | {flywheel:.1} | – | – |"),
        }
    }
    eprintln!("histories written to {}", dir.display());
    Ok(())
}
