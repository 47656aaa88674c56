use std::io::IsTerminal;

use clap::Parser;
use flywheel_server::{AppState, Config, Error};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// Every request allocates dozens of small, short-lived objects (body, columns, response, ids);
// mimalloc's per-thread free lists serve them faster than glibc's malloc (see BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Config::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("flywheel-server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Error> {
    let listen = config.listen.clone();
    let parent_pid = config.parent_pid;
    // s3:// model folders are downloaded into the cache first and loaded from there.
    let config = flywheel_server::source::prepare(config).await?;
    let state = AppState::load(config)?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen.clone(),
        source,
    })?;
    tracing::info!(%addr, "listening");
    let shutdown = async move {
        tokio::select! {
            () = flywheel_server::shutdown_signal() => {}
            () = flywheel_server::parent_exit(parent_pid) => {}
        }
    };
    flywheel_server::serve(listener, state, shutdown).await
}
