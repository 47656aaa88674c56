//! Every malformed request gets a 4xx with `{"error", "field"}`, never a 5xx.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

const V1: &str = "/v1/models/iris_logistic:predict";
const V2: &str = "/v2/models/iris_logistic/infer";

fn row() -> Value {
    json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
}

fn tensor(name: &str, datatype: &str, shape: Value, data: Value) -> Value {
    json!({"name": name, "datatype": datatype, "shape": shape, "data": data})
}

fn v2_request() -> Value {
    json!({"inputs": [
        tensor("sepal_length", "FP32", json!([1, 1]), json!([5.1])),
        tensor("sepal_width", "FP32", json!([1, 1]), json!([3.5])),
        tensor("petal_length", "FP32", json!([1, 1]), json!([1.4])),
        tensor("petal_width", "FP32", json!([1, 1]), json!([0.2])),
    ]})
}

/// Asserts the status, that the error names `field`, and that the message mentions `needle`.
#[track_caller]
fn assert_error(response: (u16, Value), status: u16, field: &str, needle: &str) {
    let (got, body) = response;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["field"], field, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn invalid_json() {
    let server = TestServer::fixture("iris_logistic").await;
    let response = server
        .post_raw(V1, "application/json", "{\"instances\": [")
        .await;
    assert_error(response, 400, "body", "invalid JSON");
    let response = server.post_raw(V2, "application/json", "not json").await;
    assert_error(response, 400, "body", "invalid JSON");
}

#[tokio::test]
async fn nan_and_infinity_are_not_json() {
    let server = TestServer::fixture("iris_logistic").await;
    for literal in ["NaN", "Infinity", "-Infinity", "1e999"] {
        let body = format!(
            "{{\"instances\": [{{\"sepal_length\": {literal}, \"sepal_width\": 1, \"petal_length\": 1, \"petal_width\": 1}}]}}"
        );
        let response = server.post_raw(V1, "application/json", body).await;
        assert_error(response, 400, "body", "invalid JSON");
    }
}

#[tokio::test]
async fn float32_overflow() {
    let server = TestServer::fixture("iris_logistic").await;
    let mut instance = row();
    instance["petal_width"] = json!(1e300);
    let response = server.post(V1, &json!({"instances": [instance]})).await;
    assert_error(response, 400, "instances[0].petal_width", "float32 range");
}

#[tokio::test]
async fn wrong_content_type() {
    let server = TestServer::fixture("iris_logistic").await;
    let body = json!({"instances": [row()]}).to_string();
    let response = server.post_raw(V1, "text/plain", body.clone()).await;
    assert_error(response, 415, "content-type", "application/json");
    let response = server
        .post_raw(V2, "application/x-www-form-urlencoded", body)
        .await;
    assert_error(response, 415, "content-type", "application/json");
}

#[tokio::test]
async fn unknown_model_or_version() {
    let server = TestServer::fixture("iris_logistic").await;
    let request = json!({"instances": [row()]});
    assert_error(
        server.post("/v1/models/nope:predict", &request).await,
        404,
        "model_name",
        "unknown model 'nope'",
    );
    assert_error(
        server.get("/v1/models/nope").await,
        404,
        "model_name",
        "iris_logistic",
    );
    assert_error(
        server.post("/v2/models/nope/infer", &v2_request()).await,
        404,
        "model_name",
        "unknown model",
    );
    assert_error(
        server
            .post("/v2/models/iris_logistic/versions/v9/infer", &v2_request())
            .await,
        404,
        "model_version",
        "unknown version 'v9'",
    );
    assert_error(
        server.get("/v2/models/iris_logistic/versions/v9").await,
        404,
        "model_version",
        "v9",
    );
    let (status, body) = server
        .post("/v1/models/iris_logistic:explain", &request)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/no/such/route").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn missing_column() {
    let server = TestServer::fixture("iris_logistic").await;
    let mut instance = row();
    instance.as_object_mut().unwrap().remove("sepal_width");
    let response = server
        .post(V1, &json!({"instances": [row(), instance]}))
        .await;
    assert_error(
        response,
        400,
        "instances[1].sepal_width",
        "missing column 'sepal_width'",
    );

    let mut request = v2_request();
    request["inputs"].as_array_mut().unwrap().remove(1);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs",
        "missing input 'sepal_width'",
    );
}

