//! The prediction server benchmark (issue 4): one run, one load generator, one table.
//!
//! `cargo bench -p flywheel-server --bench serve -- [OPTIONS]` (see `--help`);
//! `scripts/bench-server.sh` runs it with the MLServer baseline, each side pinned to its own core.
//!
//! What it measures, single-row V2 infer requests throughout:
//!
//! 1. In process, no sockets: ONNX Runtime `session.run` on prebuilt tensors (the limit), plus
//!    input tensor building and output reading, plus the server's queue and inference thread
//!    (`Backend::predict`), plus the whole axum router (`tower::ServiceExt::oneshot`: JSON parsing,
//!    validation, metrics middleware, response serialization).
//! 2. The release `flywheel-server` binary in its own process (pinned with `taskset` when
//!    `--server-cpus` is given), driven over loopback by a hyper HTTP/1.1 client on keep-alive
//!    connections: sequential latency (V2 infer, V1 predict, and `/v2/health/live` as the floor of
//!    HTTP + TCP with no work), then throughput at each concurrency for each `--batching`
//!    configuration: off (`--max-batch-size 1`), on (`--max-batch-size 64`, the defaults), or on
//!    with a given adaptive window or fixed delay (see [`Batching`]).
//! 3. Optionally MLServer serving the same scikit-learn pipeline (joblib) with the same requests
//!    from the same load generator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use clap::Parser;
use flywheel_core::model_card::{ColumnKind, ModelCard};
use flywheel_server::model::{ColumnData, Columns, ModelSpec};
use flywheel_server::{AppState, Config};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde_json::{Value, json};
use tower::ServiceExt;

// The binary's allocator, so that the in-process rows measure what the binary runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "flywheel-server benchmark: in-process limits, loopback latency, throughput")]
struct Args {
    /// Model folder (model.onnx, model.json, expected.json); default: the penguins_rf fixture.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Seconds measured per configuration (after a warm-up of a fifth of it, at least 0.5 s).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrency levels (keep-alive connections, one request in flight each).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// CPU list for the server processes (`taskset -c`); unset: not pinned.
    #[arg(long)]
    server_cpus: Option<String>,
    /// The flywheel-server binary; default: the one cargo built alongside this bench.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The `mlserver` executable; with `--mlserver-dir`, adds the MLServer rows.
    #[arg(long)]
    mlserver_bin: Option<PathBuf>,
    /// MLServer's model repository (settings.json + the model's folder).
    #[arg(long)]
    mlserver_dir: Option<PathBuf>,
    /// MLServer's HTTP address, as its settings.json sets it.
    #[arg(long, default_value = "127.0.0.1:8081")]
    mlserver_addr: SocketAddr,
    /// A second model folder (say, one whose inference outweighs HTTP) for which the throughput
    /// rows with batching off and on are measured too.
    #[arg(long)]
    heavy_model_dir: Option<PathBuf>,
    /// Batching configurations measured, each against "off": off, on (the server's defaults with
    /// `--max-batch-size 64`), window=MICROS (`--batch-window-micros`), delay=MICROS
    /// (`--max-batch-delay-micros`, window off).
    #[arg(long, value_delimiter = ',', default_value = "off,on")]
    batching: Vec<Batching>,
    /// Only the in-process measurements (no server processes, no sockets).
    #[arg(long)]
    in_process_only: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One flywheel-server batching configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Batching {
    /// `--max-batch-size 1`.
    Off,
    /// `--max-batch-size 64` and every other flag at its default.
    On,
    /// `--max-batch-size 64 --batch-window-micros N`.
    Window(u64),
    /// `--max-batch-size 64 --batch-window-micros 0 --max-batch-delay-micros N`.
    Delay(u64),
}

impl std::str::FromStr for Batching {
    type Err = String;

