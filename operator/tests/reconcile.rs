//! The controllers against a mock API server (the kube-rs `tower-test` pattern): each test
//! scripts the exact requests a reconcile must make, in order, answers them, and fails on a
//! request it did not expect or on one that never came.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use flywheel_core::api::{ModelDeployment, Study, StudyStatus, Trial, TrialStatus};
use flywheel_core::k8s_openapi::jiff::Timestamp;
use flywheel_core::protocol::{Outcome, TrialResult};
use flywheel_operator::controller::{Context, Metrics, deployment, study, trial};
use flywheel_operator::k8s::job::JobConfig;
use flywheel_operator::k8s::serving::ServingConfig;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use tower_test::mock::{Handle, pair};

const NOW: i64 = 1_780_000_000;

/// One side of the mock: the test reads each request the controller makes and answers it.
struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// What the controller sent.
struct Seen {
    body: Value,
    content_type: Option<String>,
}

impl ApiServer {
    /// Expects the next request to be `method path` with exactly the query pairs `query`
    /// (order-free), answers `status` with `response`, and returns what was sent.
    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        status: u16,
        response: Value,
    ) -> Seen {
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.handle.next_request(),
        )
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {method} {path}"));
        let (request, send) =
            next.unwrap_or_else(|| panic!("the controller stopped before {method} {path}"));
        let uri = request.uri().clone();
        assert_eq!(
            (request.method(), uri.path()),
            (&method, path),
            "unexpected request {} {uri}",
            request.method()
        );
        let sent: BTreeSet<(String, String)> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect();
        let expected: BTreeSet<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(sent, expected, "query of {method} {path}");
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&response).unwrap()))
                .unwrap(),
        );
        Seen { body, content_type }
    }

    /// A server-side apply of a status subresource by the operator; answers `response`.
    async fn expect_status_apply(&mut self, path: &str, response: Value) -> Seen {
        let seen = self
            .expect(
                Method::PATCH,
                path,
                &[("fieldManager", "flywheel-operator"), ("force", "true")],
                200,
                response,
            )
            .await;
        assert_eq!(
            seen.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        seen
    }

    /// A server-side apply of `path`; answers with the applied object and returns it.
    async fn expect_apply(&mut self, path: &str, manager: &str) -> Value {
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.handle.next_request(),
        )
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the apply of {path}"));
        let (request, send) = next.unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::PATCH, path),
            "unexpected request {} {}",
            request.method(),
            request.uri()
        );
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains(&format!("fieldManager={manager}")),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            request.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/apply-patch+yaml"
        );
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let mut body: Value = serde_json::from_slice(&bytes).unwrap();
        body["metadata"]["resourceVersion"] = json!("2");
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        body
    }

    /// An Event about an object; returns its reason.
    async fn expect_event(&mut self, namespace: &str) -> Value {
        let seen = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
                &[],
                201,
                json!({}),
            )
            .await;
        // Echo-free answer is fine: the recorder does not read the response back.
        seen.body
    }

    /// The controller made no further request: dropping the context closed the client.
    async fn done(mut self) {
        if let Some((request, _)) = self.handle.next_request().await {
            panic!(
                "unexpected extra request {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

/// The condition of type `type_` in a status written by the operator.
fn condition_of<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn context(service_monitors: bool) -> (Arc<Context>, ApiServer) {
    let (service, handle) = pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        JobConfig {
            trainer_image: "ghcr.io/flywheel-ml/flywheel-trainer:0.1.0".into(),
            artifact_root: "file:///artifacts".into(),
            artifact_claim: Some("flywheel-artifacts".into()),
            artifact_env: vec![],
            ttl_seconds_after_finished: 86_400,
        },
        ServingConfig {
            server_image: "ghcr.io/flywheel-ml/flywheel-server:0.1.0".into(),
            artifact_root: "file:///artifacts".into(),
            artifact_claim: Some("flywheel-artifacts".into()),
            artifact_env: vec![],
        },
        Arc::new(Metrics::new()),
        Reporter {
            controller: "flywheel-operator".into(),
            instance: Some("flywheel-operator-0".into()),
        },
        Arc::new(|| Timestamp::from_second(NOW).unwrap()),
        service_monitors,
    );
    (Arc::new(ctx), ApiServer { handle })
}

fn study_object(budget: &str, status: Option<&StudyStatus>) -> Study {
    let yaml = format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Study\n\
         metadata: {{name: penguins, namespace: ml, uid: study-uid, generation: 1, resourceVersion: '7'}}\n\
         spec:\n  dataset: {{uri: file:///artifacts/data/penguins.csv, target: species}}\n  objective: {{metric: accuracy}}\n\
         \x20 searchSpace: [{{family: logistic}}, {{family: decision_tree}}]\n  algorithm: {{name: random, seed: 3}}\n\
         \x20 budget: {budget}\n  promotion: {{deployment: penguins}}\n"
    );
    let mut study: Study = serde_saphyr::from_str(&yaml).unwrap();
    study.status = status.cloned();
    study
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "9"}, "items": items})
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

const TRIALS: &str = "/apis/flywheel.dev/v1alpha1/namespaces/ml/trials";
const STUDY_SELECTOR: (&str, &str) = ("labelSelector", "flywheel.dev/study=penguins");

async fn finish(
    task: tokio::task::JoinHandle<Result<Action, flywheel_operator::Error>>,
    ctx: Arc<Context>,
    server: ApiServer,
) -> Action {
    let action = task.await.unwrap().unwrap();
    drop(ctx);
    server.done().await;
    action
}

/// A trial as the API server would return it, with a status.
fn stored_trial(applied: &Value, status: Option<TrialStatus>) -> Value {
    let mut trial = applied.clone();
    trial["metadata"]["resourceVersion"] = json!("3");
    if let Some(status) = status {
        trial["status"] = serde_json::to_value(status).unwrap();
    }
    trial
}

#[tokio::test]
async fn a_new_study_applies_its_trials_then_a_steady_study_writes_nothing() {
    let budget = "{maxTrials: 4, parallelism: 2}";
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, None)),
        ctx.clone(),
    ));
    server
        .expect(
            Method::GET,
            TRIALS,
            &[STUDY_SELECTOR],
            200,
            list("Trial", vec![]),
        )
        .await;
    let first = server
        .expect_apply(&format!("{TRIALS}/penguins-0"), "flywheel-operator")
        .await;
    let second = server
        .expect_apply(&format!("{TRIALS}/penguins-1"), "flywheel-operator")
        .await;
    for (trial, index) in [(&first, 0), (&second, 1)] {
        assert_eq!(trial["kind"], "Trial");
        assert_eq!(trial["spec"]["study"], "penguins");
        assert_eq!(trial["spec"]["index"], index);
        assert_eq!(
            trial["metadata"]["labels"]["flywheel.dev/study"],
            "penguins"
        );
        let owner = &trial["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                &owner["kind"],
                &owner["name"],
                &owner["uid"],
                &owner["controller"]
            ),
            (
                &json!("Study"),
                &json!("penguins"),
                &json!("study-uid"),
                &json!(true)
            )
        );
    }
    let created = server.expect_event("ml").await;
    assert_eq!(created["reason"], "TrialsCreated");
    assert_eq!(created["regarding"]["name"], "penguins");
    let status_patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    assert_eq!(
        status_patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let status: StudyStatus = serde_json::from_value(status_patch.body["status"].clone()).unwrap();
    assert_eq!(format!("{:?}", status.phase), "Running");
    assert_eq!(
        status.trials.pending, 0,
        "counts describe the trials observed"
    );
    assert_eq!(status.start_time.as_ref().unwrap().0.as_second(), NOW);
    let running = server.expect_event("ml").await;
    assert_eq!(running["reason"], "Running");
    let action = finish(task, ctx, server).await;
    assert_eq!(action, Action::requeue(study::RUNNING_REQUEUE));

    // The next reconcile sees the new trials: only the counts change.
    let (ctx, mut server) = context(false);
    let observed = || {
        list(
            "Trial",
            vec![stored_trial(&first, None), stored_trial(&second, None)],
        )
    };
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, Some(&status))),
        ctx.clone(),
    ));
    server
        .expect(Method::GET, TRIALS, &[STUDY_SELECTOR], 200, observed())
        .await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    let counted: StudyStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(counted.trials.pending, 2);
    assert_eq!(counted.start_time, status.start_time, "written once");
    finish(task, ctx, server).await;

    // And then the study is steady: one read, no write.
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, Some(&counted))),
        ctx.clone(),
    ));
    server
        .expect(Method::GET, TRIALS, &[STUDY_SELECTOR], 200, observed())
        .await;
    finish(task, ctx, server).await;
}