#[tokio::test]
async fn extra_column() {
    let server = TestServer::fixture("iris_logistic").await;
    let mut instance = row();
    instance["colour"] = json!("blue");
    let response = server.post(V1, &json!({"instances": [instance]})).await;
    assert_error(
        response,
        400,
        "instances[0].colour",
        "unknown column 'colour'",
    );

    let mut request = v2_request();
    request["inputs"].as_array_mut().unwrap().push(tensor(
        "colour",
        "BYTES",
        json!([1]),
        json!(["blue"]),
    ));
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[4].name",
        "unknown input 'colour'",
    );

    let response = server
        .post(V1, &json!({"instances": [[5.1, 3.5, 1.4, 0.2, 9.9]]}))
        .await;
    assert_error(response, 400, "instances[0]", "expected 4 values");
}

#[tokio::test]
async fn string_for_a_numeric_column() {
    let server = TestServer::fixture("iris_logistic").await;
    let mut instance = row();
    instance["sepal_length"] = json!("5.1");
    let response = server.post(V1, &json!({"instances": [instance]})).await;
    assert_error(
        response,
        400,
        "instances[0].sepal_length",
        "expected a number, got a string",
    );

    let mut request = v2_request();
    request["inputs"][0]["data"] = json!(["5.1"]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[0].data[0]",
        "FP32 data must be numbers",
    );
}

#[tokio::test]
async fn categorical_and_null_rules() {
    let server = TestServer::fixture("penguins_rf").await;
    let good = json!({"island": "Biscoe", "bill_length_mm": 45.0, "bill_depth_mm": 15.0,
        "flipper_length_mm": 210.0, "body_mass_g": 4500.0, "sex": null, "year": 2008});
    let path = "/v1/models/penguins_rf:predict";
    assert_eq!(
        server
            .post(path, &json!({"instances": [good.clone()]}))
            .await
            .0,
        200
    );

    let mut number_for_category = good.clone();
    number_for_category["island"] = json!(3);
    let response = server
        .post(path, &json!({"instances": [number_for_category]}))
        .await;
    assert_error(response, 400, "instances[0].island", "expected a string");

    // island and year never had missing values in training: the card marks them not nullable.
    let mut null_island = good.clone();
    null_island["island"] = Value::Null;
    let response = server
        .post(path, &json!({"instances": [null_island]}))
        .await;
    assert_error(
        response,
        400,
        "instances[0].island",
        "does not accept missing values",
    );

    let request = json!({"inputs": [tensor("island", "FP32", json!([1]), json!([1.0]))]});
    let response = server.post("/v2/models/penguins_rf/infer", &request).await;
    assert_error(
        response,
        400,
        "inputs[0].datatype",
        "expected datatype BYTES",
    );
}

#[tokio::test]
async fn v2_shape_and_datatype_mismatches() {
    let server = TestServer::fixture("iris_logistic").await;

    let mut request = v2_request();
    request["inputs"][0]["shape"] = json!([2, 1]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[0].data",
        "holds 2 elements, but data has 1",
    );

    let mut request = v2_request();
    request["inputs"][0]["shape"] = json!([1, 2]);
    request["inputs"][0]["data"] = json!([1.0, 2.0]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[0].shape",
        "shape [N] or [N, 1]",
    );

    let mut request = v2_request();
    request["inputs"][1]["shape"] = json!([2]);
    request["inputs"][1]["data"] = json!([3.5, 3.6]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[1].shape",
        "same number of rows",
    );

    let mut request = v2_request();
    request["inputs"][0]["shape"] = json!([-1]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[0].shape",
        "non-negative integers",
    );

    let mut request = v2_request();
    request["inputs"][2]["datatype"] = json!("BYTES");
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[2].datatype",
        "expected datatype FP32",
    );

    let mut request = v2_request();
    request["inputs"][2]["datatype"] = json!("FP128");
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[2].datatype",
        "unknown datatype",
    );

    let mut request = v2_request();
    request["inputs"][3]["datatype"] = json!("INT64");
    request["inputs"][3]["data"] = json!([0.2]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[3].data[0]",
        "INT64 data must be integers",
    );

    let mut request = v2_request();
    request["inputs"].as_array_mut().unwrap().push(tensor(
        "sepal_length",
        "FP32",
        json!([1]),
        json!([1.0]),
    ));
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[4].name",
        "given twice",
    );

    let mut request = v2_request();
    request["outputs"] = json!([{"name": "logits"}]);
    assert_error(
        server.post(V2, &request).await,
        400,
        "outputs[0].name",
        "unknown output",
    );
}