    fn from_str(s: &str) -> Result<Batching, String> {
        let micros = |v: &str| {
            v.parse::<u64>()
                .map_err(|e| format!("bad microseconds in {s:?}: {e}"))
        };
        match s.split_once('=') {
            None if s == "off" => Ok(Batching::Off),
            None if s == "on" => Ok(Batching::On),
            Some(("window", v)) => micros(v).map(Batching::Window),
            Some(("delay", v)) => micros(v).map(Batching::Delay),
            _ => Err(format!(
                "unknown batching {s:?}: off, on, window=MICROS or delay=MICROS"
            )),
        }
    }
}

impl Batching {
    fn flags(self) -> Vec<String> {
        let mut flags = vec!["--max-batch-size".to_string()];
        match self {
            Batching::Off => flags.push("1".into()),
            Batching::On => flags.push("64".into()),
            Batching::Window(micros) => flags.extend([
                "64".into(),
                "--batch-window-micros".into(),
                micros.to_string(),
            ]),
            Batching::Delay(micros) => flags.extend([
                "64".into(),
                "--batch-window-micros".into(),
                "0".into(),
                "--max-batch-delay-micros".into(),
                micros.to_string(),
            ]),
        }
        flags
    }

    fn label(self) -> String {
        match self {
            Batching::Off => "off".into(),
            Batching::On => "on (defaults)".into(),
            Batching::Window(0) => "on, no window".into(),
            Batching::Window(micros) => format!("on, window {micros} µs"),
            Batching::Delay(micros) => format!("on, delay {micros} µs"),
        }
    }

    /// A name for the server's log file.
    fn slug(self) -> String {
        match self {
            Batching::Off => "off".into(),
            Batching::On => "on".into(),
            Batching::Window(micros) => format!("window-{micros}"),
            Batching::Delay(micros) => format!("delay-{micros}"),
        }
    }
}

/// Latency samples of one measurement.
struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
}

impl Sample {
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies[i].as_secs_f64() * 1e6
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `f` repeatedly: a warm-up, then `seconds` of timed calls.
fn time_sync(seconds: f64, mut f: impl FnMut()) -> Sample {
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < warm_up(seconds) {
        f();
    }
    let mut latencies = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        f();
        latencies.push(t.elapsed());
    }
    Sample {
        latencies,
        elapsed: started.elapsed(),
        errors: 0,
    }
}

fn warm_up(seconds: f64) -> f64 {
    (seconds / 5.0).max(0.5)
}

/// One keep-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// A request to send again and again.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    method: hyper::Method,
    path: String,
    body: Bytes,
}

impl Target {
    fn request(&self) -> hyper::Request<Full<Bytes>> {
        hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.body.clone()))
            .unwrap()
    }
}

/// Sends one request; true when it came back 200 (the body read whole).
async fn call(sender: &mut SendRequest<Full<Bytes>>, target: &Target) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let Ok(response) = sender.send_request(target.request()).await else {
        return false;
    };
    let ok = response.status() == hyper::StatusCode::OK;
    let body = response.into_body().collect().await;
    ok && body.is_ok()
}

