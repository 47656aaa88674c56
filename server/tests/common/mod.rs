//! Shared helpers: start a real server on 127.0.0.1 with real ONNX Runtime, talk to it over HTTP.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use flywheel_server::{AppState, Config};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn expected(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture(name).join("expected.json")).expect("read expected.json");
    serde_json::from_str(&text).expect("parse expected.json")
}

/// Fails with instructions when ONNX Runtime is not where cargo's config says.
pub fn check_ort() {
    let path = std::env::var("ORT_DYLIB_PATH").unwrap_or_default();
    assert!(
        !path.is_empty() && Path::new(&path).exists(),
        "ONNX Runtime not found (ORT_DYLIB_PATH={path:?}): run scripts/fetch-onnxruntime.sh \
         (.cargo/config.toml points ORT_DYLIB_PATH at .tools/onnxruntime/libonnxruntime.so)"
    );
}

pub fn config(fixture_name: &str) -> Config {
    check_ort();
    Config::for_model_dir(fixture(fixture_name))
}

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<tokio::task::JoinHandle<Result<(), flywheel_server::Error>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let state =
            AppState::load(config).unwrap_or_else(|e| panic!("failed to load the model: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(flywheel_server::serve(
            listener,
            state.clone(),
            async move {
                let _ = stop.await;
            },
        ));
        TestServer {
            base: format!("http://{addr}"),
            state,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    pub async fn fixture(name: &str) -> TestServer {
        TestServer::start(config(name)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        read(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    /// POSTs raw bytes with a content type, for malformed bodies.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Stops accepting, drains, and returns the server task's result.
    pub async fn stop(mut self) -> Result<(), flywheel_server::Error> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.handle
            .take()
            .expect("server task")
            .await
            .expect("server task panicked")
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"));
    (status, body)
}

pub fn assert_close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, want {want} (tolerance {tolerance})"
    );
}

/// A fresh folder under the temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "flywheel-server-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of fixture `name` in a fresh folder, its card relabelled as `version`.
pub fn model_copy(name: &str, version: &str) -> PathBuf {
    let dir = temp_dir(version);
    std::fs::copy(fixture(name).join("model.onnx"), dir.join("model.onnx")).unwrap();
    write_card(&dir, name, version);
    dir
}

/// Writes fixture `name`'s card into `dir` as `version`, atomically (write, then rename), as a
/// deployment tool would.
pub fn write_card(dir: &Path, name: &str, version: &str) {
    let mut card: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("model.json")).unwrap())
            .unwrap();
    card["version"] = Value::String(version.to_string());
    let staging = dir.join(".model.json.tmp");
    std::fs::write(&staging, card.to_string()).unwrap();
    std::fs::rename(&staging, dir.join("model.json")).unwrap();
}

/// One sample of a metric: the first line starting with `series` (name plus labels).
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| {
            line.starts_with(series)
                && matches!(line[series.len()..].chars().next(), Some(' ' | '{'))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every record of every prediction-log segment in `dir`, oldest first.
pub fn log_records(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A V2 infer body for the iris models: one row per `rows` entry.
pub fn iris_v2(id: &str, rows: &[[f64; 4]]) -> Value {
    let names = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let inputs: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            serde_json::json!({
                "name": name,
                "datatype": "FP64",
                "shape": [rows.len(), 1],
                "data": rows.iter().map(|r| r[i]).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({"id": id, "inputs": inputs})
}