#[tokio::test]
async fn empty_instances() {
    let server = TestServer::fixture("iris_logistic").await;
    assert_error(
        server.post(V1, &json!({"instances": []})).await,
        400,
        "instances",
        "must not be empty",
    );
    assert_error(
        server.post(V1, &json!({})).await,
        400,
        "instances",
        "missing field 'instances'",
    );
    assert_error(
        server.post(V1, &json!({"instances": {}})).await,
        400,
        "instances",
        "expected an array",
    );
    assert_error(
        server.post(V1, &json!({"instances": [7]})).await,
        400,
        "instances[0]",
        "expected an object",
    );
    assert_error(
        server
            .post(V1, &json!({"instances": [row()], "x": 1}))
            .await,
        400,
        "x",
        "unknown field",
    );
    assert_error(
        server.post(V2, &json!({"inputs": []})).await,
        400,
        "inputs",
        "must not be empty",
    );
    let mut request = v2_request();
    for input in request["inputs"].as_array_mut().unwrap() {
        input["shape"] = json!([0]);
        input["data"] = json!([]);
    }
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[0].shape",
        "rows must not be empty",
    );
}

#[tokio::test]
async fn oversized_body() {
    let mut config = common::config("iris_logistic");
    config.max_body_bytes = 1024;
    let server = TestServer::start(config).await;
    let request = json!({"instances": vec![row(); 100]});
    assert_error(
        server.post(V1, &request).await,
        413,
        "body",
        "larger than 1024 bytes",
    );
    assert_error(
        server.post(V2, &request).await,
        413,
        "body",
        "larger than 1024 bytes",
    );
}

#[tokio::test]
async fn too_many_instances() {
    let mut config = common::config("iris_logistic");
    config.max_instances = 3;
    let server = TestServer::start(config).await;
    assert_eq!(
        server
            .post(V1, &json!({"instances": vec![row(); 3]}))
            .await
            .0,
        200
    );
    let response = server.post(V1, &json!({"instances": vec![row(); 4]})).await;
    assert_error(response, 400, "instances", "at most 3 instances");

    let mut request = v2_request();
    for input in request["inputs"].as_array_mut().unwrap() {
        input["shape"] = json!([4]);
        input["data"] = json!([1.0, 1.0, 1.0, 1.0]);
    }
    assert_error(
        server.post(V2, &request).await,
        400,
        "inputs[0].shape",
        "at most 3 rows",
    );
}

#[tokio::test]
async fn bearer_token() {
    let mut config = common::config("iris_logistic");
    config.auth_token = Some("s3cret".into());
    let server = TestServer::start(config).await;
    let request = json!({"instances": [row()]});
    let response = server.post(V1, &request).await;
    assert_error(response, 401, "authorization", "missing bearer token");
    let response = common::read(
        server
            .client
            .post(server.url(V1))
            .bearer_auth("wrong")
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(response, 401, "authorization", "invalid bearer token");
    let response = server
        .client
        .post(server.url(V1))
        .bearer_auth("s3cret")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server
        .client
        .post(server.url(V2))
        .bearer_auth("s3cret")
        .json(&v2_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_error(
        server.post(V2, &v2_request()).await,
        401,
        "authorization",
        "missing bearer token",
    );
    // Metadata and health stay open for probes.
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
    assert_eq!(server.get("/v1/models/iris_logistic").await.0, 200);
}

const BOOLEAN_V1: &str = "/v1/models/diabetes_boolean:predict";
const BOOLEAN_V2: &str = "/v2/models/diabetes_boolean/infer";

/// The diabetes_boolean fixture's inputs in card order, with `sex` (its boolean column) set to
/// `sex` and the other columns from the first expected row.
fn boolean_row(sex: &Value) -> Vec<(String, Value)> {
    let expected = common::expected("diabetes_boolean");
    let row = expected["instances"][0].as_object().unwrap().clone();
    let card = std::fs::read_to_string(common::fixture("diabetes_boolean").join("model.json"));
    let card: Value = serde_json::from_str(&card.unwrap()).unwrap();
    card["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            let name = input["name"].as_str().unwrap().to_string();
            let value = if name == "sex" {
                sex.clone()
            } else {
                row[&name].clone()
            };
            (name, value)
        })
        .collect()
}

/// The three request shapes a boolean cell can arrive in, each with the field an error names:
/// a V1 object, a V1 array, and a V2 tensor of `datatype`.
fn boolean_requests(sex: &Value, datatype: &str) -> Vec<(&'static str, Value, &'static str)> {
    let row = boolean_row(sex);
    let object: serde_json::Map<String, Value> = row.iter().cloned().collect();
    let array: Vec<Value> = row.iter().map(|(_, v)| v.clone()).collect();
    let sex_index = row.iter().position(|(name, _)| name == "sex").unwrap();
    let tensors: Vec<Value> = row
        .iter()
        .map(|(name, value)| {
            let datatype = if name == "sex" { datatype } else { "FP32" };
            tensor(name, datatype, json!([1]), json!([value]))
        })
        .collect();
    let array_field: &'static str = match sex_index {
        1 => "instances[0][1]",
        other => panic!("sex is input {other} in the fixture, expected 1"),
    };
    let tensor_field: &'static str = "inputs[1].data[0]";
    vec![
        (
            BOOLEAN_V1,
            json!({"instances": [object]}),
            "instances[0].sex",
        ),
        (BOOLEAN_V1, json!({"instances": [array]}), array_field),
        (BOOLEAN_V2, json!({"inputs": tensors}), tensor_field),
    ]
}

