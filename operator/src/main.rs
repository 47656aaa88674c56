//! `flywheel`: the Flywheel command-line tool and Kubernetes operator.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flywheel_operator::{Error, crdgen, manifest};

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
    /// Print every model family's hyper-parameters, limits and default search domains (Markdown).
    SearchSpace,
    /// Check manifests with the CRD's rules plus Flywheel's semantic rules; exit 1 on any error.
    Validate {
        /// Manifest files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
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