fn succeeded(objective: f64) -> TrialStatus {
    TrialStatus {
        phase: flywheel_core::api::TrialPhase::Succeeded,
        metrics: [("accuracy".to_string(), objective)].into(),
        objective: Some(objective),
        artifact_uri: Some(format!("file:///artifacts/ml/penguins/{objective}")),
        ..TrialStatus::default()
    }
}

fn trial_json(index: u32, status: Option<TrialStatus>) -> Value {
    let trial = json!({
        "apiVersion": "flywheel.dev/v1alpha1", "kind": "Trial",
        "metadata": {"name": format!("penguins-{index}"), "namespace": "ml", "uid": format!("trial-{index}"),
                     "resourceVersion": "5", "labels": {"flywheel.dev/study": "penguins"}},
        "spec": {"study": "penguins", "index": index, "family": "logistic", "params": {"c": 1.0}, "origin": "sampler"},
    });
    stored_trial(&trial, status)
}

#[tokio::test]
async fn a_restarted_operator_continues_without_duplicates() {
    // The operator died after creating two trials and before writing any status.
    let (ctx, mut server) = context(false);
    let restarted = study_object("{maxTrials: 4, parallelism: 2}", None);
    let task = tokio::spawn(study::reconcile(Arc::new(restarted), ctx.clone()));
    let running = TrialStatus {
        phase: flywheel_core::api::TrialPhase::Running,
        ..TrialStatus::default()
    };
    server
        .expect(
            Method::GET,
            TRIALS,
            &[STUDY_SELECTOR],
            200,
            list(
                "Trial",
                vec![
                    trial_json(0, Some(succeeded(0.9))),
                    trial_json(1, Some(running)),
                ],
            ),
        )
        .await;
    // One slot is free: exactly one new trial, with the next index.
    let applied = server
        .expect_apply(&format!("{TRIALS}/penguins-2"), "flywheel-operator")
        .await;
    assert_eq!(applied["spec"]["index"], 2);
    server.expect_event("ml").await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    let status: StudyStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    // Counts describe the trials observed; the new one is counted on the next reconcile.
    assert_eq!(
        (
            status.trials.succeeded,
            status.trials.running,
            status.trials.pending
        ),
        (1, 1, 0)
    );
    assert_eq!(status.best_trial.unwrap().name, "penguins-0");
    server.expect_event("ml").await;
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn a_succeeded_study_promotes_its_winner_once() {
    let budget = "{maxTrials: 2, parallelism: 2}";
    let trials = || {
        list(
            "Trial",
            vec![
                trial_json(0, Some(succeeded(0.91))),
                trial_json(1, Some(succeeded(0.95))),
            ],
        )
    };
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, None)),
        ctx.clone(),
    ));
    server
        .expect(Method::GET, TRIALS, &[STUDY_SELECTOR], 200, trials())
        .await;
    let mds = "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments";
    server
        .expect(
            Method::GET,
            &format!("{mds}/penguins"),
            &[],
            404,
            not_found("penguins"),
        )
        .await;
    let promoted = server
        .expect_apply(&format!("{mds}/penguins"), "flywheel-promotion")
        .await;
    assert_eq!(
        promoted["spec"],
        json!({"model": {"uri": "file:///artifacts/ml/penguins/0.95", "version": "penguins-1",
                         "study": "penguins", "trial": "penguins-1"}}),
        "only the model is applied, so a person's replicas and resources stay theirs"
    );
    assert_eq!(server.expect_event("ml").await["reason"], "Promoted");
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    let status: StudyStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(format!("{:?}", status.phase), "Succeeded");
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Promoted"
            && c.status == "True"
            && c.message.contains("penguins-1"))
    );
    assert_eq!(server.expect_event("ml").await["reason"], "BudgetExhausted");
    assert_eq!(finish(task, ctx, server).await, Action::await_change());

    // Again with that status: the trials are read, the ModelDeployment is not even looked at
    // (what the shadow gate or a person did to it since is theirs), nothing is written.
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, Some(&status))),
        ctx.clone(),
    ));
    server
        .expect(Method::GET, TRIALS, &[STUDY_SELECTOR], 200, trials())
        .await;
    finish(task, ctx, server).await;
}

fn trial_object(status: Option<TrialStatus>) -> Trial {
    serde_json::from_value(trial_json(0, status)).unwrap()
}

const JOBS: &str = "/apis/batch/v1/namespaces/ml/jobs";
const PODS: &str = "/api/v1/namespaces/ml/pods";
const TRIAL_SELECTOR: (&str, &str) = ("labelSelector", "flywheel.dev/trial=penguins-0");

