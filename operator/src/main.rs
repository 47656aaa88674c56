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
    /// Print every model family's hyper-parameters, limits and default search domains (Markdown).
    SearchSpace,
    /// Check manifests with the CRD's rules plus Flywheel's semantic rules; exit 1 on any error.
    Validate {
        /// Manifest files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
    let child_env: Vec<(String, String)> = locate_onnx_runtime()?
        .map(|path| ("ORT_DYLIB_PATH".to_string(), path.display().to_string()))
        .into_iter()
        .collect();
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
    println!("study directory: {}", summary.dir.display());
    let Some(winner) = summary.winner else {
        println!("no trial qualifies as the winner; nothing to serve");
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "winner: {} ({}) {}={:.4}",
        winner.name,
        winner.family,
        metric.as_str(),
        winner.objective
    );
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
    let serve = local::ServeOptions {
        listen: args.serve,
        server: args
            .server
            .unwrap_or_else(|| sibling_executable("flywheel-server")),
        model_name: model_name.clone(),
        env: child_env,
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
    let status = child.wait().map_err(|source| Error::Serve {
        message: format!("failed to wait for flywheel-server: {source}"),
    })?;
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
        Command::Validate { files } => {
            let mut failed = false;
            for path in files {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                match manifest::validate_manifest(&text) {
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
