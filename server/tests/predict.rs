//! Predictions over real HTTP match scikit-learn's on the fixture rows.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, assert_close, expected};
use serde_json::{Value, json};

const PROBABILITY_TOLERANCE: f64 = 1e-4;

/// Checks a V1 response against expected.json of a classifier fixture.
fn check_classifier_v1(body: &Value, expected: &Value, version: &str) {
    let classes: Vec<String> = {
        let card: Value = serde_json::from_str(
            &std::fs::read_to_string(common::fixture(version).join("model.json")).unwrap(),
        )
        .unwrap();
        card["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        body["predictions"], expected["predictions"],
        "labels must match sklearn exactly"
    );
    let probabilities = body["probabilities"].as_array().unwrap();
    let want = expected["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), want.len());
    for (row, (got, want)) in probabilities.iter().zip(want).enumerate() {
        for (k, class) in classes.iter().enumerate() {
            assert_close(
                got[class].as_f64().unwrap(),
                want[k].as_f64().unwrap(),
                PROBABILITY_TOLERANCE,
                &format!("row {row} class {class}"),
            );
        }
    }
    let ids = body["request_ids"].as_array().unwrap();
    assert_eq!(ids.len(), want.len());
    assert!(
        ids.iter()
            .all(|id| uuid::Uuid::parse_str(id.as_str().unwrap()).is_ok())
    );
    assert_eq!(body["model_version"], format!("{version}-fixture-1"));
}

#[tokio::test]
async fn v1_iris_matches_sklearn() {
    let server = TestServer::fixture("iris_logistic").await;
    let expected = expected("iris_logistic");
    let (status, body) = server
        .post(
            "/v1/models/iris_logistic:predict",
            &json!({"instances": expected["instances"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    check_classifier_v1(&body, &expected, "iris_logistic");
}

#[tokio::test]
async fn v1_penguins_with_categories_and_missing_values_matches_sklearn() {
    let server = TestServer::fixture("penguins_rf").await;
    let expected = expected("penguins_rf");
    // The fixture includes a row with every measurement null and rows with sex null.
    assert!(
        expected["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["sex"].is_null())
    );
    let (status, body) = server
        .post(
            "/v1/models/penguins_rf:predict",
            &json!({"instances": expected["instances"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    check_classifier_v1(&body, &expected, "penguins_rf");
}

#[tokio::test]
async fn v1_zipmap_model_is_served_like_a_tensor_one() {
    let server = TestServer::fixture("iris_zipmap").await;
    let expected = expected("iris_zipmap");
    let (status, body) = server
        .post(
            "/v1/models/iris_zipmap:predict",
            &json!({"instances": expected["instances"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    check_classifier_v1(&body, &expected, "iris_zipmap");
}

#[tokio::test]
async fn v1_regression_matches_sklearn() {
    let server = TestServer::fixture("diabetes_linear").await;
    let expected = expected("diabetes_linear");
    let (status, body) = server
        .post(
            "/v1/models/diabetes_linear:predict",
            &json!({"instances": expected["instances"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("probabilities").is_none(),
        "regression has no probabilities: {body}"
    );
    for (got, want) in body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["predictions"].as_array().unwrap())
    {
        let want = want.as_f64().unwrap();
        // float32 inference against sklearn's float64.
        assert_close(
            got.as_f64().unwrap(),
            want,
            1e-4 * want.abs().max(1.0),
            "regression value",
        );
    }
}

#[tokio::test]
async fn v1_array_instances_follow_the_card_order() {
    let server = TestServer::fixture("iris_logistic").await;
    let expected = expected("iris_logistic");
    let order = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let arrays: Vec<Value> = expected["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| Value::Array(order.iter().map(|c| row[*c].clone()).collect()))
        .collect();
    let (status, body) = server
        .post(
            "/v1/models/iris_logistic:predict",
            &json!({"instances": arrays}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"], expected["predictions"]);
}

/// V2 tensors, one per column, from expected.json's instances.
fn v2_inputs(expected: &Value, card: &Value) -> Value {
    let rows = expected["instances"].as_array().unwrap();
    let inputs: Vec<Value> = card["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|column| {
            let name = column["name"].as_str().unwrap();
            let datatype = if column["kind"] == "categorical" {
                "BYTES"
            } else {
                "FP32"
            };
            json!({
                "name": name,
                "shape": [rows.len(), 1],
                "datatype": datatype,
                "data": rows.iter().map(|r| r[name].clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "id": "req-1", "inputs": inputs })
}

fn card(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(common::fixture(name).join("model.json")).unwrap(),
    )
    .unwrap()
}

async fn check_classifier_v2(name: &str, path: &str) {
    let server = TestServer::fixture(name).await;
    let expected = expected(name);
    let (status, body) = server.post(path, &v2_inputs(&expected, &card(name))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_name"], name);
    assert_eq!(body["model_version"], format!("{name}-fixture-1"));
    assert_eq!(body["id"], "req-1");
    let outputs = body["outputs"].as_array().unwrap();
    let predictions = outputs.iter().find(|o| o["name"] == "predictions").unwrap();
    assert_eq!(predictions["datatype"], "BYTES");
    assert_eq!(predictions["data"], expected["predictions"]);
    let rows = expected["predictions"].as_array().unwrap().len();
    assert_eq!(predictions["shape"], json!([rows]));
    let probabilities = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    assert_eq!(probabilities["datatype"], "FP32");
    assert_eq!(probabilities["shape"], json!([rows, 3]));
    let flat: Vec<f64> = expected["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|p| p.as_f64().unwrap()))
        .collect();
    for (i, (got, want)) in probabilities["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&flat)
        .enumerate()
    {
        assert_close(
            got.as_f64().unwrap(),
            *want,
            PROBABILITY_TOLERANCE,
            &format!("probability {i}"),
        );
    }
}

#[tokio::test]
async fn v2_iris_matches_sklearn() {
    check_classifier_v2("iris_logistic", "/v2/models/iris_logistic/infer").await;
}

#[tokio::test]
async fn v2_penguins_matches_sklearn_on_the_version_route() {
    check_classifier_v2(
        "penguins_rf",
        "/v2/models/penguins_rf/versions/penguins_rf-fixture-1/infer",
    )
    .await;
}

#[tokio::test]
async fn v2_regression_and_output_selection() {
    let server = TestServer::fixture("diabetes_linear").await;
    let expected = expected("diabetes_linear");
    let mut request = v2_inputs(&expected, &card("diabetes_linear"));
    request["outputs"] = json!([{"name": "predictions"}]);
    // Flat shape [N] and FP64 are accepted too.
    for input in request["inputs"].as_array_mut().unwrap() {
        let n = input["shape"][0].clone();
        input["shape"] = json!([n]);
        input["datatype"] = json!("FP64");
    }
    let (status, body) = server
        .post("/v2/models/diabetes_linear/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["datatype"], "FP32");
    for (got, want) in outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["predictions"].as_array().unwrap())
    {
        let want = want.as_f64().unwrap();
        assert_close(
            got.as_f64().unwrap(),
            want,
            1e-4 * want.abs().max(1.0),
            "regression value",
        );
    }
}

#[tokio::test]
async fn v2_classifier_can_return_probabilities_only() {
    let server = TestServer::fixture("iris_logistic").await;
    let expected = expected("iris_logistic");
    let mut request = v2_inputs(&expected, &card("iris_logistic"));
    request["outputs"] = json!([{"name": "probabilities"}]);
    request.as_object_mut().unwrap().remove("id");
    let (status, body) = server
        .post("/v2/models/iris_logistic/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["name"], "probabilities");
    assert!(
        uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok(),
        "a fresh id when none given"
    );
}

#[tokio::test]
async fn metadata_routes() {
    let server = TestServer::fixture("penguins_rf").await;

    let (status, body) = server.get("/v1/models").await;
    assert_eq!((status, body), (200, json!({"models": ["penguins_rf"]})));

    let (status, body) = server.get("/v1/models/penguins_rf").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"name": "penguins_rf", "ready": true, "version": "penguins_rf-fixture-1"})
    );

    let (status, body) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "flywheel-server");

    assert_eq!(
        server.get("/v2/health/live").await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        server.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
    assert_eq!(
        server.get("/v2/models/penguins_rf/ready").await,
        (200, json!({"name": "penguins_rf", "ready": true}))
    );
    assert_eq!(
        server
            .get("/v2/models/penguins_rf/versions/penguins_rf-fixture-1/ready")
            .await
            .0,
        200
    );

    let (status, body) = server.get("/v2/models/penguins_rf").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "penguins_rf");
    assert_eq!(body["versions"], json!(["penguins_rf-fixture-1"]));
    assert_eq!(body["platform"], "onnxruntime_onnx");
    assert_eq!(
        body["inputs"][0],
        json!({"name": "island", "datatype": "BYTES", "shape": [-1, 1]})
    );
    assert_eq!(
        body["inputs"][1],
        json!({"name": "bill_length_mm", "datatype": "FP32", "shape": [-1, 1]})
    );
    assert_eq!(body["inputs"].as_array().unwrap().len(), 7);
    assert_eq!(
        body["outputs"],
        json!([
            {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
        ])
    );
    let (status, versioned) = server
        .get("/v2/models/penguins_rf/versions/penguins_rf-fixture-1")
        .await;
    assert_eq!((status, &versioned), (200, &body));
}