#[tokio::test]
async fn a_new_trial_gets_its_job() {
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(trial::reconcile(Arc::new(trial_object(None)), ctx.clone()));
    let owner = serde_json::to_value(study_object(
        "{maxTrials: 4, parallelism: 2, trialTimeoutSeconds: 600}",
        None,
    ))
    .unwrap();
    server
        .expect(
            Method::GET,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins",
            &[],
            200,
            owner,
        )
        .await;
    server
        .expect(
            Method::GET,
            &format!("{JOBS}/penguins-0"),
            &[],
            404,
            not_found("penguins-0"),
        )
        .await;
    let job = server
        .expect_apply(&format!("{JOBS}/penguins-0"), "flywheel-operator")
        .await;
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "Trial");
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "trial-0");
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/flywheel-ml/flywheel-trainer:0.1.0"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--trial=penguins-0"), "{args:?}");
    assert!(
        args.contains(&"--output=file:///artifacts/ml/penguins/penguins-0"),
        "{args:?}"
    );
    assert_eq!(server.expect_event("ml").await["reason"], "JobCreated");
    server
        .expect(
            Method::GET,
            PODS,
            &[TRIAL_SELECTOR],
            200,
            list("Pod", vec![]),
        )
        .await;
    // No pod yet: the status (still Pending) is not rewritten.
    assert_eq!(
        finish(task, ctx, server).await,
        Action::requeue(trial::PENDING_REQUEUE)
    );
}

#[tokio::test]
async fn a_finished_pod_reports_and_result_land_in_trial_status() {
    let running = TrialStatus {
        phase: flywheel_core::api::TrialPhase::Running,
        start_time: Some(
            flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(NOW - 60).unwrap(),
            ),
        ),
        ..TrialStatus::default()
    };
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(trial::reconcile(
        Arc::new(trial_object(Some(running))),
        ctx.clone(),
    ));
    let owner = serde_json::to_value(study_object("{maxTrials: 4}", None)).unwrap();
    server
        .expect(
            Method::GET,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins",
            &[],
            200,
            owner,
        )
        .await;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "penguins-0", "namespace": "ml"},
                     "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}});
    server
        .expect(Method::GET, &format!("{JOBS}/penguins-0"), &[], 200, job)
        .await;
    let mut result = TrialResult::failed(flywheel_core::protocol::FailureReason::Internal, "");
    result.outcome = Outcome::Succeeded;
    result.reason = None;
    result.message = None;
    result.metrics.insert("accuracy".into(), 0.97);
    result.artifact_uri = Some("file:///artifacts/ml/penguins/penguins-0".into());
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "penguins-0-x7k2p", "namespace": "ml", "creationTimestamp": "2026-05-28T10:00:00Z"},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "trial", "image": "t", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "startedAt": "2026-05-28T10:00:05Z", "finishedAt": "2026-05-28T10:01:05Z",
                                     "message": result.to_termination_message()}}}]}});
    server
        .expect(
            Method::GET,
            PODS,
            &[TRIAL_SELECTOR],
            200,
            list("Pod", vec![pod]),
        )
        .await;
    let log = "{\"flywheel\":\"report\",\"step\":1,\"metrics\":{\"accuracy\":0.9}}\nfitting\n";
    let next = server.handle.next_request().await.unwrap();
    assert_eq!(next.0.uri().path(), format!("{PODS}/penguins-0-x7k2p/log"));
    assert!(next.0.uri().query().unwrap().contains("container=trial"));
    next.1.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(log.as_bytes().to_vec()))
            .unwrap(),
    );
    let put = server
        .expect(
            Method::PUT,
            &format!("{TRIALS}/penguins-0/status"),
            &[],
            200,
            trial_json(0, None),
        )
        .await;
    assert_eq!(
        put.body["metadata"]["resourceVersion"], "3",
        "the write is conditional on the version read"
    );
    let status: TrialStatus = serde_json::from_value(put.body["status"].clone()).unwrap();
    assert_eq!(format!("{:?}", status.phase), "Succeeded");
    assert_eq!(status.objective, Some(0.97));
    assert_eq!(status.reports.len(), 1);
    assert_eq!(
        status.completion_time.unwrap().0.to_string(),
        "2026-05-28T10:01:05Z"
    );
    let event = server.expect_event("ml").await;
    assert_eq!(event["regarding"]["kind"], "Trial");
    assert_eq!(finish(task, ctx, server).await, Action::await_change());
}

#[tokio::test]
async fn a_pruned_trial_loses_its_running_job() {
    let pruned = TrialStatus {
        phase: flywheel_core::api::TrialPhase::Pruned,
        reason: Some("EarlyStopped".into()),
        ..TrialStatus::default()
    };
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(trial::reconcile(
        Arc::new(trial_object(Some(pruned.clone()))),
        ctx.clone(),
    ));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "penguins-0", "namespace": "ml"},
                     "status": {"active": 1}});
    server
        .expect(
            Method::GET,
            &format!("{JOBS}/penguins-0"),
            &[],
            200,
            job.clone(),
        )
        .await;
    let running = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "penguins-0-x7k2p", "namespace": "ml", "creationTimestamp": "2026-05-28T10:00:00Z"},
        "status": {"phase": "Running", "containerStatuses": [{"name": "trial", "image": "t", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-05-28T10:00:05Z"}}}]}});
    server
        .expect(
            Method::GET,
            PODS,
            &[TRIAL_SELECTOR],
            200,
            list("Pod", vec![running]),
        )
        .await;
    let delete = server
        .expect(Method::DELETE, &format!("{JOBS}/penguins-0"), &[], 200, job)
        .await;
    assert_eq!(delete.body["propagationPolicy"], "Background");
    assert_eq!(server.expect_event("ml").await["reason"], "JobDeleted");
    finish(task, ctx, server).await;

    // Once the Job is gone, nothing more happens.
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(trial::reconcile(
        Arc::new(trial_object(Some(pruned))),
        ctx.clone(),
    ));
    server
        .expect(
            Method::GET,
            &format!("{JOBS}/penguins-0"),
            &[],
            404,
            not_found("penguins-0"),
        )
        .await;
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn a_failed_trial_keeps_its_job_and_log_for_the_ttl() {
    // The trial wrote a BadInput result and exited; the Job controller has not caught up yet
    // and still counts the pod active.
    let failed = TrialStatus {
        phase: flywheel_core::api::TrialPhase::Failed,
        reason: Some("BadInput".into()),
        message: Some("column species not found".into()),
        ..TrialStatus::default()
    };
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(trial::reconcile(
        Arc::new(trial_object(Some(failed))),
        ctx.clone(),
    ));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "penguins-0", "namespace": "ml"},
                     "status": {"active": 1}});
    server
        .expect(Method::GET, &format!("{JOBS}/penguins-0"), &[], 200, job)
        .await;
    let ended = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "penguins-0-x7k2p", "namespace": "ml", "creationTimestamp": "2026-05-28T10:00:00Z"},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "trial", "image": "t", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2, "message": "{}"}}}]}});
    server
        .expect(
            Method::GET,
            PODS,
            &[TRIAL_SELECTOR],
            200,
            list("Pod", vec![ended]),
        )
        .await;
    // No DELETE and no JobDeleted Event: ttlSecondsAfterFinished removes the Job later.
    assert_eq!(finish(task, ctx, server).await, Action::await_change());
}

