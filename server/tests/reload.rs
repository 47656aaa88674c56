//! Hot reload: the repository API, the folder watch, and a swap under load that fails nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, eventually, iris_v2, metric, model_copy, write_card};
use serde_json::{Value, json};

const LOAD: &str = "/v2/repository/models/iris/load";
const PREDICT: &str = "/v1/models/iris:predict";

fn iris_rows(n: usize) -> Value {
    json!({"instances": vec![json!([5.9, 3.0, 5.1, 1.8]); n]})
}

/// A server named "iris" on a copy of iris_logistic labelled `version`.
async fn iris_server(
    version: &str,
    adjust: impl FnOnce(&mut flywheel_server::Config),
) -> TestServer {
    let mut config = common::config("iris_logistic");
    config.model_dir = model_copy("iris_logistic", version);
    config.model_name = Some("iris".into());
    adjust(&mut config);
    TestServer::start(config).await
}

async fn served_version(server: &TestServer) -> String {
    let (status, body) = server.post(PREDICT, &iris_rows(1)).await;
    assert_eq!(status, 200, "{body}");
    body["model_version"].as_str().unwrap().to_string()
}

fn load_body(dir: &std::path::Path) -> Value {
    json!({"parameters": {"model_dir": dir.to_str().unwrap()}})
}

