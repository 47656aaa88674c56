//! The shadow model: mirrored off the hot path, logged under the primary's request ids, scored
//! by the same feedback, never in a response, never slowing or failing the primary.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, eventually, iris_v2, log_records, metric, temp_dir};
use serde_json::{Value, json};

const PRIMARY: &str = "iris_logistic-fixture-1";
const SHADOW: &str = "iris_zipmap-fixture-1";
const PREDICT: &str = "/v1/models/iris_logistic:predict";

fn shadow_config(log_dir: Option<&std::path::Path>) -> flywheel_server::Config {
    let mut config = common::config("iris_logistic");
    config.shadow_model_dir = Some(common::fixture("iris_zipmap"));
    config.log_dir = log_dir.map(std::path::Path::to_path_buf);
    config
}

fn ids_of(body: &Value) -> Vec<String> {
    body["request_ids"]
        .as_array()
        .or_else(|| body["parameters"]["request_ids"].as_array())
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The log's prediction records, split into the primary's and the shadow's.
fn predictions(dir: &std::path::Path) -> (Vec<Value>, Vec<Value>) {
    log_records(dir)
        .into_iter()
        .filter(|r| r["kind"] == "prediction")
        .partition(|r| r.get("shadow").is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_predictions_are_logged_under_the_primary_ids_and_scored() {
    let log = temp_dir("shadow-log");
    let server = TestServer::start(shadow_config(Some(&log))).await;
    let instances = common::expected("iris_logistic")["instances"]
        .as_array()
        .unwrap()
        .clone();

    let (status, v1) = server
        .post(PREDICT, &json!({ "instances": instances }))
        .await;
    assert_eq!(status, 200, "{v1}");
    let (status, v2) = server
        .post(
            "/v2/models/iris_logistic/infer",
            &iris_v2("one-row", &[[6.7, 3.0, 5.2, 2.3]]),
        )
        .await;
    assert_eq!(status, 200, "{v2}");
    // Responses carry the primary only.
    for body in [&v1, &v2] {
        assert_eq!(body["model_version"], PRIMARY);
        assert!(!body.to_string().contains(SHADOW), "{body}");
    }
    let mut ids = ids_of(&v1);
    ids.extend(ids_of(&v2));
    assert_eq!(ids.len(), instances.len() + 1);

    let (primary, shadow) = eventually(10, "shadow records in the log", || async {
        let (primary, shadow) = predictions(&log);
        (shadow.len() == ids.len()).then_some((primary, shadow))
    })
    .await;
    let primary_ids: Vec<&str> = primary
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    let mut shadow_ids: Vec<&str> = shadow
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(primary_ids, ids);
    shadow_ids.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(shadow_ids, want);
    for record in &primary {
        assert_eq!(record["model_version"], PRIMARY);
    }
    for record in &shadow {
        assert_eq!(record["shadow"], true, "{record}");
        assert_eq!(record["model_version"], SHADOW, "{record}");
        assert_eq!(record["model"], "iris_logistic", "{record}");
        // Same rows as the primary saw, and the shadow's own output.
        let twin = primary
            .iter()
            .find(|p| p["request_id"] == record["request_id"])
            .unwrap();
        assert_eq!(record["inputs"], twin["inputs"], "{record}");
        assert!(record["probabilities"].is_object(), "{record}");
    }

    // Feedback for the primary's ids scores both versions.
    let predicted: Vec<String> = v1["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v2["outputs"][0]["data"].as_array().unwrap())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let items: Vec<Value> = ids
        .iter()
        .zip(&predicted)
        .map(|(id, label)| json!({"request_id": id, "actual": label}))
        .collect();
    let (status, answer) = server
        .post(
            "/v1/models/iris_logistic/feedback",
            &json!({ "feedback": items }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], ids.len());
    let (status, stats) = server.get("/v1/models/iris_logistic/stats").await;
    assert_eq!(status, 200, "{stats}");
    let versions = stats["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{stats}");
    let of = |version: &str| {
        versions
            .iter()
            .find(|v| v["model_version"] == version)
            .unwrap()
    };
    assert_eq!(of(PRIMARY)["role"], "primary");
    assert_eq!(of(SHADOW)["role"], "shadow");
    for version in [PRIMARY, SHADOW] {
        assert_eq!(of(version)["predictions"], ids.len(), "{stats}");
        assert_eq!(of(version)["labelled"], ids.len(), "{stats}");
    }
    // The actuals are the primary's own predictions, so it is right on all of them; the shadow
    // (the same model exported with ZipMap) agrees.
    assert_eq!(of(PRIMARY)["accuracy"], 1.0);
    assert_eq!(of(SHADOW)["accuracy"], 1.0);
    // The gate's evidence: every labelled request paired, both right on each.
    let paired = &of(SHADOW)["paired"];
    assert_eq!(paired["serving_version"], PRIMARY, "{stats}");
    assert_eq!(paired["samples"], ids.len(), "{stats}");
    assert_eq!(paired["both_right"], ids.len(), "{stats}");
    assert!(of(PRIMARY).get("paired").is_none(), "{stats}");

    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            &format!("flywheel_server_predictions_total{{model_version=\"{SHADOW}\"}}")
        ),
        Some(ids.len() as f64),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "flywheel_server_online_accuracy{{model_version=\"{SHADOW}\"}} 1.0"
        )),
        "{metrics}"
    );
    // Requests are labelled with the primary's version only.
    assert!(!metrics.contains(&format!("code=\"200\",model_version=\"{SHADOW}\"")));
    let (_, index) = server.get("/v2/repository/index").await;
    assert_eq!(
        index,
        json!([
            {"name": "iris_logistic", "version": PRIMARY, "state": "READY", "role": "primary"},
            {"name": "iris_logistic", "version": SHADOW, "state": "READY", "role": "shadow"}
        ])
    );
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&log).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_shadow_never_slows_or_fails_the_primary() {
    let mut config = shadow_config(None);
    config.max_queue_size = 2;
    let server = TestServer::start(config).await;
    // The shadow runs nothing while paused: its queue and the mirror queue fill up.
    let shadow = server.state.shadow().unwrap();
    let pause = shadow.pause().await.unwrap();
    let body = json!({"instances": [[5.9, 3.0, 5.1, 1.8]]});
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let (status, answer) = server.post(PREDICT, &body).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["model_version"], PRIMARY);
    }
    // Concurrent requests too (fewer than the primary's queue holds, so none is a 429).
    let concurrent: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, body) = (server.client.clone(), server.url(PREDICT), body.clone());
            tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    for request in concurrent {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a primary request waited {slowest:?} on the shadow"
    );
    let metrics = server.metrics().await;
    let dropped = metric(&metrics, "flywheel_server_shadow_dropped_total").unwrap();
    assert!(dropped >= 30.0, "mirrors dropped: {dropped}\n{metrics}");
    // Full shadow queues are not the primary's 429s.
    assert_eq!(
        metric(&metrics, "flywheel_server_queue_rejections_total"),
        Some(0.0),
        "{metrics}"
    );

    // Released, the shadow works through what it had accepted.
    drop(pause);
    drop(shadow);
    eventually(10, "the shadow to catch up", || async {
        let metrics = server.metrics().await;
        metric(
            &metrics,
            &format!("flywheel_server_predictions_total{{model_version=\"{SHADOW}\"}}"),
        )
        .filter(|&n| n >= 1.0)
    })
    .await;
    assert_eq!(server.post(PREDICT, &body).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_loads_swaps_and_goes_through_the_repository_api() {
    const LOAD: &str = "/v2/repository/models/iris_logistic/load";
    let log = temp_dir("shadow-swap");
    let mut config = common::config("iris_logistic");
    config.log_dir = Some(log.clone());
    let server = TestServer::start(config).await;
    assert!(server.state.shadow().is_none());

    let zipmap = common::fixture("iris_zipmap");
    let (status, body) = server
        .post(
            LOAD,
            &json!({"parameters": {"shadow_model_dir": zipmap.to_str().unwrap()}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "iris_logistic", "version": PRIMARY, "previous_version": PRIMARY, "shadow_version": SHADOW})
    );
    let (_, index) = server.get("/v2/repository/index").await;
    assert_eq!(index[1]["role"], "shadow", "{index}");
    let (status, answer) = server
        .post(PREDICT, &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
        .await;
    assert_eq!(status, 200);
    let id = ids_of(&answer).remove(0);
    eventually(10, "the shadow's record", || async {
        predictions(&log)
            .1
            .iter()
            .any(|r| r["request_id"] == id.as_str() && r["model_version"] == SHADOW)
            .then_some(())
    })
    .await;

    // Refused shadows leave the current one in place.
    let same_version = common::model_copy("iris_zipmap", PRIMARY);
    let regression = common::fixture("diabetes_linear");
    for (dir, text) in [
        (same_version.to_str().unwrap(), "same version"),
        (regression.to_str().unwrap(), "regression"),
        ("/no/such/folder", "failed to read"),
    ] {
        let (status, answer) = server
            .post(LOAD, &json!({"parameters": {"shadow_model_dir": dir}}))
            .await;
        assert!(status == 422 || status == 400, "{answer}");
        assert_eq!(answer["field"], "parameters.shadow_model_dir", "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(text), "{answer}");
        assert_eq!(server.state.shadow().unwrap().spec().card.version, SHADOW);
    }

    // Removing it.
    let (status, body) = server
        .post(LOAD, &json!({"parameters": {"shadow_model_dir": ""}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_shadow_version"], SHADOW);
    assert!(body.get("shadow_version").is_none(), "{body}");
    assert!(server.state.shadow().is_none());
    let (_, index) = server.get("/v2/repository/index").await;
    assert_eq!(index.as_array().unwrap().len(), 1);
    let before = predictions(&log).1.len();
    assert_eq!(
        server
            .post(PREDICT, &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        predictions(&log).1.len(),
        before,
        "no shadow, no shadow records"
    );

    // Promotion: the shadow becomes the primary and stops being a shadow, in one load.
    let zipmap = zipmap.to_str().unwrap();
    let (status, body) = server
        .post(LOAD, &json!({"parameters": {"shadow_model_dir": zipmap}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = server
        .post(LOAD, &json!({"parameters": {"model_dir": zipmap}}))
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("parameters.model_dir"))
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("to promote the shadow"),
        "{answer}"
    );
    let (status, body) = server
        .post(
            LOAD,
            &json!({"parameters": {"model_dir": zipmap, "shadow_model_dir": ""}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "iris_logistic", "version": SHADOW, "previous_version": PRIMARY, "previous_shadow_version": SHADOW})
    );
    let (_, answer) = server
        .post(PREDICT, &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
        .await;
    assert_eq!(answer["model_version"], SHADOW);
    assert!(server.state.shadow().is_none());
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&log).unwrap();
}

#[tokio::test]
async fn an_incomparable_shadow_is_refused_at_start() {
    let mut config = common::config("iris_logistic");
    config.shadow_model_dir = Some(common::fixture("diabetes_linear"));
    let error = flywheel_server::AppState::load(config)
        .err()
        .expect("a regression shadow for a classifier fails")
        .to_string();
    assert!(
        error.contains("cannot shadow") && error.contains("regression"),
        "{error}"
    );
}