fn model_deployment() -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "penguins", "namespace": "ml", "uid": "md-uid", "generation": 2},
        "spec": {"model": {"uri": "file:///artifacts/ml/penguins/penguins-1", "version": "penguins-1"}, "replicas": 2},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_model_deployment_rolls_out_then_rests() {
    let deployments = "/apis/apps/v1/namespaces/ml/deployments";
    let services = "/api/v1/namespaces/ml/services";
    let monitors = "/apis/monitoring.coreos.com/v1/namespaces/ml/servicemonitors";
    let (ctx, mut server) = context(true);
    let task = tokio::spawn(deployment::reconcile(
        Arc::new(model_deployment()),
        ctx.clone(),
    ));
    server
        .expect(
            Method::GET,
            &format!("{deployments}/penguins"),
            &[],
            404,
            not_found("penguins"),
        )
        .await;
    let applied_deployment = server
        .expect_apply(&format!("{deployments}/penguins"), "flywheel-operator")
        .await;
    assert_eq!(applied_deployment["spec"]["replicas"], 2);
    assert!(applied_deployment["metadata"]["annotations"][deployment::APPLIED_DIGEST].is_string());
    server
        .expect(
            Method::GET,
            &format!("{services}/penguins"),
            &[],
            404,
            not_found("penguins"),
        )
        .await;
    let applied_service = server
        .expect_apply(&format!("{services}/penguins"), "flywheel-operator")
        .await;
    server
        .expect(
            Method::GET,
            &format!("{monitors}/penguins"),
            &[],
            404,
            not_found("penguins"),
        )
        .await;
    let applied_monitor = server
        .expect_apply(&format!("{monitors}/penguins"), "flywheel-operator")
        .await;
    assert_eq!(applied_monitor["spec"]["endpoints"][0]["port"], "http");
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status = patch.body["status"].clone();
    assert_eq!(status["endpoint"], "http://penguins.ml.svc:80");
    assert!(
        status.get("servingVersion").is_none(),
        "nothing serves before the rollout"
    );
    finish(task, ctx, server).await;

    // The rollout finished: the version serves, announced once.
    let mut md = model_deployment();
    md.status = Some(serde_json::from_value(status).unwrap());
    let mut rolled = applied_deployment.clone();
    rolled["metadata"]["generation"] = json!(1);
    rolled["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
    let (ctx, mut server) = context(true);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("{deployments}/penguins"),
            &[],
            200,
            rolled.clone(),
        )
        .await;
    server
        .expect(
            Method::GET,
            &format!("{services}/penguins"),
            &[],
            200,
            applied_service.clone(),
        )
        .await;
    server
        .expect(
            Method::GET,
            &format!("{monitors}/penguins"),
            &[],
            200,
            applied_monitor.clone(),
        )
        .await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    assert_eq!(patch.body["status"]["servingVersion"], "penguins-1");
    assert_eq!(patch.body["status"]["readyReplicas"], 2);
    assert_eq!(server.expect_event("ml").await["reason"], "Serving");
    finish(task, ctx, server).await;

    // Steady state: three reads, no writes.
    md.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    let (ctx, mut server) = context(true);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("{deployments}/penguins"),
            &[],
            200,
            rolled,
        )
        .await;
    server
        .expect(
            Method::GET,
            &format!("{services}/penguins"),
            &[],
            200,
            applied_service,
        )
        .await;
    server
        .expect(
            Method::GET,
            &format!("{monitors}/penguins"),
            &[],
            200,
            applied_monitor,
        )
        .await;
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn a_retraining_policy_reads_every_server_and_flags_a_due_retraining() {
    let deployments = "/apis/apps/v1/namespaces/ml/deployments";
    let services = "/api/v1/namespaces/ml/services";
    let mut md = model_deployment();
    md.spec.model.as_mut().unwrap().study = Some("penguins".into());
    md.spec.retraining = Some(serde_json::from_value(json!({"metricThreshold": 0.9})).unwrap());
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("{deployments}/penguins"),
            &[],
            404,
            not_found("penguins"),
        )
        .await;
    server
        .expect_apply(&format!("{deployments}/penguins"), "flywheel-operator")
        .await;
    server
        .expect(
            Method::GET,
            &format!("{services}/penguins"),
            &[],
            404,
            not_found("penguins"),
        )
        .await;
    server
        .expect_apply(&format!("{services}/penguins"), "flywheel-operator")
        .await;

    // Both ready replicas are asked (through the pod proxy); the not-ready one is not.
    let pod = |name: &str, ready: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ml"},
               "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    };
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods",
            &[(
                "labelSelector",
                "app.kubernetes.io/name=flywheel-server,app.kubernetes.io/component=penguins",
            )],
            200,
            list(
                "Pod",
                vec![
                    pod("penguins-a", "True"),
                    pod("penguins-b", "True"),
                    pod("penguins-c", "False"),
                ],
            ),
        )
        .await;
    let stats = |accuracy: f64, window: u64| {
        json!({"model": "penguins", "versions": [
            {"model_version": "penguins-1", "role": "primary", "predictions": 900, "labelled": window, "window": window, "accuracy": accuracy}]})
    };
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods/penguins-a:8080/proxy/v1/models/penguins/stats",
            &[],
            200,
            stats(0.9, 300),
        )
        .await;
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods/penguins-b:8080/proxy/v1/models/penguins/stats",
            &[],
            200,
            stats(0.6, 100),
        )
        .await;
    let owner = json!({"apiVersion": "flywheel.dev/v1alpha1", "kind": "Study",
        "metadata": {"name": "penguins", "namespace": "ml"},
        "spec": serde_json::to_value(study_object("{maxTrials: 2}", None).spec).unwrap(),
        "status": {"phase": "Succeeded", "trials": {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "pruned": 0},
                   "bestTrial": {"name": "penguins-1", "family": "logistic", "objective": 0.97, "metrics": {"accuracy": 0.97}}}});
    server
        .expect(
            Method::GET,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins",
            &[],
            200,
            owner,
        )
        .await;
    // The trigger fired: the next generation does not exist yet, so a ready server summarises
    // the archive as of the cut, and the retraining study is created from it.
    let until = expect_archive_summary(
        &mut server,
        "penguins-g1",
        json!({"model": "penguins", "labelled_rows": 412, "serving_version": "penguins-1",
               "serving_rows": 400, "online": {"accuracy": 0.82},
               "error_slices": [{"column": "island", "value": "Dream", "samples": 90, "error": 0.4, "overallError": 0.18}]}),
    )
    .await;
    let created = server
        .expect(
            Method::PATCH,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins-g1",
            &[("fieldManager", "flywheel-retraining")],
            201,
            serde_json::to_value(study_object("{maxTrials: 2}", None)).unwrap(),
        )
        .await;
    assert_eq!(
        created.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let child: Study = serde_json::from_value(created.body).unwrap();
    assert_eq!(child.metadata.namespace.as_deref(), Some("ml"));
    let origin = child.spec.origin.as_ref().unwrap();
    assert_eq!(
        (
            origin.parent_study.as_str(),
            origin.generation,
            origin.trigger.as_str(),
            origin.production_rows
        ),
        ("penguins", 1, "MetricThreshold", 412)
    );
    assert_eq!(origin.error_slices[0].value, "Dream");
    assert_eq!(
        child.spec.dataset.uri,
        "file:///artifacts/data/penguins.csv"
    );
    let source = &child.spec.dataset.feedback[0];
    assert_eq!(
        (
            source.uri.as_str(),
            source.model.as_str(),
            source.until.as_deref()
        ),
        (
            "file:///artifacts/ml/logs/penguins",
            "penguins",
            Some(until.as_str())
        )
    );
    assert_eq!(
        child.spec.warm_start.as_ref().unwrap().studies,
        vec!["penguins"]
    );
    assert_eq!(
        serde_json::to_value(child.spec.promotion.as_ref().unwrap()).unwrap(),
        json!({"deployment": "penguins", "policy": "shadow"})
    );
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status = &patch.body["status"];
    assert_eq!(status["retrainingStudy"], "penguins-g1");
    assert_eq!(status["labelledPredictions"], 400);
    // (300 × 0.9 + 100 × 0.6) / 400
    assert!((status["onlineMetrics"]["accuracy"].as_f64().unwrap() - 0.825).abs() < 1e-9);
    let due = condition_of(status, deployment::RETRAINING_DUE);
    assert_eq!(
        (&due["status"], &due["reason"]),
        (&json!("True"), &json!("MetricThreshold"))
    );
    assert_eq!(
        server.expect_event("ml").await["reason"],
        deployment::RETRAINING_DUE
    );
    let started = server.expect_event("ml").await;
    assert_eq!(started["reason"], deployment::RETRAINING_STARTED);
    assert!(
        started["note"]
            .as_str()
            .unwrap()
            .contains("412 labelled production rows"),
        "{started}"
    );
    assert_eq!(
        finish(task, ctx, server).await,
        Action::requeue(deployment::STATS_REQUEUE)
    );
}

