//! `flywheel`: the Flywheel command-line tool and Kubernetes operator.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flywheel_operator::{Error, controller, crdgen, local, manifest};

/// Self-serve machine learning on Kubernetes: studies in, served models out.
#[derive(Debug, Parser)]
#[command(name = "flywheel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (Study, Trial, ModelDeployment) as YAML.
    Crdgen,
    /// Run the Kubernetes operator: Studies become trial Jobs, winners become prediction
    /// services (what the Helm chart runs).
    Operator(Box<controller::entry::OperatorArgs>),
    /// Run a Study on this machine: trials as local processes, results in a study directory,
    /// the winner served. Run the same command again to resume an interrupted study.
    Run(RunArgs),
    /// Write a self-contained HTML report of a study directory (plots, leaderboard, lineage).
    Report {
        /// The study directory `flywheel run` wrote.
        dir: PathBuf,
        /// Output file; default DIR/report.html.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read a served model's prediction log; when the retraining policy fires, write and run the
    /// retraining study (parent data + labelled production rows, warm-started from the parent).
    Retrain(RetrainArgs),
    /// The shadow gate: does the candidate (served as the shadow) beat the serving model on
    /// labelled production rows? Exit 0: promote, 1: reject, 3: not enough rows yet.
    Gate(GateArgs),
    /// Show where a study's model came from (trial, parameters, data, parent studies) and the
    /// retraining studies it led to.
    Lineage {
        /// The study directory `flywheel run` or `flywheel retrain` wrote.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Find the CSV and Parquet tables under a folder or s3://bucket/prefix: profile each, propose
    /// targets (with the task each implies and why), find joinable tables, and draft a Study per
    /// target (docs/discover.md).
    Discover(DiscoverArgs),
    /// Print every model family's hyper-parameters, limits and default search domains (Markdown).
    SearchSpace,
    /// Check manifests with the CRD's rules plus Flywheel's semantic rules; exit 1 on any error.
    Validate {
        /// Manifest files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Apply only the rules the API server applies (the CRDs' structural schema and CEL),
        /// i.e. predict what `kubectl apply` accepts; Flywheel's semantic rules, which the
        /// operator reports as status conditions, are skipped.
        #[arg(long)]
        api_server_rules: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The Study manifest.
    manifest: PathBuf,
    /// Study directory (trials, artifacts, status); default `.flywheel/<study name>`.
    #[arg(long, env = "FLYWHEEL_DIR")]
    dir: Option<PathBuf>,
    /// Trials at once; default the study's budget.parallelism, else the number of cores.
    #[arg(long, env = "FLYWHEEL_PARALLELISM", value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: Option<u32>,
    /// Address to serve the winner on.
    #[arg(
        long,
        env = "FLYWHEEL_SERVE",
        default_value = "127.0.0.1:8080",
        conflicts_with = "no_serve"
    )]
    serve: String,
    /// Finish after the study instead of serving the winner.
    #[arg(long)]
    no_serve: bool,
    /// The trainer executable; default `flywheel-trainer` beside this binary, else on PATH.
    #[arg(long, env = "FLYWHEEL_TRAINER")]
    trainer: Option<PathBuf>,
    /// The server executable; default `flywheel-server` beside this binary, else on PATH.
    #[arg(long, env = "FLYWHEEL_SERVER")]
    server: Option<PathBuf>,
    /// Close the loop while serving: a ModelDeployment manifest whose spec.retraining is the
    /// policy. The prediction log is read every --retrain-interval-seconds; when a trigger fires
    /// the retraining study runs and its winner serves as the shadow until the gate promotes or
    /// rejects it.
    #[arg(long, env = "FLYWHEEL_RETRAINING", conflicts_with = "no_serve")]
    retraining: Option<PathBuf>,
    /// The server's prediction log; default `<study dir>/../logs/<model>` with --retraining,
    /// else no log.
    #[arg(long, env = "FLYWHEEL_LOG_DIR")]
    log_dir: Option<PathBuf>,
    /// Seconds between reads of the prediction log (with --retraining).
    #[arg(
        long,
        env = "FLYWHEEL_RETRAIN_INTERVAL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    retrain_interval_seconds: u64,
}