/// `concurrency` connections, each sending `target` back to back for `seconds` (after a warm-up).
async fn load(target: &Target, concurrency: usize, seconds: f64) -> Sample {
    let warm = Duration::from_secs_f64(warm_up(seconds));
    let measure = Duration::from_secs_f64(seconds);
    let start = Instant::now() + warm;
    let end = start + measure;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut sender = connect(target.addr).await;
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let ok = call(&mut sender, &target).await;
                    if t >= start {
                        if ok {
                            latencies.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    if !ok && sender.ready().await.is_err() {
                        sender = connect(target.addr).await;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut sample = Sample {
        latencies: Vec::new(),
        elapsed: measure,
        errors: 0,
    };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        sample.latencies.extend(latencies);
        sample.errors += errors;
    }
    sample
}

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    name: String,
    child: Child,
}

impl Server {
    /// Starts `program`; its stderr goes to `log` (MLServer logs each request's warnings, and
    /// writing them to a terminal would slow it down).
    fn start(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Server {
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .env("RUST_LOG", "warn")
            // scikit-learn warns on every request that the pandas frame has column names.
            .env("PYTHONWARNINGS", "ignore");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name} ({}): {e}", program.display()));
        Server {
            name: name.to_string(),
            child,
        }
    }

    /// Waits until `GET path` answers 200.
    async fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let target = Target {
            addr,
            method: hyper::Method::GET,
            path: path.to_string(),
            body: Bytes::new(),
        };
        loop {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await
                && let Ok((mut sender, connection)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            {
                tokio::spawn(connection);
                if call(&mut sender, &target).await {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited before it was ready: {status}",
                    self.name
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{} not ready in time", self.name));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The benchmark row: the first expected instance without missing values.
fn bench_row(dir: &Path) -> Value {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    expected["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.as_object().unwrap().values().all(|v| !v.is_null()))
        .cloned()
        .expect("expected.json has a row without missing values")
}

/// One V2 request for `instance`; the `parameters` make MLServer's scikit-learn runtime build
/// the same pandas frame (Flywheel accepts and ignores them).
fn v2_body(card: &ModelCard, instance: &Value) -> Bytes {
    let inputs: Vec<Value> = card
        .inputs
        .iter()
        .map(|c| {
            if c.kind == ColumnKind::Categorical {
                json!({"name": c.name, "shape": [1], "datatype": "BYTES",
                       "data": [instance[&c.name]], "parameters": {"content_type": "str"}})
            } else {
                json!({"name": c.name, "shape": [1], "datatype": "FP32",
                       "data": [instance[&c.name]]})
            }
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&json!({"parameters": {"content_type": "pd"}, "inputs": inputs}))
            .unwrap(),
    )
}

struct LatencyRow {
    path: String,
    sample: Sample,
}

struct ThroughputRow {
    server: &'static str,
    model: String,
    /// Mean rows per ONNX Runtime call during the measurement (flywheel only).
    rows_per_call: Option<f64>,
    batching: String,
    concurrency: usize,
    sample: Sample,
}

fn main() {
    let args = Args::parse();
    let dir = args.model_dir.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/penguins_rf")
    });
    let dir = dir.canonicalize().unwrap();
    let seconds = args.seconds;
    let instance = bench_row(&dir);
    let config = Config::for_model_dir(&dir);

    // 1. In process. One session with one intra-op thread, like one server inference thread.
    let env = flywheel_server::backend::environment(&config.ort_dylib_path)
        .expect("run scripts/fetch-onnxruntime.sh");
    let mut session = Session::builder(&env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(dir.join("model.onnx"))
        .unwrap();
    let card = ModelSpec::read_card(&dir).unwrap();
    let model_name = flywheel_server::backend::model_name_from_dir(&dir);
    let spec = ModelSpec::check(
        model_name.clone(),
        card.clone(),
        dir.join("model.onnx"),
        session.inputs(),
        session.outputs(),
    )
    .unwrap();
    let model = spec.name.clone();
    let columns = Columns {
        rows: 1,
        data: card
            .inputs
            .iter()
            .map(|c| match c.kind {
                ColumnKind::Categorical => {
                    ColumnData::Str(vec![instance[&c.name].as_str().unwrap_or("").to_string()])
                }
                _ => ColumnData::F32(vec![
                    instance[&c.name].as_f64().map_or(f32::NAN, |v| v as f32),
                ]),
            })
            .collect(),
    };
    let prebuilt: Vec<(String, DynValue)> = card
        .inputs
        .iter()
        .zip(&columns.data)
        .map(|(c, d)| {
            let value: DynValue = match d {
                ColumnData::F32(v) => Tensor::from_array(([1usize, 1], v.clone()))
                    .unwrap()
                    .into_dyn(),
                ColumnData::Str(v) => Tensor::from_string_array(([1usize, 1], v.as_slice()))
                    .unwrap()
                    .into_dyn(),
            };
            (c.input.clone(), value)
        })
        .collect();
    eprintln!("in process: ort, tensors, backend, router ({seconds} s each)");
    let mut latency: Vec<LatencyRow> = Vec::new();
    let ort_alone = time_sync(seconds, || {
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = prebuilt
            .iter()
            .map(|(name, value)| (Cow::Borrowed(name.as_str()), SessionInputValue::from(value)))
            .collect();
        let outputs = session.run(inputs).unwrap();
        std::hint::black_box(outputs.len());
    });
    latency.push(LatencyRow {
        path: "ort `session.run`, prebuilt tensors (the limit)".into(),
        sample: ort_alone,
    });
    latency.push(LatencyRow {
        path: "+ input tensors and output reading (`model::run`)".into(),
        sample: time_sync(seconds, || {
            let predictions =
                flywheel_server::model::run(&spec, &mut session, columns.clone()).unwrap();
            std::hint::black_box(predictions.len());
        }),
    });
    drop(session);

    let body = v2_body(&card, &instance);
    {
        // Like the server binary on one core: a multi-thread runtime with one worker.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (backend_sample, router_sample) = runtime.block_on(async {
            let state = AppState::load(config.clone()).unwrap();
            let handle = tokio::spawn({
                let state = state.clone();
                let columns = columns.clone();
                let body = body.clone();
                let path = format!("/v2/models/{model_name}/infer");
                async move {
                    let backend = state.current();
                    let backend_sample = time_async(seconds, || {
                        let backend = backend.clone();
                        let columns = columns.clone();
                        async move {
                            backend.predict(columns).await.unwrap();
                        }
                    })
                    .await;
                    let router = flywheel_server::api::router(state.clone());
                    let router_sample = time_async(seconds, || {
                        let router = router.clone();
                        let request = axum::http::Request::post(path.as_str())
                            .header("content-type", "application/json")
                            .body(Body::from(body.clone()))
                            .unwrap();
                        async move {
                            let response = router.oneshot(request).await.unwrap();
                            assert_eq!(response.status(), 200);
                            response.into_body().collect().await.unwrap();
                        }
                    })
                    .await;
                    (backend_sample, router_sample)
                }
            });
            handle.await.unwrap()
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        latency.push(LatencyRow {
            path: "+ server queue and inference thread (`Backend::predict`)".into(),
            sample: backend_sample,
        });
        latency.push(LatencyRow {
            path: "+ axum router, V2 infer, no sockets (`oneshot`)".into(),
            sample: router_sample,
        });
    }

    // 2. and 3.: the load generator, a single-threaded runtime (pin it with taskset).
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server_bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flywheel-server")));
    let mut throughput: Vec<ThroughputRow> = Vec::new();
    client.block_on(async {
        if args.in_process_only {
            return;
        }
        // The benchmark model (with the latency rows), then the heavy one (throughput only).
        let mut models = vec![(dir.clone(), model_name.clone(), body.clone())];
        if let Some(heavy) = &args.heavy_model_dir {
            let heavy = heavy.canonicalize().unwrap();
            let card = ModelSpec::read_card(&heavy).unwrap();
            let body = v2_body(&card, &bench_row(&heavy));
            models.push((
                heavy.clone(),
                flywheel_server::backend::model_name_from_dir(&heavy),
                body,
            ));
        }
        for (index, (dir, model_name, body)) in models.iter().enumerate() {
            for &batching in &args.batching {
                let addr = free_addr();
                let mut flags: Vec<String> = [
                    "--model-dir",
                    dir.to_str().unwrap(),
                    "--listen",
                    &addr.to_string(),
                    "--inference-threads",
                    "1",
                    "--intra-op-threads",
                    "1",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                flags.extend(batching.flags());
                eprintln!("flywheel-server, batching {}, on {addr}", batching.label());
                let mut server = Server::start(
                    "flywheel-server",
                    args.server_cpus.as_deref(),
                    &server_bin,
                    &flags,
                    &std::env::temp_dir().join(format!(
                        "flywheel-bench-{model_name}-batching-{}.log",
                        batching.slug()
                    )),
                );
                server
                    .wait_ready(addr, "/v2/health/ready", Duration::from_secs(60))
                    .await
                    .unwrap();
                let v2 = Target {
                    addr,
                    method: hyper::Method::POST,
                    path: format!("/v2/models/{model_name}/infer"),
                    body: body.clone(),
                };
                if batching == Batching::On && index == 0 {
                    // The product's defaults: batching on. Sequential latency, one connection.
                    let floor = Target {
                        method: hyper::Method::GET,
                        path: "/v2/health/live".into(),
                        body: Bytes::new(),
                        ..v2.clone()
                    };
                    let v1 = Target {
                        path: format!("/v1/models/{model_name}:predict"),
                        body: Bytes::from(
                            serde_json::to_vec(&json!({"instances": [instance]})).unwrap(),
                        ),
                        ..v2.clone()
                    };
                    for (path, target) in [
                        ("server V2 infer, loopback HTTP (keep-alive)", &v2),
                        ("server V1 predict, loopback HTTP (keep-alive)", &v1),
                        ("HTTP floor: GET /v2/health/live, loopback", &floor),
                    ] {
                        latency.push(LatencyRow {
                            path: path.into(),
                            sample: load(target, 1, seconds).await,
                        });
                    }
                }
                for &c in &args.concurrency {
                    eprintln!("  concurrency {c}");
                    let before = batch_totals(addr).await;
                    let sample = load(&v2, c, seconds).await;
                    let after = batch_totals(addr).await;
                    throughput.push(ThroughputRow {
                        server: "flywheel",
                        model: model_name.clone(),
                        rows_per_call: Some((after.0 - before.0) / (after.1 - before.1).max(1.0)),
                        batching: batching.label(),
                        concurrency: c,
                        sample,
                    });
                }
                drop(server);
            }
        }
        if let (Some(bin), Some(repo)) = (&args.mlserver_bin, &args.mlserver_dir) {
            let addr = args.mlserver_addr;
            eprintln!("MLServer on {addr}");
            let mut server = Server::start(
                "mlserver",
                args.server_cpus.as_deref(),
                bin,
                &["start".to_string(), repo.to_str().unwrap().to_string()],
                &std::env::temp_dir().join("flywheel-bench-mlserver.log"),
            );
            let ready = server
                .wait_ready(
                    addr,
                    &format!("/v2/models/{model_name}/ready"),
                    Duration::from_secs(120),
                )
                .await;
            if let Err(error) = ready {
                eprintln!(
                    "skipping MLServer: {error} (see {})",
                    std::env::temp_dir()
                        .join("flywheel-bench-mlserver.log")
                        .display()
                );
                return;
            }
            let v2 = Target {
                addr,
                method: hyper::Method::POST,
                path: format!("/v2/models/{model_name}/infer"),
                body: body.clone(),
            };
            latency.push(LatencyRow {
                path: "MLServer V2 infer, loopback HTTP (keep-alive)".into(),
                sample: load(&v2, 1, seconds).await,
            });
            for &c in &args.concurrency {
                eprintln!("  concurrency {c}");
                throughput.push(ThroughputRow {
                    server: "MLServer",
                    model: model_name.clone(),
                    rows_per_call: None,
                    batching: "off".into(),
                    concurrency: c,
                    sample: load(&v2, c, seconds).await,
                });
            }
            drop(server);
        }
    });

    report(&model, seconds, &args, &mut latency, &mut throughput);
}

/// Rows predicted and ONNX Runtime calls so far, from the server's `flywheel_server_batch_size`
/// histogram (sum and count over every label set).
async fn batch_totals(addr: SocketAddr) -> (f64, f64) {
    let mut sender = connect(addr).await;
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    let total = |name: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        total("flywheel_server_batch_size_sum{"),
        total("flywheel_server_batch_size_count{"),
    )
}

async fn time_async<F, Fut>(seconds: f64, mut f: F) -> Sample
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < warm_up(seconds) {
        f().await;
    }
    let mut latencies = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        f().await;
        latencies.push(t.elapsed());
    }
    Sample {
        latencies,
        elapsed: started.elapsed(),
        errors: 0,
    }
}

fn report(
    model: &str,
    seconds: f64,
    args: &Args,
    latency: &mut [LatencyRow],
    throughput: &mut [ThroughputRow],
) {
    let limit_p50 = latency[0].sample.percentile(0.5);
    let limit_p99 = latency[0].sample.percentile(0.99);
    println!(
        "model {model}, one row per request, {seconds} s per measurement, server pinned to CPUs {}\n",
        args.server_cpus.as_deref().unwrap_or("(not pinned)")
    );
    println!("### Single-row latency, sequential (one request in flight)\n");
    println!("| path | p50 µs | p99 µs | added to ort p50 | added to ort p99 | samples |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut added = None;
    let mut router_added = None;
    let mut floor = None;
    for row in latency.iter_mut() {
        let p50 = row.sample.percentile(0.5);
        let p99 = row.sample.percentile(0.99);
        if row.path.starts_with("server V2") {
            added = Some((p50 - limit_p50, p99 - limit_p99, p50));
        }
        if row.path.contains("`oneshot`") {
            router_added = Some((p50 - limit_p50, p99 - limit_p99));
        }
        if row.path.starts_with("HTTP floor") {
            floor = Some(p50);
        }
        println!(
            "| {} | {p50:.1} | {p99:.1} | {:+.1} | {:+.1} | {} |",
            row.path,
            p50 - limit_p50,
            p99 - limit_p99,
            row.sample.latencies.len()
        );
    }
    println!("\n### Throughput, single-row V2 infer, keep-alive connections\n");
    println!(
        "| server | model | batching | concurrency | requests/s (= rows/s) | rows per ort call | p50 µs | p99 µs | errors |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for row in throughput.iter_mut() {
        let rps = row.sample.per_second();
        println!(
            "| {} | {} | {} | {} | {rps:.0} | {} | {:.1} | {:.1} | {} |",
            row.server,
            row.model,
            row.batching,
            row.concurrency,
            row.rows_per_call
                .map_or_else(|| "—".to_string(), |b| format!("{b:.1}")),
            row.sample.percentile(0.5),
            row.sample.percentile(0.99),
            row.sample.errors
        );
    }
    let mut models: Vec<&str> = Vec::new();
    for row in throughput.iter() {
        if !models.contains(&row.model.as_str()) {
            models.push(&row.model);
        }
    }
    let rate = |server: &str, model: &str, batching: &str, c: usize| {
        throughput
            .iter()
            .find(|r| {
                r.server == server
                    && r.model == model
                    && r.batching == batching
                    && r.concurrency == c
            })
            .map(|r| r.sample.per_second())
    };
    println!("\n### Ratios\n");
    if let Some((p50, p99, total)) = added {
        println!(
            "- server added latency over loopback HTTP (V2 p50 − ort p50): {p50:.1} µs at p50, \
             {p99:.1} µs at p99 (target ≤ 25 µs at p50); end to end {:.1}× the ort limit",
            total / limit_p50
        );
    }
    if let Some((p50, p99)) = router_added {
        println!(
            "- server's own work without sockets (router oneshot − ort): {p50:.1} µs at p50, {p99:.1} µs at p99"
        );
    }
    if let (Some(floor), Some((_, _, total))) = (floor, added) {
        println!(
            "- HTTP + loopback TCP + client with no work at all: {floor:.1} µs p50 ({:.0} % of the V2 round trip)",
            floor / total * 100.0
        );
    }
    let off = Batching::Off.label();
    for model in &models {
        for batching in args.batching.iter().filter(|b| **b != Batching::Off) {
            let label = batching.label();
            for &c in &args.concurrency {
                if let (Some(on), Some(off)) = (
                    rate("flywheel", model, &label, c),
                    rate("flywheel", model, &off, c),
                ) {
                    println!(
                        "- {model}: batching {label} / off at concurrency {c}: {:.2}× ({on:.0} vs {off:.0} rows/s)",
                        on / off
                    );
                }
            }
        }
    }
    let on = Batching::On.label();
    for &c in &args.concurrency {
        if let (Some(fw), Some(ml)) = (
            rate("flywheel", model, &on, c),
            rate("MLServer", model, "off", c),
        ) {
            println!(
                "- flywheel / MLServer throughput at concurrency {c}: {:.1}× ({fw:.0} vs {ml:.0} requests/s)",
                fw / ml
            );
        }
    }
}