fn prediction(path: &str, body: &Value) -> f64 {
    if path.starts_with("/v1") {
        body["predictions"][0].as_f64().unwrap()
    } else {
        body["outputs"][0]["data"][0].as_f64().unwrap()
    }
}

/// Every spelling of the table (docs/server.md, "Booleans") gives the same prediction on V1
/// objects, V1 arrays and V2 tensors of every datatype; true and false differ; null is the
/// imputed value on every route.
#[tokio::test]
async fn boolean_spellings_are_one_table_on_every_route() {
    let server = TestServer::fixture("diabetes_boolean").await;
    let trues = [
        json!(true),
        json!(1),
        json!(1.0),
        json!("1"),
        json!("1.0"),
        json!("true"),
        json!("True"),
        json!("YES"),
    ];
    let falses = [
        json!(false),
        json!(0),
        json!(0.0),
        json!("0"),
        json!("0.0"),
        json!("false"),
        json!("FALSE"),
        json!("no"),
    ];
    let mut outcomes = Vec::new();
    for spellings in [&trues[..], &falses[..], &[Value::Null][..]] {
        let mut seen: Option<f64> = None;
        for sex in spellings {
            for datatype in ["BOOL", "FP32", "FP64", "INT32", "INT64", "BYTES"] {
                for (path, body, _) in boolean_requests(sex, datatype) {
                    let (status, response) = server.post(path, &body).await;
                    assert_eq!(status, 200, "{sex} as {datatype} on {path}: {response}");
                    let got = prediction(path, &response);
                    match seen {
                        None => seen = Some(got),
                        Some(want) => assert_eq!(
                            got, want,
                            "{sex} as {datatype} on {path} predicts differently"
                        ),
                    }
                }
            }
        }
        outcomes.push(seen.unwrap());
    }
    let [yes, no, null] = outcomes[..] else {
        unreachable!()
    };
    assert_ne!(yes, no, "the boolean column must change the prediction");
    assert!(
        null == yes || null == no,
        "null imputes one of the two values"
    );

    // The fixture's own rows (sex as true/false) reproduce scikit-learn's predictions.
    let expected = common::expected("diabetes_boolean");
    let (status, response) = server
        .post(
            BOOLEAN_V1,
            &json!({"instances": expected["instances"].clone()}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    for (got, want) in response["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["predictions"].as_array().unwrap())
    {
        common::assert_close(
            got.as_f64().unwrap(),
            want.as_f64().unwrap(),
            1e-3,
            "diabetes_boolean",
        );
    }
}

/// Anything outside the table is the same 400 on every route: the field, the column and the
/// accepted spellings.
#[tokio::test]
async fn a_bad_boolean_spelling_is_the_same_clear_400_everywhere() {
    let server = TestServer::fixture("diabetes_boolean").await;
    for sex in [
        json!(2),
        json!(0.5),
        json!(-1),
        json!("2"),
        json!("maybe"),
        json!(""),
        json!("t"),
        json!({"value": true}),
    ] {
        for datatype in ["BOOL", "FP32", "BYTES"] {
            for (path, body, field) in boolean_requests(&sex, datatype) {
                let response = server.post(path, &body).await;
                let message = response.1["error"].as_str().unwrap_or_default().to_string();
                assert_error(
                    response,
                    400,
                    field,
                    "column 'sex' is boolean: expected true or false, the numbers 1 or 0",
                );
                for spelling in ["\"yes\"", "\"1\"", "1.0", "or null, got"] {
                    assert!(message.contains(spelling), "{message:?} lacks {spelling}");
                }
            }
        }
    }
}
