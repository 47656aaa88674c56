//! The feedback loop: predictions and feedback in the prediction log, the join, online stats.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{TestServer, assert_close, config, expected};
use serde_json::{Value, json};

const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "flywheel-server-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
}

/// Every record of every segment, oldest first; each line must be one JSON object.
fn records(dir: &Path) -> Vec<Value> {
    segments(dir)
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

async fn predict(server: &TestServer, instances: &[Value]) -> Value {
    let (status, body) = server
        .post(
            "/v1/models/iris_logistic:predict",
            &json!({ "instances": instances }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Some other class than `label`.
fn wrong(label: &str) -> &'static str {
    CLASSES.iter().find(|c| **c != label).unwrap()
}

#[tokio::test]
async fn feedback_drives_online_accuracy() {
    let server = TestServer::fixture("iris_logistic").await;
    let instances = expected("iris_logistic")["instances"]
        .as_array()
        .unwrap()
        .clone();
    let body = predict(&server, &instances).await;
    let ids: Vec<&str> = body["request_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let predicted: Vec<&str> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), instances.len());
    // Every third prediction is marked wrong; the rest right.
    let actuals: Vec<&str> = predicted
        .iter()
        .enumerate()
        .map(|(i, p)| if i % 3 == 0 { wrong(p) } else { *p })
        .collect();
    let correct = actuals
        .iter()
        .zip(&predicted)
        .filter(|(a, p)| a == p)
        .count();

    // One item alone, then the rest in a batch.
    let (status, one) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({"request_id": ids[0], "actual": actuals[0]}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, json!({"accepted": 1, "unknown": [], "duplicate": []}));
    let rest: Vec<Value> = ids[1..]
        .iter()
        .zip(&actuals[1..])
        .map(|(id, actual)| json!({"request_id": id, "actual": actual}))
        .collect();
    let (status, many) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({ "feedback": rest }),
        )
        .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["accepted"], ids.len() - 1);

    let (status, stats) = server.get("/v1/models/iris_logistic/stats").await;
    assert_eq!(status, 200, "{stats}");
    let version = &stats["versions"][0];
    assert_eq!(version["model_version"], body["model_version"]);
    assert_eq!(version["predictions"], ids.len());
    assert_eq!(version["labelled"], ids.len());
    assert_eq!(version["window"], ids.len());
    let want = correct as f64 / ids.len() as f64;
    assert_close(
        version["accuracy"].as_f64().unwrap(),
        want,
        1e-12,
        "accuracy",
    );
    assert!(version.get("rmse").is_none(), "{stats}");

    // Correcting the first label: last wins, reported as a duplicate, counted once.
    let (status, again) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({"request_id": ids[0], "actual": predicted[0]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], json!([ids[0]]));
    assert_eq!(again["accepted"], 1);
    let (_, stats) = server.get("/v1/models/iris_logistic/stats").await;
    assert_eq!(stats["versions"][0]["labelled"], ids.len());
    assert_close(
        stats["versions"][0]["accuracy"].as_f64().unwrap(),
        (correct + 1) as f64 / ids.len() as f64,
        1e-12,
        "accuracy after correction",
    );

    let metrics = server.metrics().await;
    let accuracy_line = metrics
        .lines()
        .find(|l| l.starts_with("flywheel_server_online_accuracy{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let reported: f64 = accuracy_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_close(
        reported,
        (correct + 1) as f64 / ids.len() as f64,
        1e-12,
        "gauge",
    );
    assert!(
        metrics.contains("flywheel_server_feedback_total{")
            && metrics.contains("outcome=\"duplicate\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_ids_are_reported_not_refused() {
    let server = TestServer::fixture("iris_logistic").await;
    let body = predict(&server, &[json!([5.1, 3.5, 1.4, 0.2])]).await;
    let id = body["request_ids"][0].as_str().unwrap();
    let (status, answer) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({"feedback": [
                {"request_id": "no-such-id", "actual": "setosa"},
                {"request_id": id, "actual": "setosa"}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "unknown": ["no-such-id"], "duplicate": []})
    );
    let (status, _) = server
        .post(
            "/v1/models/unknown_model/feedback",
            &json!({"request_id": id, "actual": "setosa"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_feedback_is_a_400_naming_the_field() {
    let server = TestServer::fixture("iris_logistic").await;
    let body = predict(&server, &[json!([5.1, 3.5, 1.4, 0.2])]).await;
    let id = body["request_ids"][0].as_str().unwrap();
    for (payload, field) in [
        (json!({"request_id": id, "actual": "daisy"}), "actual"),
        (json!({"request_id": id, "actual": 1.5}), "actual"),
        (json!({"request_id": id}), "actual"),
        (json!({"actual": "setosa"}), "request_id"),
        (json!({"request_id": 7, "actual": "setosa"}), "request_id"),
        (
            json!({"feedback": [{"request_id": id, "actual": "setosa"}, {"request_id": id, "actual": null}]}),
            "feedback[1].actual",
        ),
        (json!({"feedback": []}), "feedback"),
        (json!({"feedback": "x"}), "feedback"),
        (json!([1, 2]), "body"),
    ] {
        let (status, error) = server
            .post("/v1/models/iris_logistic/feedback", &payload)
            .await;
        assert_eq!(status, 400, "{payload} -> {error}");
        assert_eq!(error["field"], field, "{payload} -> {error}");
    }
    // A rejected batch applies nothing.
    let (_, stats) = server.get("/v1/models/iris_logistic/stats").await;
    assert_eq!(stats["versions"][0]["labelled"], 0, "{stats}");
}

#[tokio::test]
async fn regression_feedback_gives_rmse_and_mae() {
    let server = TestServer::fixture("diabetes_linear").await;
    let instances = expected("diabetes_linear")["instances"].clone();
    let (status, body) = server
        .post(
            "/v1/models/diabetes_linear:predict",
            &json!({ "instances": instances }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let predictions: Vec<f64> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let offsets: Vec<f64> = (0..predictions.len()).map(|i| i as f64 - 3.0).collect();
    let items: Vec<Value> = body["request_ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(predictions.iter().zip(&offsets))
        .map(|(id, (p, o))| json!({"request_id": id, "actual": p + o}))
        .collect();
    let (status, answer) = server
        .post(
            "/v1/models/diabetes_linear/feedback",
            &json!({ "feedback": items }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, error) = server
        .post(
            "/v1/models/diabetes_linear/feedback",
            &json!({"request_id": body["request_ids"][0], "actual": "tall"}),
        )
        .await;
    assert_eq!((status, error["field"].as_str()), (400, Some("actual")));

    let (_, stats) = server.get("/v1/models/diabetes_linear/stats").await;
    let version = &stats["versions"][0];
    let n = offsets.len() as f64;
    let rmse = (offsets.iter().map(|o| o * o).sum::<f64>() / n).sqrt();
    let mae = offsets.iter().map(|o| o.abs()).sum::<f64>() / n;
    // Predictions come back as float32 text, so the errors carry float32 rounding.
    assert_close(version["rmse"].as_f64().unwrap(), rmse, 1e-3, "rmse");
    assert_close(version["mae"].as_f64().unwrap(), mae, 1e-3, "mae");
    assert!(version.get("accuracy").is_none(), "{stats}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("flywheel_server_online_rmse{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn log_holds_predictions_and_feedback_once_acknowledged() {
    let dir = temp_dir("log");
    let mut config = config("iris_logistic");
    config.log_dir = Some(dir.clone());
    let server = TestServer::start(config).await;
    let v1 = predict(
        &server,
        &[
            json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}),
            json!([6.7, 3.0, 5.2, 2.3]),
        ],
    )
    .await;
    let (status, v2) = server
        .post(
            "/v2/models/iris_logistic/infer",
            &json!({"id": "v2-request", "inputs": [
                {"name": "sepal_length", "shape": [1], "datatype": "FP32", "data": [5.9]},
                {"name": "sepal_width", "shape": [1], "datatype": "FP32", "data": [3.0]},
                {"name": "petal_length", "shape": [1], "datatype": "FP32", "data": [5.1]},
                {"name": "petal_width", "shape": [1], "datatype": "FP32", "data": [1.8]}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["parameters"]["request_ids"], json!(["v2-request"]));
    let (status, answer) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({"request_id": "v2-request", "actual": "virginica"}),
        )
        .await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)));

    // Read back while the server still runs: an answered request is already on disk.
    let records = records(&dir);
    let predictions: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "prediction")
        .collect();
    let mut ids: Vec<Value> = v1["request_ids"].as_array().unwrap().clone();
    ids.push(json!("v2-request"));
    assert_eq!(
        predictions
            .iter()
            .map(|r| r["request_id"].clone())
            .collect::<Vec<_>>(),
        ids
    );
    let first = predictions[0];
    assert_eq!(first["model"], "iris_logistic");
    assert_eq!(first["model_version"], v1["model_version"]);
    assert_eq!(
        first["inputs"],
        json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
    );
    assert_eq!(first["prediction"], v1["predictions"][0]);
    assert_eq!(first["probabilities"], v1["probabilities"][0]);
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(predictions[1]["inputs"]["petal_width"], 2.3);
    let feedback: Vec<&Value> = records.iter().filter(|r| r["kind"] == "feedback").collect();
    assert_eq!(feedback.len(), 1);
    assert_eq!(feedback[0]["request_id"], "v2-request");
    assert_eq!(feedback[0]["actual"], "virginica");
    assert_eq!(feedback[0]["model_version"], v1["model_version"]);

    // Unknown ids are logged too (for an offline join), without a version.
    let (status, answer) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({"request_id": "evicted-or-unknown", "actual": "setosa"}),
        )
        .await;
    assert_eq!(
        (status, answer["unknown"].clone()),
        (200, json!(["evicted-or-unknown"]))
    );
    let last = crate::records(&dir).pop().unwrap();
    assert_eq!(last["kind"], "feedback");
    assert_eq!(last["request_id"], "evicted-or-unknown");
    assert!(last["model_version"].is_null(), "{last}");
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn restart_appends_a_new_segment_and_keeps_the_old() {
    let dir = temp_dir("restart");
    let mut config = config("iris_logistic");
    config.log_dir = Some(dir.clone());

    let server = TestServer::start(config.clone()).await;
    let first = predict(&server, &[json!([5.1, 3.5, 1.4, 0.2])]).await;
    server.stop().await.unwrap();
    let before = segments(&dir);
    assert_eq!(before.len(), 1, "{before:?}");
    let before_text = std::fs::read_to_string(&before[0]).unwrap();
    assert!(before_text.contains(first["request_ids"][0].as_str().unwrap()));

    let server = TestServer::start(config).await;
    let second = predict(&server, &[json!([6.7, 3.0, 5.2, 2.3])]).await;
    server.stop().await.unwrap();
    let after = segments(&dir);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[0]);
    assert_eq!(std::fs::read_to_string(&after[0]).unwrap(), before_text);
    let ids: Vec<Value> = records(&dir)
        .iter()
        .map(|r| r["request_id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            first["request_ids"][0].clone(),
            second["request_ids"][0].clone()
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn segments_rotate_by_size() {
    let dir = temp_dir("rotate");
    let mut config = config("iris_logistic");
    config.log_dir = Some(dir.clone());
    config.log_segment_bytes = 1;
    let server = TestServer::start(config).await;
    for _ in 0..3 {
        predict(&server, &[json!([5.1, 3.5, 1.4, 0.2])]).await;
    }
    server.stop().await.unwrap();
    // One record per segment once every segment is over the limit.
    let segments = segments(&dir);
    assert_eq!(segments.len(), 3, "{segments:?}");
    assert_eq!(records(&dir).len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn binary_logs_from_env_and_closes_the_log_on_sigterm() {
    use std::io::{BufRead, BufReader};
    common::check_ort();
    let dir = temp_dir("binary");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel-server"))
        .args(["--listen", "127.0.0.1:0", "--model-dir"])
        .arg(common::fixture("iris_logistic"))
        .env("FLYWHEEL_LOG_DIR", &dir)
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
            .json(&json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean shutdown: {exit}");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(
        rest.iter().any(|l| l.contains("prediction log closed")),
        "{rest:?}"
    );
    let records = records(&dir);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["request_id"], body["request_ids"][0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_predictions_are_all_logged() {
    let dir = temp_dir("concurrent");
    let mut config = config("iris_logistic");
    config.log_dir = Some(dir.clone());
    let server = TestServer::start(config).await;
    let requests: Vec<_> = (0..32)
        .map(|i| {
            let client = server.client.clone();
            let url = server.url("/v1/models/iris_logistic:predict");
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({"instances": [[5.0 + f64::from(i) / 10.0, 3.0, 4.0, 1.0]]}))
                    .send()
                    .await
                    .unwrap();
                common::read(response).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        ids.push(body["request_ids"][0].as_str().unwrap().to_string());
    }
    let mut logged: Vec<String> = records(&dir)
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    logged.sort();
    assert_eq!(logged, ids);
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn feedback_needs_the_bearer_token_when_one_is_set() {
    let mut config = config("iris_logistic");
    config.auth_token = Some("s3cret".into());
    let server = TestServer::start(config).await;
    let (status, error) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({"request_id": "x", "actual": "setosa"}),
        )
        .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (401, Some("authorization"))
    );
    let response = server
        .client
        .post(server.url("/v1/models/iris_logistic/feedback"))
        .bearer_auth("s3cret")
        .json(&json!({"request_id": "x", "actual": "setosa"}))
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(response).await;
    assert_eq!((status, body["unknown"].clone()), (200, json!(["x"])));
    // Stats are read-only and open, like model metadata.
    assert_eq!(server.get("/v1/models/iris_logistic/stats").await.0, 200);
}