#[tokio::test]
async fn unreadable_server_stats_make_retraining_unknown_loudly() {
    let mut md = model_deployment();
    md.spec.retraining = Some(serde_json::from_value(json!({"metricThreshold": 0.9})).unwrap());
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    expect_server_objects(&mut server).await;
    expect_ready_server_pods(&mut server, &["penguins-a", "penguins-b"]).await;
    // One replica's proxy is forbidden; the other answers with a metric far below the
    // threshold, which on its own would fire the policy.
    expect_stats(
        &mut server,
        "penguins-a",
        403,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "pods \"penguins-a\" is forbidden: User cannot get resource \"pods/proxy\""}),
    )
    .await;
    expect_stats(
        &mut server,
        "penguins-b",
        200,
        json!({"model": "penguins", "versions": [
                {"model_version": "penguins-1", "role": "primary", "predictions": 900, "labelled": 300, "window": 300, "accuracy": 0.5}]}),
    )
    .await;
    // No decision on half the feedback: no retraining study is looked up or created.
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status = &patch.body["status"];
    let due = condition_of(status, deployment::RETRAINING_DUE);
    assert_eq!(
        (&due["status"], &due["reason"]),
        (&json!("Unknown"), &json!(deployment::STATS_UNAVAILABLE))
    );
    let message = due["message"].as_str().unwrap();
    assert!(
        message.contains("1 of 2")
            && message.contains("penguins-a")
            && message.contains("pods/proxy"),
        "{message}"
    );
    assert!(status.get("onlineMetrics").is_none(), "{status}");
    let event = server.expect_event("ml").await;
    assert_eq!(
        (&event["type"], &event["reason"]),
        (&json!("Warning"), &json!(deployment::STATS_UNAVAILABLE))
    );
    let metrics = ctx.metrics.clone();
    assert_eq!(
        finish(task, ctx, server).await,
        Action::requeue(deployment::STATS_REQUEUE)
    );
    assert!(
        metrics.encode().contains(
            r#"flywheel_operator_stats_poll_failures_total{namespace="ml",deployment="penguins"} 1"#
        ),
        "{}",
        metrics.encode()
    );
}

/// A rollout replaces a server pod between the operator's list and its stats read: the API
/// server answers that the pod is gone, which is no failure to read the stats (a Warning on
/// every rollout would cry wolf); the policy is judged on the replica that exists.
#[tokio::test]
async fn a_server_pod_deleted_during_the_poll_is_left_out() {
    let mut md = model_deployment();
    md.spec.retraining = Some(serde_json::from_value(json!({"minNewLabels": 100})).unwrap());
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    expect_server_objects(&mut server).await;
    expect_ready_server_pods(&mut server, &["penguins-old", "penguins-new"]).await;
    expect_stats(
        &mut server,
        "penguins-old",
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": "pods \"penguins-old\" not found", "details": {"name": "penguins-old", "kind": "pods"}}),
    )
    .await;
    expect_stats(
        &mut server,
        "penguins-new",
        200,
        json!({"model": "penguins", "versions": [
                {"model_version": "penguins-1", "role": "primary", "predictions": 40, "labelled": 12, "window": 12, "accuracy": 1.0}]}),
    )
    .await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status = &patch.body["status"];
    let due = condition_of(status, deployment::RETRAINING_DUE);
    assert_eq!(
        (&due["status"], &due["reason"]),
        (&json!("False"), &json!("WithinPolicy")),
        "{status}"
    );
    assert_eq!(status["labelledPredictions"], 12, "{status}");
    // No StatsUnavailable Warning: the reconcile ends without an Event.
    let metrics = ctx.metrics.clone();
    assert_eq!(
        finish(task, ctx, server).await,
        Action::requeue(deployment::STATS_REQUEUE)
    );
    assert!(
        !metrics.encode().contains(
            r#"flywheel_operator_stats_poll_failures_total{namespace="ml",deployment="penguins"} 1"#
        ),
        "{}",
        metrics.encode()
    );
}

/// The retraining study `study` does not exist yet, so ready server penguins-a summarises the
/// archive as of the cut, two minutes back; `summary` is its answer without the cut, which is
/// returned.
async fn expect_archive_summary(server: &mut ApiServer, study: &str, mut summary: Value) -> String {
    server
        .expect(
            Method::GET,
            &format!("/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/{study}"),
            &[],
            404,
            not_found(study),
        )
        .await;
    let until = Timestamp::from_second(NOW - 120).unwrap().to_string();
    summary["until"] = json!(until);
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods/penguins-a:8080/proxy/v1/models/penguins/production",
            &[("until", until.as_str())],
            200,
            summary,
        )
        .await;
    until
}