#[tokio::test]
async fn load_endpoint_swaps_the_version() {
    let server = iris_server("iris-v1", |_| {}).await;
    assert_eq!(served_version(&server).await, "iris-v1");

    let v2 = model_copy("iris_logistic", "iris-v2");
    let (status, body) = server.post(LOAD, &load_body(&v2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "iris", "version": "iris-v2", "previous_version": "iris-v1"})
    );
    assert_eq!(served_version(&server).await, "iris-v2");
    let (status, infer) = server
        .post(
            "/v2/models/iris/infer",
            &iris_v2("r1", &[[5.1, 3.5, 1.4, 0.2]]),
        )
        .await;
    assert_eq!(status, 200, "{infer}");
    assert_eq!(infer["model_version"], "iris-v2");
    assert_eq!(server.get("/v1/models/iris").await.1["version"], "iris-v2");
    assert_eq!(
        server.get("/v2/models/iris").await.1["versions"],
        json!(["iris-v2"])
    );
    // The old version is gone from the versioned routes.
    assert_eq!(server.get("/v2/models/iris/versions/iris-v1").await.0, 404);
    assert_eq!(
        server.get("/v2/models/iris/versions/iris-v2/ready").await.0,
        200
    );
    for index in [
        server.get("/v2/repository/index").await,
        server.post("/v2/repository/index", &json!({})).await,
    ] {
        assert_eq!(
            index,
            (
                200,
                json!([{"name": "iris", "version": "iris-v2", "state": "READY", "role": "primary"}])
            )
        );
    }

    // No body: reload from the current folder, here updated in place; a file:// URI works too.
    write_card(&v2, "iris_logistic", "iris-v3");
    let response = server.client.post(server.url(LOAD)).send().await.unwrap();
    let (status, body) = common::read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "iris-v3");
    assert_eq!(body["previous_version"], "iris-v2");
    let v4 = model_copy("iris_zipmap", "iris-v4");
    let uri = format!("file://{}", v4.display());
    let (status, body) = server
        .post(LOAD, &json!({"parameters": {"model_dir": uri}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "iris-v4");
    assert_eq!(served_version(&server).await, "iris-v4");

    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "flywheel_server_model_reloads_total{result=\"success\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    // Request metrics follow the version that answered.
    assert!(
        metrics.contains(
            "flywheel_server_requests_total{method=\"POST\",route=\"/v1/models/{name_action}\",code=\"200\",model_version=\"iris-v4\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/v2/repository/models/{name}/load\",code=\"200\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_loads_keep_the_old_version_serving() {
    let server = iris_server("iris-v1", |_| {}).await;
    let missing = std::env::temp_dir().join("flywheel-no-such-model-folder");

    // A card that is not JSON, a card the graph contradicts, a card for a different graph.
    let garbled = model_copy("iris_logistic", "garbled");
    std::fs::write(garbled.join("model.json"), "{not json").unwrap();
    let contradicted = model_copy("iris_logistic", "contradicted");
    let mut card: Value =
        serde_json::from_str(&std::fs::read_to_string(contradicted.join("model.json")).unwrap())
            .unwrap();
    card["outputs"]["label"] = json!("no_such_output");
    std::fs::write(contradicted.join("model.json"), card.to_string()).unwrap();
    let no_graph = model_copy("iris_logistic", "no-graph");
    std::fs::remove_file(no_graph.join("model.onnx")).unwrap();
    let corrupt_graph = model_copy("iris_logistic", "corrupt-graph");
    std::fs::write(corrupt_graph.join("model.onnx"), b"not a graph").unwrap();

    let path = |dir: &PathBuf| dir.to_str().unwrap().to_string();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"parameters": {"model_dir": path(&missing)}}),
            400,
            "parameters.model_dir",
            "failed to read",
        ),
        (
            json!({"parameters": {"model_dir": path(&no_graph)}}),
            400,
            "parameters.model_dir",
            "model.onnx",
        ),
        (
            json!({"parameters": {"model_dir": "gs://bucket/model"}}),
            400,
            "parameters.model_dir",
            "unsupported scheme 'gs://'",
        ),
        (
            json!({"parameters": {"model_dir": path(&garbled)}}),
            422,
            "parameters.model_dir",
            "failed to parse model card",
        ),
        (
            json!({"parameters": {"model_dir": path(&contradicted)}}),
            422,
            "parameters.model_dir",
            "no_such_output",
        ),
        (
            json!({"parameters": {"model_dir": path(&corrupt_graph)}}),
            422,
            "parameters.model_dir",
            "model.onnx",
        ),
    ];
    for (body, want_status, want_field, want_text) in &cases {
        let (status, answer) = server.post(LOAD, body).await;
        assert_eq!(status, *want_status, "{body}: {answer}");
        assert_eq!(answer["field"], *want_field, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(want_text), "{body}: {error}");
        assert_eq!(served_version(&server).await, "iris-v1");
    }
    // The index tells why the latest load failed; the old version is still READY.
    let (_, index) = server.get("/v2/repository/index").await;
    assert_eq!(index[0]["version"], "iris-v1");
    assert_eq!(index[0]["state"], "READY");
    assert!(
        index[0]["reason"].as_str().unwrap().contains("model.onnx"),
        "{index}"
    );

    // Requests that never reach a load are not counted as reload failures.
    for (body, want_status, want_field) in [
        (
            json!({"parameters": {"model_dir": 3}}),
            400,
            "parameters.model_dir",
        ),
        (json!({"parameters": {"dir": "x"}}), 400, "parameters.dir"),
        (json!({"model_dir": "x"}), 400, "model_dir"),
    ] {
        let (status, answer) = server.post(LOAD, &body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (want_status, Some(want_field)),
            "{answer}"
        );
    }
    let (status, answer) = server
        .post_raw(LOAD, "application/json", "{\"parameters\":")
        .await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("body")));
    let (status, answer) = server
        .post("/v2/repository/models/other/load", &json!({}))
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (404, Some("model_name"))
    );

    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "flywheel_server_model_reloads_total{result=\"failure\"}"
        ),
        Some(cases.len() as f64),
        "{metrics}"
    );
    // A good load afterwards clears the reason.
    let v2 = model_copy("iris_logistic", "iris-v2");
    assert_eq!(server.post(LOAD, &load_body(&v2)).await.0, 200);
    let (_, index) = server.get("/v2/repository/index").await;
    assert!(index[0].get("reason").is_none(), "{index}");
}

