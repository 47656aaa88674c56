//! The built-in Flywheel trial: CSV or Parquet → schema (feature cache) → features → one model
//! family (holdout or k-fold) → ONNX pipeline → parity gate → model card. See
//! docs/trial-protocol.md for the contract it speaks.

pub mod boost;
pub mod cache;
pub mod cli;
pub mod data;
pub mod ensemble;
pub mod error;
pub mod features;
pub mod linear;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod onnx;
pub mod parallel;
pub mod params;
pub mod parity;
pub mod parquet_input;
pub mod production;
pub mod svm;
pub mod tree;
pub mod trial;

use flywheel_core::protocol::{TERMINATION_LOG, TrialResult, exit_code};

/// Builds an ensemble (`flywheel-trainer ensemble`), records its result like a trial's, and
/// returns the process exit code.
pub fn ensemble_with(args: &cli::EnsembleArgs) -> i32 {
    let started = std::time::Instant::now();
    let termination_log = termination_log();
    match ensemble::run(args) {
        Ok(result) => {
            trial::write_result(&args.output, &termination_log, &result);
            exit_code::SUCCESS
        }
        Err(error) => {
            let mut result = TrialResult::failed(error.reason(), error.to_string());
            result.timings.total_seconds = started.elapsed().as_secs_f64();
            trial::write_result(&args.output, &termination_log, &result);
            eprintln!("ensemble failed: {error}");
            error.exit_code()
        }
    }
}

fn termination_log() -> std::path::PathBuf {
    std::env::var_os("FLYWHEEL_TERMINATION_LOG").map_or_else(
        || std::path::PathBuf::from(TERMINATION_LOG),
        std::path::PathBuf::from,
    )
}

/// Runs a trial, records its result, and returns the process exit code.
pub fn main_with(args: &cli::Args) -> i32 {
    let termination_log = termination_log();
    let started = std::time::Instant::now();
    match trial::run(args) {
        Ok(result) => {
            trial::write_result(&args.output, &termination_log, &result);
            eprintln!("trial succeeded: {:?}", result.metrics);
            exit_code::SUCCESS
        }
        Err(error) => {
            let mut result = TrialResult::failed(error.reason(), error.to_string());
            result.timings.total_seconds = started.elapsed().as_secs_f64();
            trial::write_result(&args.output, &termination_log, &result);
            eprintln!("trial failed: {error}");
            error.exit_code()
        }
    }
}