/// A first reconcile's Deployment and Service of ModelDeployment penguins: absent, applied.
async fn expect_server_objects(server: &mut ApiServer) {
    let deployments = "/apis/apps/v1/namespaces/ml/deployments";
    let services = "/api/v1/namespaces/ml/services";
    for (collection, kind) in [(deployments, "deployment"), (services, "service")] {
        server
            .expect(
                Method::GET,
                &format!("{collection}/penguins"),
                &[],
                404,
                not_found(kind),
            )
            .await;
        server
            .expect_apply(&format!("{collection}/penguins"), "flywheel-operator")
            .await;
    }
}

/// One server pod's `/v1/models/penguins/stats`, read through the API server's pod proxy.
async fn expect_stats(server: &mut ApiServer, pod: &str, code: u16, answer: Value) {
    server
        .expect(
            Method::GET,
            &format!("/api/v1/namespaces/ml/pods/{pod}:8080/proxy/v1/models/penguins/stats"),
            &[],
            code,
            answer,
        )
        .await;
}

/// The list of the ModelDeployment's server pods, all of them ready.
async fn expect_ready_server_pods(server: &mut ApiServer, names: &[&str]) {
    let pods = names
        .iter()
        .map(|name| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ml"},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        })
        .collect();
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods",
            &[(
                "labelSelector",
                "app.kubernetes.io/name=flywheel-server,app.kubernetes.io/component=penguins",
            )],
            200,
            list("Pod", pods),
        )
        .await;
}

/// The requests of a retraining ModelDeployment's reconcile up to its decisions: its
/// Deployment and Service applied, one ready pod's stats (`stats`), the serving study read.
async fn serve_and_poll(server: &mut ApiServer, stats: Value) {
    expect_server_objects(server).await;
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods",
            &[(
                "labelSelector",
                "app.kubernetes.io/name=flywheel-server,app.kubernetes.io/component=penguins",
            )],
            200,
            list(
                "Pod",
                vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "penguins-a", "namespace": "ml"},
                            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})],
            ),
        )
        .await;
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods/penguins-a:8080/proxy/v1/models/penguins/stats",
            &[],
            200,
            stats,
        )
        .await;
    server
        .expect(
            Method::GET,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins",
            &[],
            200,
            serde_json::to_value(study_object("{maxTrials: 2}", None)).unwrap(),
        )
        .await;
}

/// A ModelDeployment serving penguins-1 with the retraining study's winner as its shadow.
fn gated_deployment() -> ModelDeployment {
    let mut md = model_deployment();
    md.metadata.resource_version = Some("41".into());
    md.spec.model.as_mut().unwrap().study = Some("penguins".into());
    md.spec.retraining = Some(
        serde_json::from_value(
            json!({"metricThreshold": 0.5, "gate": {"samples": 100, "margin": 0.02}}),
        )
        .unwrap(),
    );
    md.spec.shadow = Some(
        serde_json::from_value(
            json!({"uri": "file:///artifacts/ml/penguins-g1/penguins-g1-4",
            "version": "penguins-g1-4", "study": "penguins-g1", "trial": "penguins-g1-4"}),
        )
        .unwrap(),
    );
    md
}

fn paired_stats(both: u64, only_serving: u64, only_candidate: u64, neither: u64) -> Value {
    let samples = both + only_serving + only_candidate + neither;
    json!({"model": "penguins", "versions": [
        {"model_version": "penguins-1", "role": "primary", "predictions": 900, "labelled": samples,
         "window": samples, "accuracy": (both + only_serving) as f64 / samples as f64},
        {"model_version": "penguins-g1-4", "role": "shadow", "predictions": 900, "labelled": samples,
         "window": samples, "accuracy": (both + only_candidate) as f64 / samples as f64,
         "paired": {"serving_version": "penguins-1", "samples": samples, "both_right": both,
                    "only_serving": only_serving, "only_candidate": only_candidate, "neither_right": neither}},
        // The shadow against an earlier primary is no evidence about this pair.
        {"model_version": "penguins-g1-4", "predictions": 0, "labelled": 0, "window": 0,
         "paired": {"serving_version": "penguins-0", "samples": 500, "only_serving": 500}}]})
}

