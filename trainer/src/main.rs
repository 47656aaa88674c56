use clap::Parser;

fn main() {
    // `flywheel-trainer ensemble …` composes finished trials; anything else is one trial, whose
    // flags stay top-level so trial pods are configured by flags or `FLYWHEEL_*` alone.
    if std::env::args_os().nth(1).is_some_and(|a| a == "ensemble") {
        let args = flywheel_trainer::cli::EnsembleArgs::parse_from(std::env::args_os().skip(1));
        std::process::exit(flywheel_trainer::ensemble_with(&args));
    }
    let args = flywheel_trainer::cli::Args::parse();
    std::process::exit(flywheel_trainer::main_with(&args));
}
