//! Single-row latency: raw in-process ONNX Runtime against the full server over loopback HTTP.
//!
//! `cargo bench -p flywheel-server --bench serve [-- MODEL [ITERATIONS]]`, MODEL a fixture folder
//! name (default penguins_rf). Prints p50/p99/mean per path, in microseconds. With
//! `FLYWHEEL_LOG_DIR` set the server logs every prediction there (one fsync per sequential
//! request: the log's worst case).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flywheel_core::model_card::ColumnKind;
use flywheel_server::model::{ColumnData, Columns, ModelSpec};
use flywheel_server::{AppState, Config};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stats {
    fn row(&mut self) -> String {
        self.samples.sort();
        let n = self.samples.len();
        let pct = |p: f64| self.samples[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e6;
        let mean = self.samples.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64 * 1e6;
        format!(
            "| {:<40} | {:>9.1} | {:>9.1} | {:>9.1} |",
            self.name,
            pct(0.5),
            pct(0.99),
            mean
        )
    }
}

fn time(name: &'static str, iterations: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..iterations / 10 {
        f();
    }
    let samples = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    Stats { name, samples }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let model = args
        .first()
        .cloned()
        .unwrap_or_else(|| "penguins_rf".into());
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let dir = fixture(&model);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let instance = expected["instances"][1].clone();
    let mut config = Config::for_model_dir(&dir);
    config.log_dir = std::env::var_os("FLYWHEEL_LOG_DIR").map(PathBuf::from);

    // Raw ONNX Runtime: one session, one intra-op thread, like one server inference thread.
    let env = flywheel_server::backend::environment(&config.ort_dylib_path)
        .expect("run scripts/fetch-onnxruntime.sh");
    let mut session = Session::builder(&env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(dir.join("model.onnx"))
        .unwrap();
    let card = ModelSpec::read_card(&dir).unwrap();
    let spec = ModelSpec::check(
        model.clone(),
        card.clone(),
        dir.join("model.onnx"),
        session.inputs(),
        session.outputs(),
    )
    .unwrap();
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

    let mut rows = vec![time(
        "ort session.run (prebuilt tensors)",
        iterations,
        || {
            let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = prebuilt
                .iter()
                .map(|(name, value)| (Cow::Borrowed(name.as_str()), SessionInputValue::from(value)))
                .collect();
            let outputs = session.run(inputs).unwrap();
            std::hint::black_box(outputs.len());
        },
    )];
    rows.push(time("ort + tensor build + output read", iterations, || {
        let predictions =
            flywheel_server::model::run(&spec, &mut session, columns.clone()).unwrap();
        std::hint::black_box(predictions.len());
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = AppState::load(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(flywheel_server::serve(
            listener,
            state,
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        let v2 = json!({"inputs": card.inputs.iter().map(|c| json!({
            "name": c.name,
            "shape": [1, 1],
            "datatype": if c.kind == ColumnKind::Categorical { "BYTES" } else { "FP32" },
            "data": [instance[&c.name]],
        })).collect::<Vec<_>>()});
        let v1 = json!({"instances": [instance]});
        for (name, path, body) in [
            (
                "server V2 infer, 1 row, loopback",
                format!("{base}/v2/models/{model}/infer"),
                v2,
            ),
            (
                "server V1 predict, 1 row, loopback",
                format!("{base}/v1/models/{model}:predict"),
                v1,
            ),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            let mut samples = Vec::with_capacity(iterations);
            for i in 0..iterations + iterations / 10 {
                let start = Instant::now();
                let response = client
                    .post(&path)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                if i >= iterations / 10 {
                    samples.push(start.elapsed());
                }
            }
            rows.push(Stats { name, samples });
        }
    });

    println!("model {model}, {iterations} iterations, single row, sequential\n");
    println!(
        "| {:<40} | {:>9} | {:>9} | {:>9} |",
        "path", "p50 µs", "p99 µs", "mean µs"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(42),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11)
    );
    for row in &mut rows {
        println!("{}", row.row());
    }
}
