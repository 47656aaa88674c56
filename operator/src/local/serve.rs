//! Serving the winner: `flywheel-server` started on the promoted model, and ready-to-paste
//! requests built from a real row of the dataset.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flywheel_core::model_card::{ColumnKind, ModelCard};
use serde_json::{Map, Value};

use crate::Error;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `host:port` to listen on.
    pub listen: String,
    /// The server executable.
    pub server: PathBuf,
    /// The model name in URLs.
    pub model_name: String,
    /// Extra environment for the server (e.g. ORT_DYLIB_PATH).
    pub env: Vec<(String, String)>,
    /// The server's prediction log (`--log-dir`); none: no log.
    pub log_dir: Option<PathBuf>,
}

/// Starts the server on `model_dir` and returns once it reports ready.
pub fn serve(options: &ServeOptions, model_dir: &Path) -> Result<Child, Error> {
    let mut child = Command::new(&options.server)
        .arg(format!("--model-dir={}", model_dir.display()))
        .arg(format!("--model-name={}", options.model_name))
        .arg(format!("--listen={}", options.listen))
        .arg(format!("--parent-pid={}", std::process::id()))
        .args(
            options
                .log_dir
                .iter()
                .map(|dir| format!("--log-dir={}", dir.display())),
        )
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: options.server.clone(),
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Serve {
                message: format!("flywheel-server exited with {status} before it was ready"),
            });
        }
        if http_status(&options.listen, "/v2/health/ready") == Some(200) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(Error::Serve {
                message: format!(
                    "flywheel-server did not get ready on {} within 60 s",
                    options.listen
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST path` with a JSON body to the server on `listen`: the status code and the JSON answer.
pub fn post_json(listen: &str, path: &str, body: &Value) -> Result<(u16, Value), Error> {
    let address = listen.replace("0.0.0.0", "127.0.0.1");
    let failed = |e: std::io::Error| Error::Serve {
        message: format!("failed to POST {path} to flywheel-server on {address}: {e}"),
    };
    let mut stream = TcpStream::connect(&address).map_err(failed)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(failed)?;
    let payload = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .map_err(failed)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(failed)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, json) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::Serve {
            message: format!("flywheel-server answered POST {path} with no status line"),
        })?;
    Ok((status, serde_json::from_str(json).unwrap_or(Value::Null)))
}

/// The status code of `GET path`, or `None` when nothing answers.
fn http_status(listen: &str, path: &str) -> Option<u16> {
    let address = listen.replace("0.0.0.0", "127.0.0.1");
    let mut stream = TcpStream::connect(&address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 32];
    let read = stream.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..read]);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// One V1 instance built from the first data row of the CSV, typed as the model card says.
pub fn example_instance(card: &ModelCard, dataset: &Path) -> Option<Map<String, Value>> {
    let mut reader = csv::Reader::from_path(dataset).ok()?;
    let headers = reader.headers().ok()?.clone();
    let records: Vec<csv::StringRecord> = reader.records().take(200).flatten().collect();
    let missing = |record: &csv::StringRecord| {
        card.inputs.iter().any(|column| {
            headers
                .iter()
                .position(|h| h == column.name)
                .and_then(|i| record.get(i))
                .is_none_or(|raw| raw.is_empty() || raw.eq_ignore_ascii_case("na"))
        })
    };
    // A complete row makes the clearest example (and one V2 can carry without NaN).
    let record = records
        .iter()
        .find(|record| !missing(record))
        .or(records.first())?;
    let mut instance = Map::new();
    for column in &card.inputs {
        let raw = headers
            .iter()
            .position(|h| h == column.name)
            .and_then(|i| record.get(i))
            .unwrap_or("");
        let value = match column.kind {
            _ if raw.is_empty() || raw.eq_ignore_ascii_case("na") => Value::Null,
            ColumnKind::Numeric => raw
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
            ColumnKind::Boolean => Value::Bool(matches!(
                raw.to_ascii_lowercase().as_str(),
                "true" | "1" | "yes"
            )),
            ColumnKind::Categorical => Value::String(raw.to_string()),
        };
        instance.insert(column.name.clone(), value);
    }
    Some(instance)
}

/// curl commands for the KServe V1 and Open Inference V2 endpoints.
pub fn curl_examples(
    listen: &str,
    model: &str,
    card: &ModelCard,
    instance: &Map<String, Value>,
) -> String {
    let base = format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1"));
    let v1 = serde_json::json!({ "instances": [instance] });
    let inputs: Vec<Value> = card
        .inputs
        .iter()
        .map(|column| {
            let value = instance.get(&column.name).cloned().unwrap_or(Value::Null);
            let (datatype, data) = match column.kind {
                ColumnKind::Categorical => ("BYTES", value.as_str().map_or(Value::from(""), Value::from)),
                _ => (
                    "FP32",
                    match value {
                        Value::Bool(b) => Value::from(if b { 1.0 } else { 0.0 }),
                        Value::Number(n) => Value::Number(n),
                        _ => Value::from("NaN"),
                    },
                ),
            };
            serde_json::json!({"name": column.input, "shape": [1, 1], "datatype": datatype, "data": [data]})
        })
        .collect();
    let v2 = serde_json::json!({ "inputs": inputs });
    format!(
        "curl -s {base}/v1/models/{model}:predict -H 'Content-Type: application/json' \\\n  -d '{}'\n\n\
         curl -s {base}/v2/models/{model}/infer -H 'Content-Type: application/json' \\\n  -d '{}'\n",
        v1, v2
    )
}