#[derive(Debug, clap::Args)]
struct DiscoverArgs {
    /// A folder (searched recursively), a single table file, or s3://bucket/prefix (credentials
    /// and endpoint from the standard AWS_* variables).
    root: String,
    /// Rows profiled per table; a larger table is profiled on its first N rows, and the output
    /// says so.
    #[arg(
        long,
        env = "FLYWHEEL_DISCOVER_SAMPLE_ROWS",
        default_value_t = flywheel_core::discover::DEFAULT_SAMPLE_ROWS as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    sample_rows: u64,
    /// Least share of a column's distinct values found in another table's key to report the
    /// pair as a join.
    #[arg(long, default_value_t = flywheel_core::discover::DEFAULT_MIN_OVERLAP)]
    min_overlap: f64,
    /// Target proposals kept per table (best first).
    #[arg(long, default_value_t = flywheel_core::discover::DEFAULT_MAX_TARGETS)]
    max_targets: usize,
    /// Write a draft Study manifest per proposed target into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the discovery as an HTML page to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RetrainArgs {
    /// The parent study's directory (its winner is the serving model).
    study_dir: PathBuf,
    /// The serving model's prediction log (`flywheel-server --log-dir`).
    #[arg(long, env = "FLYWHEEL_LOG_DIR")]
    log_dir: PathBuf,
    /// The model name the server serves it under; default the study's promotion target.
    #[arg(long)]
    model: Option<String>,
    /// A ModelDeployment manifest whose spec.retraining is the policy (flags below override).
    #[arg(long)]
    deployment: Option<PathBuf>,
    /// Retrain after this many labelled predictions of the serving version.
    #[arg(long)]
    min_new_labels: Option<u64>,
    /// Retrain when online accuracy falls below (RMSE rises above) this value.
    #[arg(long)]
    metric_threshold: Option<f64>,
    /// Retrain when the online metric is worse than in training by more than this.
    #[arg(long)]
    max_degradation: Option<f64>,
    /// Retrain when the model is older than this.
    #[arg(long)]
    max_model_age_seconds: Option<u64>,
    /// Labelled predictions the metric triggers need (default 30).
    #[arg(long)]
    min_samples: Option<u64>,
    /// Write the child study's manifest and dataset but do not run it.
    #[arg(long)]
    no_run: bool,
    /// Trials at once for the child study.
    #[arg(long, env = "FLYWHEEL_PARALLELISM", value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: Option<u32>,
    /// The trainer executable; default `flywheel-trainer` beside this binary, else on PATH.
    #[arg(long, env = "FLYWHEEL_TRAINER")]
    trainer: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct GateArgs {
    /// The serving study's directory.
    study_dir: PathBuf,
    /// The prediction log holding both models' predictions and the feedback.
    #[arg(long, env = "FLYWHEEL_LOG_DIR")]
    log_dir: PathBuf,
    /// The candidate's version (the shadow's model.json version).
    #[arg(long)]
    candidate: String,
    /// The model name the server serves; default the study's promotion target.
    #[arg(long)]
    model: Option<String>,
    /// Labelled rows with both predictions needed (default 200).
    #[arg(long)]
    samples: Option<u64>,
    /// Least improvement worth promoting (accuracy points or RMSE units; default 0).
    #[arg(long)]
    margin: Option<f64>,
    /// Significance level (default 0.05).
    #[arg(long)]
    alpha: Option<f64>,
}

/// `name` next to the running executable (cargo puts the workspace's binaries together), else
/// the bare name for a PATH lookup.
fn sibling_executable(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Trainers and the server load ONNX Runtime from `ORT_DYLIB_PATH`. Without it every trial
/// would fail the same way, so check once up front. When the variable is unset, the checkout's
/// fetched copy is handed to the child processes.
fn locate_onnx_runtime() -> Result<Option<PathBuf>, Error> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.exists() {
            Ok(None)
        } else {
            Err(Error::OnnxRuntime {
                message: format!(
                    "ORT_DYLIB_PATH points at {}, which does not exist",
                    path.display()
                ),
            })
        };
    }
    PathBuf::from(".tools/onnxruntime/libonnxruntime.so")
        .canonicalize()
        .map(Some)
        .map_err(|_| Error::OnnxRuntime {
            message: "set ORT_DYLIB_PATH to libonnxruntime.so, or run scripts/fetch-onnxruntime.sh in the checkout".into(),
        })
}