#[tokio::test]
async fn load_requires_the_bearer_token() {
    let server = iris_server("iris-v1", |c| c.auth_token = Some("s3cret".into())).await;
    let v2 = model_copy("iris_logistic", "iris-v2");
    let (status, body) = server.post(LOAD, &load_body(&v2)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (401, Some("authorization"))
    );
    let response = server
        .client
        .post(server.url(LOAD))
        .bearer_auth("s3cret")
        .json(&load_body(&v2))
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "iris-v2");
    // The index is read-only and open, like model metadata.
    assert_eq!(server.get("/v2/repository/index").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_a_new_version_in_the_folder() {
    let server = iris_server("iris-v1", |c| c.watch_interval_seconds = 1).await;
    let dir = server.state.current().dir().to_path_buf();
    assert_eq!(served_version(&server).await, "iris-v1");

    write_card(&dir, "iris_logistic", "iris-v2");
    eventually(15, "the watch to load iris-v2", || async {
        (served_version(&server).await == "iris-v2").then_some(())
    })
    .await;

    // A broken version is refused (counted, old one serving) and not retried until it changes.
    std::fs::write(dir.join("model.json"), "{broken").unwrap();
    eventually(15, "the watch to report a failed load", || async {
        let metrics = server.metrics().await;
        metric(
            &metrics,
            "flywheel_server_model_reloads_total{result=\"failure\"}",
        )
        .is_some()
        .then_some(())
    })
    .await;
    assert_eq!(served_version(&server).await, "iris-v2");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "flywheel_server_model_reloads_total{result=\"failure\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    // A new graph and card in place (the ZipMap export, relabelled).
    std::fs::copy(
        common::fixture("iris_zipmap").join("model.onnx"),
        dir.join("model.onnx"),
    )
    .unwrap();
    write_card(&dir, "iris_zipmap", "iris-v3");
    eventually(15, "the watch to load iris-v3", || async {
        (served_version(&server).await == "iris-v3").then_some(())
    })
    .await;
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "flywheel_server_model_reloads_total{result=\"success\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
}

/// What one client saw: the generation (reloads completed) when it sent the request, the
/// version index in the response, and the generation when the response came.
struct Seen {
    sent: usize,
    version: usize,
    received: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_fail_no_request() {
    const CLIENTS: usize = 8;
    const RELOADS: usize = 5;
    let versions: Vec<String> = (0..=RELOADS).map(|i| format!("iris-load-{i}")).collect();
    // Alternate two different graphs, so that each swap really changes the session.
    let dirs: Vec<PathBuf> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            model_copy(
                if i % 2 == 0 {
                    "iris_logistic"
                } else {
                    "iris_zipmap"
                },
                v,
            )
        })
        .collect();
    let mut config = common::config("iris_logistic");
    config.model_dir = dirs[0].clone();
    config.model_name = Some("iris".into());
    config.inference_threads = 2;
    let server = TestServer::start(config).await;

    let generation = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client_index| {
            let (client, base) = (server.client.clone(), server.base.clone());
            let (generation, stop, versions) = (generation.clone(), stop.clone(), versions.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut failures = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let sent = generation.load(Ordering::SeqCst);
                    // Half the clients speak V1, half V2.
                    let request = if client_index % 2 == 0 {
                        client
                            .post(format!("{base}{PREDICT}"))
                            .json(&iris_rows(1 + n % 3))
                    } else {
                        client
                            .post(format!("{base}/v2/models/iris/infer"))
                            .json(&iris_v2(
                                &format!("c{client_index}-{n}"),
                                &[[6.7, 3.0, 5.2, 2.3]],
                            ))
                    };
                    let (status, body) = common::read(request.send().await.unwrap()).await;
                    let received = generation.load(Ordering::SeqCst);
                    if status != 200 {
                        failures.push(format!("{status}: {body}"));
                        continue;
                    }
                    let version = body["model_version"].as_str().unwrap();
                    let version = versions.iter().position(|v| v == version).unwrap();
                    seen.push(Seen {
                        sent,
                        version,
                        received,
                    });
                }
                (seen, failures)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in 1..=RELOADS {
        let (status, body) = server.post(LOAD, &load_body(&dirs[k])).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], versions[k]);
        assert_eq!(body["previous_version"], versions[k - 1]);
        generation.store(k, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    let mut per_version = vec![0; versions.len()];
    for client in clients {
        let (seen, failures) = client.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during reloads: {failures:?}"
        );
        for s in &seen {
            // Requests sent after a reload answered never see an older version, and no
            // response carries a version that was not loaded yet.
            assert!(
                s.version >= s.sent,
                "a request sent after reload {} was answered by {}",
                s.sent,
                versions[s.version]
            );
            assert!(s.version <= s.received + 1, "version from the future");
            per_version[s.version] += 1;
        }
        total += seen.len();
    }
    eprintln!("{total} requests across {RELOADS} reloads, per version: {per_version:?}");
    assert!(
        total > 100,
        "too little load to mean anything: {total} requests"
    );
    assert!(
        per_version.iter().all(|&n| n > 0),
        "every version served some requests: {per_version:?}"
    );
    assert_eq!(served_version(&server).await, versions[RELOADS]);
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "flywheel_server_model_reloads_total{result=\"success\"}"
        ),
        Some(RELOADS as f64),
        "{metrics}"
    );
    assert!(
        !metrics.contains("code=\"5") && !metrics.contains("code=\"4"),
        "{metrics}"
    );
}
