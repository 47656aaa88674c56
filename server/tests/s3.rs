//! The server binary against a real S3 API (moto_server from .venv): a model served from
//! `s3://`, reloaded from another prefix, a new version picked up by the watch through the
//! objects' entity tags, and prediction-log segments archived to the bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flywheel_store::moto::{MotoServer, with_s3_env};
use flywheel_store::{Bytes, Location, Store};
use serde_json::{Value, json};

use common::{check_ort, fixture, read, temp_dir};

const PREDICT: &str = "/v1/models/iris:predict";
const LOAD: &str = "/v2/repository/models/iris/load";

/// Puts fixture `name`'s model into `folder` with its card relabelled as `version`.
async fn upload_model(store: &Store, folder: &str, name: &str, version: &str) {
    let folder = Location::parse(folder).unwrap();
    let onnx = std::fs::read(fixture(name).join("model.onnx")).unwrap();
    store
        .put(&folder.join("model.onnx"), Bytes::from(onnx))
        .await
        .unwrap();
    upload_card(store, &folder, name, version).await;
}

async fn upload_card(store: &Store, folder: &Location, name: &str, version: &str) {
    let mut card: Value =
        serde_json::from_slice(&std::fs::read(fixture(name).join("model.json")).unwrap()).unwrap();
    card["version"] = Value::String(version.into());
    store
        .put(&folder.join("model.json"), Bytes::from(card.to_string()))
        .await
        .unwrap();
}

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    fn start(args: &[&str], env: &[(String, String)]) -> Server {
        check_ort();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flywheel-server"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null());
        with_s3_env(&mut command, env);
        Server {
            child: command.spawn().expect("start flywheel-server"),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("flywheel-server exited with {status} before it was ready");
            }
            let url = format!("{}/v2/health/ready", self.base);
            if let Ok(response) = self.client.get(url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    async fn version(&self) -> String {
        let (status, body) = self
            .post(PREDICT, &json!({"instances": [[5.9, 3.0, 5.1, 1.8]]}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["model_version"].as_str().unwrap().to_string()
    }

    /// SIGTERM (what Kubernetes sends), then waits for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn archived(store: &Store) -> Vec<Location> {
    let prefix = Location::parse("s3://models/logs/iris").unwrap();
    store.list(&prefix).await.unwrap()
}

fn local_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn serves_reloads_watches_and_archives_through_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("models");
    let store = moto.store();
    upload_model(&store, "s3://models/prod/iris", "iris_logistic", "iris-v1").await;
    upload_model(
        &store,
        "s3://models/staging/iris",
        "iris_logistic",
        "iris-v2",
    )
    .await;

    let dir = temp_dir("s3");
    let cache = dir.join("cache");
    let log = dir.join("log");
    let mut server = Server::start(
        &[
            "--model-dir",
            "s3://models/prod/iris",
            "--model-cache-dir",
            cache.to_str().unwrap(),
            "--log-dir",
            log.to_str().unwrap(),
            "--log-segment-bytes",
            "300",
            "--log-archive-uri",
            "s3://models/logs/iris",
            "--watch-interval-seconds",
            "1",
        ],
        &moto.env(),
    );
    server.ready().await;

    // Served under the prefix's last segment, from the cache.
    assert_eq!(server.version().await, "iris-v1");
    let (status, models) = read(
        server
            .client
            .get(format!("{}/v1/models", server.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{models}");
    assert!(models.to_string().contains("\"iris\""), "{models}");
    assert!(cache.is_dir());

    // Reload from another prefix.
    let (status, body) = server
        .post(
            LOAD,
            &json!({"parameters": {"model_dir": "s3://models/staging/iris"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "iris-v2");
    assert_eq!(server.version().await, "iris-v2");

    // A prefix with nothing there: 400 naming the object, the old version keeps serving.
    let (status, body) = server
        .post(
            LOAD,
            &json!({"parameters": {"model_dir": "s3://models/nothing/here"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("s3://models/nothing/here/model.onnx"),
        "{body}"
    );
    assert_eq!(server.version().await, "iris-v2");

    // A new card in the bucket: the watch sees the new entity tag and reloads.
    let staging = Location::parse("s3://models/staging/iris").unwrap();
    upload_card(&store, &staging, "iris_logistic", "iris-v3").await;
    common::eventually(20, "the watch to load iris-v3", || async {
        (server.version().await == "iris-v3").then_some(())
    })
    .await;
    // The cache keeps the serving version and the one it replaced at most (prod's is gone).
    let cached: usize = std::fs::read_dir(&cache)
        .unwrap()
        .map(|source| std::fs::read_dir(source.unwrap().path()).unwrap().count())
        .sum();
    assert!(cached <= 2, "{cached} cached versions");

    // Predictions fill 300-byte segments; closed ones reach the bucket while serving.
    let mut predictions = 0;
    for _ in 0..10 {
        server.version().await;
        predictions += 1;
    }
    common::eventually(20, "a rotated segment in the archive", || async {
        (!archived(&store).await.is_empty()).then_some(())
    })
    .await;

    // At shutdown the last segment is closed and uploaded; nothing stays behind locally.
    server.stop();
    let segments = archived(&store).await;
    assert_eq!(
        local_segments(&log),
        0,
        "segments left in {}",
        log.display()
    );
    let mut records: Vec<Value> = Vec::new();
    for segment in &segments {
        let bytes = store.get(segment).await.unwrap();
        for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
            records.push(serde_json::from_str(line).unwrap());
        }
    }
    // Every prediction this test made (the watch's wait included) is in the archive, once.
    let logged = records.iter().filter(|r| r["kind"] == "prediction").count();
    assert!(logged >= predictions + 3, "{logged} predictions archived");
    let ids: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), records.len(), "a record archived twice");
    let run_folders: std::collections::BTreeSet<String> = segments
        .iter()
        .map(|s| {
            let text = s.to_string();
            text.trim_start_matches("s3://models/logs/iris/")
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(run_folders.len(), 1, "{run_folders:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn missing_credentials_stop_the_server_with_the_fix() {
    check_ort();
    // Never contacted: the server must stop before any request.
    let endpoint_only = vec![(
        "AWS_ENDPOINT_URL".to_string(),
        "http://127.0.0.1:9".to_string(),
    )];
    let mut command = Command::new(env!("CARGO_BIN_EXE_flywheel-server"));
    command.args([
        "--model-dir",
        "s3://models/prod/iris",
        "--listen",
        "127.0.0.1:0",
    ]);
    with_s3_env(&mut command, &endpoint_only);
    let out = command.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no s3 credentials to access s3://models/prod/iris/model.onnx")
            && stderr.contains("AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
}