/// The environment trainer and server processes need: ONNX Runtime's location when this
/// process had to find it itself.
fn child_environment() -> Result<Vec<(String, String)>, Error> {
    Ok(locate_onnx_runtime()?
        .map(|path| ("ORT_DYLIB_PATH".to_string(), path.display().to_string()))
        .into_iter()
        .collect())
}

fn discover(args: DiscoverArgs) -> Result<ExitCode, Error> {
    if !(0.0..=1.0).contains(&args.min_overlap) {
        return Err(Error::Local {
            action: "discover tables",
            message: format!(
                "--min-overlap {} is not a share; pass a value from 0 to 1, e.g. 0.5",
                args.min_overlap
            ),
        });
    }
    let options = flywheel_core::discover::DiscoverOptions {
        max_targets_per_table: args.max_targets,
        min_overlap: args.min_overlap,
    };
    let discovery = flywheel_operator::discover::scan(
        &args.root,
        usize::try_from(args.sample_rows).unwrap_or(usize::MAX),
        &options,
    )?;
    if args.json {
        let json = serde_json::to_string_pretty(&discovery).map_err(|e| Error::Serialize {
            what: "the discovery",
            message: e.to_string(),
        })?;
        println!("{json}");
    } else {
        print!("{}", flywheel_operator::discover::text::render(&discovery));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, flywheel_operator::discover::html::page(&discovery)).map_err(
            |source| Error::Write {
                path: path.clone(),
                source,
            },
        )?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.out {
        for path in flywheel_operator::discover::write_drafts(&discovery, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_study(args: RunArgs) -> Result<ExitCode, Error> {
    let text = std::fs::read_to_string(&args.manifest).map_err(|source| Error::Read {
        path: args.manifest.clone(),
        source,
    })?;
    let study = manifest::parse_study(&text).map_err(|errors| Error::InvalidManifest {
        path: args.manifest.display().to_string(),
        errors,
    })?;
    let manifest_dir = args
        .manifest
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let child_env = child_environment()?;
    let name = study.metadata.name.clone().unwrap_or_default();
    let metric = study.spec.objective.metric;
    let model_name = study
        .spec
        .promotion
        .as_ref()
        .map_or_else(|| name.clone(), |p| p.deployment.clone());
    let options = local::RunOptions {
        dir: args.dir,
        parallelism: args.parallelism,
        trainer: args
            .trainer
            .unwrap_or_else(|| sibling_executable("flywheel-trainer")),
        quiet: false,
        env: child_env.clone(),
    };
    println!(
        "study {name}: up to {} trials, optimising {}",
        study.spec.budget.max_trials,
        metric.as_str()
    );
    let summary = local::run(study, &manifest_dir, &options)?;
    println!();
    print!(
        "{}",
        local::leaderboard(&summary.trials, metric.as_str(), metric.direction(), 10)
    );
    if let Some(ensemble) = &summary.ensemble {
        print!(
            "{}",
            local::ensemble::leaderboard_line(ensemble, metric.as_str())
        );
    }
    println!("study directory: {}", summary.dir.display());
    let Some(winner) = summary.winner else {
        println!("no trial qualifies as the winner; nothing to serve");
        return Ok(ExitCode::FAILURE);
    };
    println!("{}", local::winner_line(&winner, metric.as_str()));
    let Some(model_dir) = winner
        .artifact_uri
        .as_deref()
        .map(|uri| PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri)))
    else {
        return Ok(ExitCode::FAILURE);
    };
    println!("model: {}", model_dir.display());
    if args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    let policy = args.retraining.as_deref().map(read_policy).transpose()?;
    let log_dir = args.log_dir.clone().or_else(|| {
        policy.as_ref().map(|_| {
            summary
                .dir
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("logs")
                .join(&model_name)
        })
    });
    let serve = local::ServeOptions {
        listen: args.serve,
        server: args
            .server
            .clone()
            .unwrap_or_else(|| sibling_executable("flywheel-server")),
        model_name: model_name.clone(),
        env: child_env.clone(),
        log_dir: log_dir.clone(),
    };
    let mut child = local::serve(&serve, &model_dir)?;
    println!(
        "\nserving {model_name} on http://{} (Ctrl-C to stop)",
        serve.listen
    );
    let card = std::fs::read(model_dir.join("model.json"))
        .ok()
        .and_then(|bytes| {
            serde_json::from_slice::<flywheel_core::model_card::ModelCard>(&bytes).ok()
        });
    let dataset = summary.study.spec.dataset.uri.clone();
    let dataset_path = PathBuf::from(dataset.strip_prefix("file://").unwrap_or(&dataset));
    let dataset_path = if dataset_path.exists() {
        dataset_path
    } else {
        manifest_dir.join(dataset_path)
    };
    if let Some(card) = card
        && let Some(instance) = local::example_instance(&card, &dataset_path)
    {
        println!(
            "\n{}",
            local::curl_examples(&serve.listen, &model_name, &card, &instance)
        );
    }
    let status = match (policy, log_dir) {
        (Some(policy), Some(log_dir)) => {
            println!(
                "watching the prediction log {} every {} s for retraining",
                log_dir.display(),
                args.retrain_interval_seconds
            );
            local::watch::watch(
                &mut child,
                &summary.dir,
                &local::watch::WatchOptions {
                    model_name: model_name.clone(),
                    listen: serve.listen.clone(),
                    log_dir,
                    interval: std::time::Duration::from_secs(args.retrain_interval_seconds),
                    policy,
                    run: local::RunOptions {
                        dir: None,
                        parallelism: args.parallelism,
                        trainer: options.trainer.clone(),
                        quiet: false,
                        env: child_env,
                    },
                },
            )?
        }
        _ => child.wait().map_err(|source| Error::Serve {
            message: format!("failed to wait for flywheel-server: {source}"),
        })?,
    };
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Crdgen => {
            print!("{}", crdgen::render()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_study(args),
        Command::Retrain(args) => retrain(args),
        Command::Gate(args) => gate(args),
        Command::Lineage { dir, json } => lineage(&dir, json),
        Command::Discover(args) => discover(args),
        Command::Operator(args) => {
            controller::entry::run(*args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { dir, output } => {
            let output = output.unwrap_or_else(|| dir.join("report.html"));
            let count = local::write_report(&dir, &output)?;
            println!("{}: {count} trials", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::SearchSpace => {
            print!("{}", flywheel_core::search::space::catalogue_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            files,
            api_server_rules,
        } => {
            let mut failed = false;
            for path in files {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                let verdict = if api_server_rules {
                    manifest::validate_api_server_rules(&text)
                } else {
                    manifest::validate_manifest(&text)
                };
                match verdict {
                    Ok(kind) => println!("{}: valid {kind}", path.display()),
                    Err(errors) => {
                        failed = true;
                        eprintln!(
                            "{}",
                            Error::InvalidManifest {
                                path: path.display().to_string(),
                                errors,
                            }
                        );
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn served_model_name(served: &local::closed_loop::ServedStudy, explicit: Option<String>) -> String {
    explicit.unwrap_or_else(|| {
        served
            .study
            .spec
            .promotion
            .as_ref()
            .map_or_else(|| served.name.clone(), |p| p.deployment.clone())
    })
}

/// `spec.retraining` of the ModelDeployment manifest at `path` (empty when it has none).
fn read_deployment_policy(
    path: &std::path::Path,
) -> Result<flywheel_core::api::RetrainingPolicy, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let deployment: flywheel_core::api::ModelDeployment =
        serde_saphyr::from_str(&text).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(deployment.spec.retraining.unwrap_or_default())
}

/// The retraining policy of `flywheel run --retraining`, which must set a trigger.
fn read_policy(path: &std::path::Path) -> Result<flywheel_core::api::RetrainingPolicy, Error> {
    let policy = read_deployment_policy(path)?;
    let unset = flywheel_core::api::RetrainingPolicy {
        budget: policy.budget.clone(),
        gate: policy.gate.clone(),
        min_samples: policy.min_samples,
        ..Default::default()
    };
    if policy == unset {
        return Err(Error::Local {
            action: "read the retraining policy",
            message: format!(
                "{} sets no trigger in spec.retraining; set minNewLabels, metricThreshold, maxDegradation or maxModelAgeSeconds",
                path.display()
            ),
        });
    }
    Ok(policy)
}

fn retrain(args: RetrainArgs) -> Result<ExitCode, Error> {
    use local::closed_loop::{RetrainDecision, plan_retraining, read_log, served_study};
    let parent = served_study(&args.study_dir)?;
    let mut policy = match &args.deployment {
        Some(path) => read_deployment_policy(path)?,
        None => flywheel_core::api::RetrainingPolicy::default(),
    };
    policy.min_new_labels = args.min_new_labels.or(policy.min_new_labels);
    policy.metric_threshold = args.metric_threshold.or(policy.metric_threshold);
    policy.max_degradation = args.max_degradation.or(policy.max_degradation);
    policy.max_model_age_seconds = args.max_model_age_seconds.or(policy.max_model_age_seconds);
    policy.min_samples = args.min_samples.or(policy.min_samples);
    if policy == flywheel_core::api::RetrainingPolicy::default() {
        return Err(Error::Local {
            action: "retrain",
            message: "no trigger is set: pass --deployment with spec.retraining, or --min-new-labels, --metric-threshold, --max-degradation or --max-model-age-seconds".into(),
        });
    }
    let model = served_model_name(&parent, args.model);
    let records = read_log(&args.log_dir)?;
    let decision = plan_retraining(
        &args.study_dir,
        &parent,
        &records,
        &model,
        &policy,
        flywheel_core::k8s_openapi::jiff::Timestamp::now(),
    )?;
    let (trigger, child, manifest, dataset) = match decision {
        RetrainDecision::Hold(state) => {
            let online = state
                .online
                .map(|o| format!("online {} {:.4} on {} rows", o.name, o.value, o.samples))
                .unwrap_or_else(|| "no labelled predictions yet".into());
            println!(
                "no retraining trigger fired for {} (version {}): {online}, {} new labels",
                parent.name, parent.card.version, state.new_labels
            );
            return Ok(ExitCode::SUCCESS);
        }
        RetrainDecision::Retrain {
            trigger,
            child,
            manifest,
            dataset,
        } => (trigger, child, manifest, dataset),
    };
    let child_name = child.metadata.name.clone().unwrap_or_default();
    println!("{}: {}", trigger.reason, trigger.message);
    if let Some(origin) = &child.spec.origin {
        println!(
            "retraining study {child_name} (generation {}): {} production rows added to the parent's data -> {}",
            origin.generation,
            origin.production_rows,
            dataset.display()
        );
        for slice in &origin.error_slices {
            println!(
                "  worst slice {}={}: error {:.3} on {} rows (overall {:.3})",
                slice.column, slice.value, slice.error, slice.samples, slice.overall_error
            );
        }
    }
    println!("manifest: {}", manifest.display());
    if args.no_run {
        return Ok(ExitCode::SUCCESS);
    }
    let root = args
        .study_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let child_env = child_environment()?;
    let options = local::RunOptions {
        dir: Some(root.join(&child_name)),
        parallelism: args.parallelism,
        trainer: args
            .trainer
            .unwrap_or_else(|| sibling_executable("flywheel-trainer")),
        quiet: false,
        env: child_env,
    };
    let metric = child.spec.objective.metric;
    let summary = local::run(*child, &root, &options)?;
    print!(
        "{}",
        local::leaderboard(&summary.trials, metric.as_str(), metric.direction(), 5)
    );
    match summary.winner {
        Some(winner) => {
            println!(
                "candidate: {} {}={:.4}; serve it as the shadow, then run `flywheel gate`",
                winner.name,
                metric.as_str(),
                winner.objective
            );
            if let Some(uri) = winner.artifact_uri {
                println!(
                    "candidate model: {}",
                    uri.strip_prefix("file://").unwrap_or(&uri)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("the retraining study produced no qualifying model");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn gate(args: GateArgs) -> Result<ExitCode, Error> {
    use flywheel_core::gate::GateDecision;
    use local::closed_loop::{gate_decision, read_log, served_study};
    let serving = served_study(&args.study_dir)?;
    let model = served_model_name(&serving, args.model);
    let defaults = flywheel_core::gate::GateSettings::default();
    let settings = flywheel_core::gate::GateSettings {
        min_samples: args.samples.unwrap_or(defaults.min_samples),
        margin: args.margin.unwrap_or(defaults.margin),
        alpha: args.alpha.unwrap_or(defaults.alpha),
    };
    let records = read_log(&args.log_dir)?;
    let decision = gate_decision(&records, &model, &serving.card, &args.candidate, &settings);
    println!(
        "{} vs {}: {}",
        args.candidate,
        serving.card.version,
        decision.summary()
    );
    println!("{}", serde_json::to_string(&decision).unwrap_or_default());
    Ok(match decision {
        GateDecision::Promote(_) => ExitCode::SUCCESS,
        GateDecision::Reject(_) => ExitCode::FAILURE,
        GateDecision::Wait { .. } => ExitCode::from(3),
    })
}

fn lineage(dir: &std::path::Path, json: bool) -> Result<ExitCode, Error> {
    let steps = local::closed_loop::ancestry(dir)?;
    let root = dir.parent().unwrap_or(std::path::Path::new("."));
    let study = steps.first().map(|s| s.study.clone()).unwrap_or_default();
    let children = local::closed_loop::descendants(root, &study);
    if json {
        let value = serde_json::json!({
            "ancestry": steps,
            "children": children.iter().map(|(name, version)| serde_json::json!({"study": name, "version": version})).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (depth, step) in steps.iter().enumerate() {
        let indent = "  ".repeat(depth);
        println!(
            "{indent}version {} <- trial {} ({} {}) <- study {} (generation {})",
            step.version,
            step.trial.as_deref().unwrap_or("?"),
            step.family,
            step.params,
            step.study,
            step.generation
        );
        println!(
            "{indent}  data {} ({} rows, sha256 {})",
            step.dataset_uri, step.dataset_rows, step.dataset_digest
        );
        if let (Some(trigger), Some(message)) = (&step.trigger, &step.trigger_message) {
            println!("{indent}  retrained because {trigger}: {message}");
            for slice in &step.error_slices {
                println!(
                    "{indent}    worst slice {}={}: error {:.3} on {} rows",
                    slice.column, slice.value, slice.error, slice.samples
                );
            }
        }
    }
    for (name, version) in children {
        println!(
            "retrained by {name}{}",
            version
                .map(|v| format!(" -> version {v}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