#[tokio::test]
async fn the_shadow_gate_promotes_a_better_candidate_in_one_conditional_patch() {
    let md = gated_deployment();
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    // 160 paired rows: the candidate alone right on 30, the serving model alone on 6.
    serve_and_poll(&mut server, paired_stats(110, 6, 30, 14)).await;
    let swap = server
        .expect(
            Method::PATCH,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins",
            &[("fieldManager", "flywheel-gate")],
            200,
            serde_json::to_value(&md).unwrap(),
        )
        .await;
    assert_eq!(
        swap.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        swap.body,
        json!({"metadata": {"resourceVersion": "41"},
               "spec": {"model": serde_json::to_value(md.spec.shadow.as_ref().unwrap()).unwrap(), "shadow": null}})
    );
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status = &patch.body["status"];
    let gate = condition_of(status, deployment::SHADOW_GATE);
    assert_eq!(
        (&gate["status"], &gate["reason"]),
        (&json!("True"), &json!("Promoted"))
    );
    assert_eq!(status["lastGate"]["decision"], "promote");
    assert_eq!(status["lastGate"]["test"], "mcnemar");
    assert_eq!(status["lastGate"]["samples"], 160);
    assert!(
        status["lastGate"]["pValue"].as_f64().unwrap() < 0.05,
        "{status}"
    );
    // Rolling back is setting spec.model to this.
    assert_eq!(
        status["previousModel"],
        serde_json::to_value(md.spec.model.as_ref().unwrap()).unwrap()
    );
    let event = server.expect_event("ml").await;
    assert_eq!(event["reason"], deployment::SHADOW_PROMOTED);
    assert!(
        event["note"].as_str().unwrap().contains("160 rows"),
        "{event}"
    );
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn the_shadow_gate_waits_for_evidence_then_rejects_a_candidate_no_better() {
    let md = gated_deployment();
    // 40 paired rows: fewer than the 100 the gate asks for. It waits; nothing changes in spec.
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    serve_and_poll(&mut server, paired_stats(30, 4, 5, 1)).await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status: flywheel_core::api::ModelDeploymentStatus =
        serde_json::from_value(patch.body["status"].clone()).unwrap();
    let gate = status
        .conditions
        .iter()
        .find(|c| c.type_ == deployment::SHADOW_GATE)
        .unwrap();
    assert_eq!(
        (gate.status.as_str(), gate.reason.as_str()),
        ("Unknown", "Waiting")
    );
    assert!(gate.message.contains("40 of 100"), "{}", gate.message);
    assert!(status.last_gate.is_none());
    finish(task, ctx, server).await;

    // 200 rows where the candidate is right alone as often as the serving model: rejected,
    // the shadow cleared, the serving model untouched.
    let mut waited = md.clone();
    waited.status = Some(status);
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(waited), ctx.clone()));
    serve_and_poll(&mut server, paired_stats(150, 20, 22, 8)).await;
    let clear = server
        .expect(
            Method::PATCH,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins",
            &[("fieldManager", "flywheel-gate")],
            200,
            serde_json::to_value(&md).unwrap(),
        )
        .await;
    assert_eq!(
        clear.body,
        json!({"metadata": {"resourceVersion": "41"}, "spec": {"shadow": null}})
    );
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let status = &patch.body["status"];
    assert_eq!(status["lastGate"]["decision"], "reject");
    assert!(status.get("previousModel").is_none(), "{status}");
    let gate = condition_of(status, deployment::SHADOW_GATE);
    assert_eq!(
        (&gate["status"], &gate["reason"]),
        (&json!("False"), &json!("Rejected"))
    );
    assert_eq!(
        server.expect_event("ml").await["reason"],
        deployment::SHADOW_REJECTED
    );
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn a_candidate_creates_a_missing_lease_and_loses_a_race_gracefully() {
    use flywheel_operator::controller::lease::{Elector, LeaseSettings};
    let leases = "/apis/coordination.k8s.io/v1/namespaces/flywheel-system/leases";
    let (service, handle) = pair::<Request<Body>, Response<Body>>();
    let mut server = ApiServer { handle };
    let elector = Arc::new(Elector::new(
        Client::new(service, "default"),
        LeaseSettings::new(
            "flywheel-operator".into(),
            "flywheel-system".into(),
            "operator-0".into(),
        ),
    ));
    let round = {
        let elector = elector.clone();
        tokio::spawn(async move { elector.try_acquire_or_renew().await })
    };
    server
        .expect(
            Method::GET,
            &format!("{leases}/flywheel-operator"),
            &[],
            404,
            not_found("flywheel-operator"),
        )
        .await;
    let created = server
        .expect(
            Method::POST,
            leases,
            &[],
            201,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "flywheel-operator", "namespace": "flywheel-system", "resourceVersion": "40"},
                   "spec": {"holderIdentity": "operator-0", "leaseDurationSeconds": 15}}),
        )
        .await;
    assert_eq!(created.body["metadata"]["name"], "flywheel-operator");
    assert_eq!(created.body["spec"]["holderIdentity"], "operator-0");
    assert_eq!(created.body["spec"]["leaseDurationSeconds"], 15);
    assert!(round.await.unwrap().unwrap(), "the creator leads");

    // Another replica holds a fresh lease: follow it, write nothing.
    let round = {
        let elector = elector.clone();
        tokio::spawn(async move { elector.try_acquire_or_renew().await })
    };
    let now = Timestamp::now();
    let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "flywheel-operator", "namespace": "flywheel-system", "resourceVersion": "41"},
        "spec": {"holderIdentity": "operator-1", "leaseDurationSeconds": 15,
                 "renewTime": now.to_string(), "acquireTime": now.to_string(), "leaseTransitions": 2}});
    server
        .expect(
            Method::GET,
            &format!("{leases}/flywheel-operator"),
            &[],
            200,
            held.clone(),
        )
        .await;
    assert!(!round.await.unwrap().unwrap());

    // It expired: take it over with a replace conditional on the version read; a conflict means
    // another candidate won the round.
    let round = {
        let elector = elector.clone();
        tokio::spawn(async move { elector.try_acquire_or_renew().await })
    };
    let mut expired = held.clone();
    let old = (now - std::time::Duration::from_secs(60)).to_string();
    expired["spec"]["renewTime"] = json!(old);
    server
        .expect(
            Method::GET,
            &format!("{leases}/flywheel-operator"),
            &[],
            200,
            expired,
        )
        .await;
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                          "message": "the object has been modified"});
    let replace = server
        .expect(
            Method::PUT,
            &format!("{leases}/flywheel-operator"),
            &[],
            409,
            conflict,
        )
        .await;
    assert_eq!(replace.body["metadata"]["resourceVersion"], "41");
    assert_eq!(replace.body["spec"]["holderIdentity"], "operator-0");
    assert_eq!(replace.body["spec"]["leaseTransitions"], 3);
    assert!(!round.await.unwrap().unwrap());
    drop(elector);
    server.done().await;
}

#[tokio::test]
async fn a_trial_past_its_timeout_is_stopped_with_the_version_that_was_listed() {
    let (ctx, mut server) = context(false);
    let study = study_object("{maxTrials: 1, trialTimeoutSeconds: 60}", None);
    let task = tokio::spawn(study::reconcile(Arc::new(study), ctx.clone()));
    let running = TrialStatus {
        phase: flywheel_core::api::TrialPhase::Running,
        start_time: Some(
            flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(NOW - 600).unwrap(),
            ),
        ),
        ..TrialStatus::default()
    };
    server
        .expect(
            Method::GET,
            TRIALS,
            &[STUDY_SELECTOR],
            200,
            list("Trial", vec![trial_json(0, Some(running))]),
        )
        .await;
    // No second read: the stop is written against the list the plan came from.
    let put = server
        .expect(
            Method::PUT,
            &format!("{TRIALS}/penguins-0/status"),
            &[],
            200,
            trial_json(0, None),
        )
        .await;
    assert_eq!(put.body["metadata"]["resourceVersion"], "3");
    let status: TrialStatus = serde_json::from_value(put.body["status"].clone()).unwrap();
    assert_eq!(format!("{:?}", status.phase), "Failed");
    assert_eq!(status.reason.as_deref(), Some("TrialTimeout"));
    assert_eq!(status.completion_time.unwrap().0.as_second(), NOW);
    let stopped = server.expect_event("ml").await;
    assert_eq!(
        (&stopped["reason"], &stopped["type"]),
        (&json!("TrialTimeout"), &json!("Warning"))
    );
    server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    server.expect_event("ml").await;
    finish(task, ctx, server).await;
}

const NO_GPU: &str = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.";

/// A trial whose pod the scheduler cannot place, as the Trial controller records it.
fn unschedulable_trial(index: u32, failed: bool) -> Value {
    let mut status: TrialStatus = serde_json::from_value(json!({
        "phase": "Pending",
        "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable",
                        "message": NO_GPU, "lastTransitionTime": "2026-05-28T10:00:00Z"}]}))
    .unwrap();
    if failed {
        status.phase = flywheel_core::api::TrialPhase::Failed;
        status.reason = Some("Unschedulable".into());
        status.message = Some(format!(
            "the trial was never scheduled within trialTimeoutSeconds: {NO_GPU}"
        ));
    }
    trial_json(index, Some(status))
}

