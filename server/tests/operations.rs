//! Batching, back-pressure, metrics, the OpenAPI document, shutdown and startup failures.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};

fn iris_rows(n: usize) -> Value {
    json!({"instances": vec![json!([5.9, 3.0, 5.1, 1.8]); n]})
}

/// Parses `name{...model_version="v"} value` style sample lines.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| {
            line.starts_with(name)
                && (line[name.len()..].starts_with('{') || line[name.len()..].starts_with(' '))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_for_queue_depth(server: &TestServer, depth: f64) {
    for _ in 0..200 {
        if sample(&server.metrics().await, "flywheel_server_queue_depth") == Some(depth) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("queue depth never reached {depth}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_coalesce_into_one_batch() {
    let server = TestServer::fixture("iris_logistic").await;
    let backend = server.state.current();
    let pause = backend.pause().await.unwrap();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let client = server.client.clone();
            let url = server.url("/v1/models/iris_logistic:predict");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&iris_rows(2))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    // One request is held by the batcher waiting for a thread; five wait in the queue.
    wait_for_queue_depth(&server, 5.0).await;
    drop(pause);
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "flywheel_server_batch_size_count"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "flywheel_server_batch_size_sum"),
        Some(12.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "flywheel_server_predictions_total"),
        Some(12.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_max_batch_size() {
    let mut config = common::config("iris_logistic");
    config.max_batch_size = 4;
    let server = TestServer::start(config).await;
    let pause = server.state.current().pause().await.unwrap();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let client = server.client.clone();
            let url = server.url("/v1/models/iris_logistic:predict");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&iris_rows(2))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    wait_for_queue_depth(&server, 3.0).await;
    drop(pause);
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "flywheel_server_batch_size_count"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "flywheel_server_batch_size_sum"),
        Some(8.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_with_retry_after() {
    let mut config = common::config("iris_logistic");
    config.max_queue_size = 1;
    let server = TestServer::start(config).await;
    let pause = server.state.current().pause().await.unwrap();
    let url = server.url("/v1/models/iris_logistic:predict");
    // The first is taken by the batcher (waiting for a thread), the second fills the queue.
    let mut held = Vec::new();
    for depth in [0.0, 1.0] {
        let (client, url) = (server.client.clone(), url.clone());
        held.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&iris_rows(1))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
        if depth == 0.0 {
            // Depth 0 is also the state before the request arrives: give it time to be taken.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_for_queue_depth(&server, depth).await;
    }
    let response = server
        .client
        .post(&url)
        .json(&iris_rows(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("queue is full"),
        "{body}"
    );
    let v2 = json!({"inputs": [
        {"name": "sepal_length", "datatype": "FP32", "shape": [1], "data": [5.0]},
        {"name": "sepal_width", "datatype": "FP32", "shape": [1], "data": [3.0]},
        {"name": "petal_length", "datatype": "FP32", "shape": [1], "data": [1.5]},
        {"name": "petal_width", "datatype": "FP32", "shape": [1], "data": [0.2]}
    ]});
    assert_eq!(
        server.post("/v2/models/iris_logistic/infer", &v2).await.0,
        429
    );
    drop(pause);
    for request in held {
        assert_eq!(request.await.unwrap(), 200);
    }
    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "flywheel_server_queue_rejections_total"),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_predictions_time_out_with_504() {
    let mut config = common::config("iris_logistic");
    config.request_timeout_ms = 100;
    let server = TestServer::start(config).await;
    let pause = server.state.current().pause().await.unwrap();
    let (status, body) = server
        .post("/v1/models/iris_logistic:predict", &iris_rows(1))
        .await;
    assert_eq!(status, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("100 ms"), "{body}");
    drop(pause);
    // The server keeps working afterwards.
    assert_eq!(
        server
            .post("/v1/models/iris_logistic:predict", &iris_rows(1))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn metrics_expose_every_family() {
    let server = TestServer::fixture("iris_logistic").await;
    assert_eq!(
        server
            .post("/v1/models/iris_logistic:predict", &iris_rows(3))
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .post(
                "/v1/models/iris_logistic:predict",
                &json!({"instances": []})
            )
            .await
            .0,
        400
    );
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let metrics = response.text().await.unwrap();
    for name in [
        "flywheel_server_request_duration_seconds",
        "flywheel_server_requests_total",
        "flywheel_server_queue_duration_seconds",
        "flywheel_server_inference_duration_seconds",
        "flywheel_server_batch_size",
        "flywheel_server_predictions_total",
        "flywheel_server_queue_depth",
        "flywheel_server_queue_rejections_total",
        "flywheel_server_shadow_dropped_total",
        "flywheel_server_shadow_failures_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(
        metrics.contains(
            "flywheel_server_requests_total{method=\"POST\",route=\"/v1/models/{name_action}\",code=\"200\",model_version=\"iris_logistic-fixture-1\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("code=\"400\""), "{metrics}");
    assert!(
        metrics.contains("flywheel_server_request_duration_seconds_bucket{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let server = TestServer::fixture("iris_logistic").await;
    let (status, doc) = server.get("/api-doc/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/models", "get"),
        ("/v1/models/{name}", "get"),
        ("/v1/models/{name}:predict", "post"),
        ("/v1/models/{name}/feedback", "post"),
        ("/v1/models/{name}/stats", "get"),
        ("/v1/models/{name}/lineage", "get"),
        ("/v1/models/{name}/production", "get"),
        ("/v2", "get"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/versions/{version}", "get"),
        ("/v2/models/{name}/ready", "get"),
        ("/v2/models/{name}/versions/{version}/ready", "get"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/v2/repository/index", "get"),
        ("/v2/repository/index", "post"),
        ("/v2/repository/models/{name}/load", "post"),
        ("/metrics", "get"),
        ("/api-doc/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "OpenAPI lacks {method} {path}"
        );
    }
    assert_eq!(
        paths.len(),
        20,
        "unexpected paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ErrorBody",
        "PredictRequest",
        "PredictResponse",
        "InferRequest",
        "InferResponse",
        "ModelMetadata",
        "LoadRequest",
        "LoadResponse",
        "IndexEntry",
        "LineageResponse",
    ] {
        assert!(
            schemas.contains_key(schema),
            "OpenAPI lacks schema {schema}"
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_server_task() {
    let server = TestServer::fixture("iris_logistic").await;
    assert_eq!(
        server
            .post("/v1/models/iris_logistic:predict", &iris_rows(1))
            .await
            .0,
        200
    );
    let state = server.state.clone();
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("server stops within 5 s")
        .expect("server ends cleanly");
    assert!(!state.is_ready(), "readiness drops on shutdown");
}

#[tokio::test]
async fn startup_failures_are_clear() {
    let mut config = common::config("iris_logistic");
    config.model_dir = common::fixture("no_such_model");
    let error = flywheel_server::AppState::load(config)
        .err()
        .expect("missing folder fails")
        .to_string();
    assert!(
        error.contains("failed to read") && error.contains("model.json"),
        "{error}"
    );

    // A card naming an output the graph lacks is refused at start, not on the first request.
    let dir = std::env::temp_dir().join(format!("flywheel-server-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        common::fixture("iris_logistic/model.onnx"),
        dir.join("model.onnx"),
    )
    .unwrap();
    let mut card: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("iris_logistic/model.json")).unwrap(),
    )
    .unwrap();
    card["outputs"]["probabilities"] = json!("output_probability");
    std::fs::write(dir.join("model.json"), card.to_string()).unwrap();
    let mut config = common::config("iris_logistic");
    config.model_dir = dir.clone();
    let error = flywheel_server::AppState::load(config)
        .err()
        .expect("bad card fails")
        .to_string();
    assert!(error.contains("no output 'output_probability'"), "{error}");

    card["outputs"]["probabilities"] = json!("probabilities");
    card["inputs"][0]["kind"] = json!("categorical");
    std::fs::write(dir.join("model.json"), card.to_string()).unwrap();
    let mut config = common::config("iris_logistic");
    config.model_dir = dir.clone();
    let error = flywheel_server::AppState::load(config)
        .err()
        .expect("bad kind fails")
        .to_string();
    assert!(
        error.contains("sepal_length") && error.contains("String"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn binary_without_onnx_runtime_names_the_fix() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ort-dylib-path",
            "/nowhere/libonnxruntime.so",
            "--model-dir",
        ])
        .arg(common::fixture("iris_logistic"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed to load ONNX Runtime")
            && stderr.contains("scripts/fetch-onnxruntime.sh"),
        "{stderr}"
    );
}

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    common::check_ort();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel-server"))
        .args(["--listen", "127.0.0.1:0", "--model-dir"])
        .arg(common::fixture("iris_logistic"))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let (status, body) = common::read(
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/models/iris_logistic:predict"))
            .json(&iris_rows(1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], json!(["virginica"]));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean shutdown: {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_rows_are_read_back_from_the_archive_as_of_a_cut() {
    let log = common::temp_dir("production-log");
    let archive = common::temp_dir("production-archive");
    let mut config = common::config("iris_logistic");
    config.log_dir = Some(log.clone());
    config.log_archive_uri = Some(format!("file://{}", archive.display()));
    config.log_segment_seconds = 1;
    let server = TestServer::start(config).await;
    let (status, body) = server
        .post("/v1/models/iris_logistic:predict", &iris_rows(3))
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = body["request_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let before_feedback = jiff::Timestamp::now();
    // Two labels match the prediction, one does not.
    let predicted: Vec<&str> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let wrong = if predicted[2] == "setosa" {
        "virginica"
    } else {
        "setosa"
    };
    let items = json!({"feedback": [
        {"request_id": ids[0], "actual": predicted[0]},
        {"request_id": ids[1], "actual": predicted[1]},
        {"request_id": ids[2], "actual": wrong},
    ]});
    let (status, answer) = server
        .post("/v1/models/iris_logistic/feedback", &items)
        .await;
    assert_eq!(status, 200, "{answer}");

    // The timer rotates the segment, the archiver uploads it: the rows become readable while
    // the server still runs.
    let summary = common::eventually(20, "labelled rows in the archive", || async {
        let (status, summary) = server.get("/v1/models/iris_logistic/production").await;
        assert_eq!(status, 200, "{summary}");
        (summary["labelled_rows"] == 3).then_some(summary)
    })
    .await;
    assert_eq!(summary["serving_version"], "iris_logistic-fixture-1");
    assert_eq!(summary["serving_rows"], 3);
    let accuracy = summary["online"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - 2.0 / 3.0).abs() < 1e-9, "{summary}");
    // Before the feedback was logged, nothing was labelled.
    let (status, cut) = server
        .get(&format!(
            "/v1/models/iris_logistic/production?until={before_feedback}"
        ))
        .await;
    assert_eq!(status, 200, "{cut}");
    assert_eq!(cut["labelled_rows"], 0, "{cut}");
    assert_eq!(cut["until"], before_feedback.to_string());

    let (status, error) = server
        .get("/v1/models/iris_logistic/production?until=yesterday")
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["field"], "until", "{error}");
    server.stop().await.unwrap();

    let plain = TestServer::fixture("iris_logistic").await;
    let (status, error) = plain.get("/v1/models/iris_logistic/production").await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("--log-archive-uri"),
        "{error}"
    );
    plain.stop().await.unwrap();
    std::fs::remove_dir_all(&log).unwrap();
    std::fs::remove_dir_all(&archive).unwrap();
}
