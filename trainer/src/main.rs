use clap::Parser;

fn main() {
    let args = flywheel_trainer::cli::Args::parse();
    std::process::exit(flywheel_trainer::main_with(&args));
}