#[tokio::test]
async fn unschedulable_trials_are_a_study_condition_and_a_warning() {
    let budget = "{maxTrials: 4, parallelism: 2, trialTimeoutSeconds: 600}";
    let trials = || {
        list(
            "Trial",
            vec![unschedulable_trial(0, false), unschedulable_trial(1, false)],
        )
    };
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, None)),
        ctx.clone(),
    ));
    server
        .expect(Method::GET, TRIALS, &[STUDY_SELECTOR], 200, trials())
        .await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    let status: StudyStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    let waiting = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TrialsSchedulable")
        .unwrap();
    assert_eq!(
        (waiting.status.as_str(), waiting.reason.as_str()),
        ("False", "Unschedulable")
    );
    assert_eq!(
        waiting.message,
        format!("penguins-0, penguins-1 cannot be scheduled: {NO_GPU}")
    );
    let warning = server.expect_event("ml").await;
    assert_eq!(
        (&warning["type"], &warning["reason"]),
        (&json!("Warning"), &json!("Unschedulable"))
    );
    assert_eq!(warning["note"], waiting.message.as_str());
    // The phase announcement names the phase's own reason, not the scheduling condition.
    assert_eq!(server.expect_event("ml").await["reason"], "Running");
    finish(task, ctx, server).await;

    // The same trials still waiting: nothing to write, no second Warning.
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(study::reconcile(
        Arc::new(study_object(budget, Some(&status))),
        ctx.clone(),
    ));
    server
        .expect(Method::GET, TRIALS, &[STUDY_SELECTOR], 200, trials())
        .await;
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn a_study_whose_trials_never_got_a_node_fails_unschedulable() {
    let (ctx, mut server) = context(false);
    let study = study_object(
        "{maxTrials: 4, parallelism: 2, trialTimeoutSeconds: 600}",
        None,
    );
    let task = tokio::spawn(study::reconcile(Arc::new(study), ctx.clone()));
    server
        .expect(
            Method::GET,
            TRIALS,
            &[STUDY_SELECTOR],
            200,
            list(
                "Trial",
                vec![unschedulable_trial(0, true), unschedulable_trial(1, false)],
            ),
        )
        .await;
    // The trial still waiting is stopped with the study's failure.
    let put = server
        .expect(
            Method::PUT,
            &format!("{TRIALS}/penguins-1/status"),
            &[],
            200,
            trial_json(1, None),
        )
        .await;
    let stopped: TrialStatus = serde_json::from_value(put.body["status"].clone()).unwrap();
    assert_eq!(stopped.reason.as_deref(), Some("StudyFailed"));
    server.expect_event("ml").await;
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins/status",
            serde_json::to_value(study_object("{maxTrials: 1}", None)).unwrap(),
        )
        .await;
    let status: StudyStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(format!("{:?}", status.phase), "Failed");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason, "Unschedulable");
    assert!(failed.message.ends_with(NO_GPU), "{}", failed.message);
    // The phase's Event names the cause.
    let ended = server.expect_event("ml").await;
    assert_eq!(
        (&ended["type"], &ended["reason"]),
        (&json!("Warning"), &json!("Unschedulable"))
    );
    assert!(
        ended["note"].as_str().unwrap().contains("Failed"),
        "{ended}"
    );
    finish(task, ctx, server).await;
}

#[tokio::test]
async fn a_model_deployment_without_a_model_runs_nothing_until_promotion() {
    let mut md = model_deployment();
    md.spec.model = None;
    let (ctx, mut server) = context(true);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    // No Deployment (it could only crash-loop), no Service, no ServiceMonitor: only the status.
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    let ready = condition_of(&patch.body["status"], deployment::READY);
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!(deployment::WAITING_FOR_MODEL))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("promotion.deployment: penguins")
    );
    assert!(patch.body["status"].get("servingVersion").is_none());
    assert_eq!(finish(task, ctx, server).await, Action::await_change());

    // Steady while waiting: not a single request.
    md.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    let (ctx, server) = context(true);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md), ctx.clone()));
    assert_eq!(finish(task, ctx, server).await, Action::await_change());
}

#[tokio::test]
async fn a_rejected_generation_does_not_block_the_next_one() {
    let mut md = model_deployment();
    md.spec.model.as_mut().unwrap().study = Some("penguins".into());
    md.spec.retraining = Some(serde_json::from_value(json!({"metricThreshold": 0.9})).unwrap());
    let (ctx, mut server) = context(false);
    let task = tokio::spawn(deployment::reconcile(Arc::new(md.clone()), ctx.clone()));
    serve_and_poll(
        &mut server,
        json!({"model": "penguins", "versions": [
            {"model_version": "penguins-1", "role": "primary", "predictions": 900, "labelled": 300, "window": 300, "accuracy": 0.6}]}),
    )
    .await;
    // penguins-g1 succeeded and its candidate went to the shadow, which is empty again: the
    // gate rejected it. The ModelDeployment is read afresh to be sure, then g2 starts.
    let mut spent = serde_json::to_value(study_object("{maxTrials: 2}", None)).unwrap();
    spent["metadata"]["name"] = json!("penguins-g1");
    spent["status"] = json!({"phase": "Succeeded",
        "trials": {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "pruned": 0},
        "conditions": [{"type": "Promoted", "status": "True", "reason": "Shadow", "message": "",
                        "lastTransitionTime": "2026-05-28T10:00:00Z"}]});
    server
        .expect(
            Method::GET,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins-g1",
            &[],
            200,
            spent,
        )
        .await;
    server
        .expect(
            Method::GET,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins",
            &[],
            200,
            serde_json::to_value(&md).unwrap(),
        )
        .await;
    expect_archive_summary(
        &mut server,
        "penguins-g2",
        json!({"model": "penguins", "labelled_rows": 300, "serving_version": "penguins-1",
               "serving_rows": 300, "online": {"accuracy": 0.6}, "error_slices": []}),
    )
    .await;
    let created = server
        .expect(
            Method::PATCH,
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/studies/penguins-g2",
            &[("fieldManager", "flywheel-retraining")],
            201,
            serde_json::to_value(study_object("{maxTrials: 2}", None)).unwrap(),
        )
        .await;
    let child: Study = serde_json::from_value(created.body).unwrap();
    assert_eq!(child.metadata.name.as_deref(), Some("penguins-g2"));
    let origin = child.spec.origin.as_ref().unwrap();
    assert_eq!(
        (origin.parent_study.as_str(), origin.generation),
        ("penguins", 2)
    );
    let patch = server
        .expect_status_apply(
            "/apis/flywheel.dev/v1alpha1/namespaces/ml/modeldeployments/penguins/status",
            serde_json::to_value(model_deployment()).unwrap(),
        )
        .await;
    assert_eq!(patch.body["status"]["retrainingStudy"], "penguins-g2");
    assert_eq!(
        server.expect_event("ml").await["reason"],
        deployment::RETRAINING_DUE
    );
    assert_eq!(
        server.expect_event("ml").await["reason"],
        deployment::RETRAINING_STARTED
    );
    finish(task, ctx, server).await;
}
