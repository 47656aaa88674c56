//! Labelled production rows: a served model's archived prediction log joined with the feedback
//! it received, appended to the training table of a retraining study (`--feedback`).
//!
//! The join and the time cut are core's (`flywheel_core::feedback`), the same the operator and
//! `flywheel retrain` use to decide that the study should exist, so the trainer learns from
//! exactly the rows the trigger counted. A row takes the parent table's columns by name: the
//! logged raw inputs, and the ground truth as the target.

use flywheel_core::api::FeedbackSource;
use flywheel_core::feedback::{self, Labelled, LogRecord};
use flywheel_core::k8s_openapi::jiff::Timestamp;
use flywheel_store::{BlockingStore, Location, StoreError};
use sha2::{Digest, Sha256};

use crate::data::RawTable;
use crate::error::{Result, TrainerError};

/// What `--feedback` added to the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    pub rows: u64,
    /// sha256 of the appended cells, hex: part of the dataset's identity.
    pub digest: String,
}

/// Parses the `--feedback` argument: a JSON list of sources, as in `spec.dataset.feedback`.
pub fn parse_sources(json: &str) -> Result<Vec<FeedbackSource>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).map_err(|e| {
        TrainerError::bad_input(format!(
            "failed to read --feedback: {e}; expected a JSON list like \
             [{{\"uri\":\"s3://bucket/logs/churn\",\"model\":\"churn\",\"until\":\"2026-11-30T10:00:00Z\"}}]"
        ))
    })
}

/// Reads every source's labelled rows and appends them to `table`; `None` when there are no
/// sources. A request logged by several sources (overlapping archives) is added once.
pub fn append(
    table: &mut RawTable,
    target: &str,
    sources: &[FeedbackSource],
) -> Result<Option<Appended>> {
    if sources.is_empty() {
        return Ok(None);
    }
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<Labelled> = Vec::new();
    for source in sources {
        for row in labelled_rows(source)? {
            if seen.insert(row.request_id.clone()) {
                rows.push(row);
            }
        }
    }
    let mut hasher = Sha256::new();
    for row in &rows {
        for (name, column) in table.names.iter().zip(table.columns.iter_mut()) {
            let cell = if name == target {
                Some(feedback::label_text(&row.actual))
            } else {
                match row.inputs.get(name) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(value) => Some(feedback::label_text(value)),
                }
            };
            // Unit and record separators cannot occur ambiguously in the digest input.
            hasher.update(cell.as_deref().unwrap_or("\u{1}").as_bytes());
            hasher.update(b"\x1f");
            column.push(cell);
        }
        hasher.update(b"\x1e");
    }
    table.rows += rows.len();
    Ok(Some(Appended {
        rows: rows.len() as u64,
        digest: crate::data::hex(&hasher.finalize()),
    }))
}

/// The labelled predictions of `source.model` in the archive, as of `source.until`.
fn labelled_rows(source: &FeedbackSource) -> Result<Vec<Labelled>> {
    let until = source
        .until
        .as_deref()
        .map(|text| {
            text.parse::<Timestamp>().map_err(|e| {
                TrainerError::bad_input(format!(
                    "failed to read --feedback: until {text:?} is not an RFC 3339 time ({e}); \
                     write e.g. 2026-11-30T10:00:00Z"
                ))
            })
        })
        .transpose()?;
    let records = read_archive(&source.uri)?;
    let rows = feedback::join(&feedback::logged_until(records, until), Some(&source.model));
    eprintln!(
        "feedback: {} labelled predictions of model {} in {}",
        rows.len(),
        source.model,
        source.uri
    );
    Ok(rows)
}

/// Every record of the log segments (`*.jsonl`) under `uri`, in name order: segment names sort
/// by server run, then by sequence. Torn lines are skipped, as when the server reads its log.
fn read_archive(uri: &str) -> Result<Vec<LogRecord>> {
    let bad_input = |e: StoreError| {
        TrainerError::bad_input(format!("failed to read the prediction log {uri}: {e}"))
    };
    let location = Location::parse(uri).map_err(bad_input)?;
    let store = BlockingStore::from_env().map_err(|e| {
        TrainerError::Internal(format!("failed to read the prediction log {uri}: {e}"))
    })?;
    let fail = |e: StoreError| match e {
        // The service or the disk failing may pass; a refused or malformed request will not.
        StoreError::S3 { .. } | StoreError::Io { .. } | StoreError::Runtime(_) => {
            TrainerError::Internal(format!("failed to read the prediction log {uri}: {e}"))
        }
        e => bad_input(e),
    };
    let segments = store.read_matching(&location, ".jsonl").map_err(fail)?;
    Ok(segments
        .iter()
        .flat_map(|bytes| feedback::parse_log(&String::from_utf8_lossy(bytes)).0)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn table() -> RawTable {
        RawTable {
            names: vec!["island".into(), "mass".into(), "species".into()],
            columns: vec![
                vec![Some("Biscoe".into())],
                vec![Some("4200".into())],
                vec![Some("Adelie".into())],
            ],
            rows: 1,
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flywheel-production-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run-b")).unwrap();
        std::fs::create_dir_all(dir.join("run-a")).unwrap();
        dir
    }

    const RUN_A: &str = r#"{"kind":"prediction","request_id":"a","time":"2026-11-30T10:00:00Z","model":"penguins","model_version":"v1","inputs":{"island":"Dream","mass":3800},"prediction":"Adelie"}
{"kind":"prediction","request_id":"b","time":"2026-11-30T10:00:01Z","model":"penguins","model_version":"v1","inputs":{"island":"Torgersen"},"prediction":"Adelie"}
{"kind":"prediction","request_id":"c","time":"2026-11-30T10:00:02Z","model":"other","model_version":"x","inputs":{"island":"Dream"},"prediction":"Gentoo"}
"#;
    const RUN_B: &str = r#"{"kind":"feedback","request_id":"a","time":"2026-11-30T10:01:00Z","model":"penguins","actual":"Chinstrap"}
{"kind":"feedback","request_id":"b","time":"2026-11-30T10:01:00Z","model":"penguins","actual":"Adelie"}
{"kind":"feedback","request_id":"c","time":"2026-11-30T10:01:00Z","model":"other","actual":"Gentoo"}
{"kind":"feedback","request_id":"b","time":"2026-11-30T11:00:00Z","model":"penguins","actual":"Gentoo"}
{"kind":"predic"#;

    #[test]
    fn labelled_rows_are_appended_by_column_name_as_of_the_cut() {
        let dir = temp_dir("append");
        std::fs::write(dir.join("run-a/segment-00000001.jsonl"), RUN_A).unwrap();
        std::fs::write(dir.join("run-b/segment-00000001.jsonl"), RUN_B).unwrap();
        std::fs::write(dir.join("run-b/notes.txt"), "not a segment").unwrap();
        let source = FeedbackSource {
            uri: format!("file://{}", dir.display()),
            model: "penguins".into(),
            until: Some("2026-11-30T10:30:00Z".into()),
        };
        let mut t = table();
        // The same archive twice (as a child study that inherits its parent's sources may
        // list it): each request once.
        let appended = append(&mut t, "species", &[source.clone(), source.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(appended.rows, 2);
        assert_eq!(t.rows, 3);
        assert_eq!(
            t.columns[0],
            vec![
                Some("Biscoe".into()),
                Some("Dream".into()),
                Some("Torgersen".into())
            ]
        );
        assert_eq!(
            t.columns[1],
            vec![Some("4200".into()), Some("3800".into()), None]
        );
        // b's relabel came after the cut: the label logged by then is the one learnt.
        assert_eq!(
            t.columns[2],
            vec![
                Some("Adelie".into()),
                Some("Chinstrap".into()),
                Some("Adelie".into())
            ]
        );

        let mut later = table();
        let uncut = FeedbackSource {
            until: None,
            ..source.clone()
        };
        let relabelled = append(&mut later, "species", &[uncut]).unwrap().unwrap();
        assert_eq!(later.columns[2][2], Some("Gentoo".into()));
        assert_ne!(
            relabelled.digest, appended.digest,
            "other rows, other digest"
        );
        let mut again = table();
        assert_eq!(
            append(&mut again, "species", &[source]).unwrap().unwrap(),
            appended
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_sources_are_bad_input() {
        assert!(append(&mut table(), "species", &[]).unwrap().is_none());
        let error = parse_sources("{\"uri\": 1}").unwrap_err();
        assert!(matches!(error, TrainerError::BadInput(_)), "{error}");
        assert!(error.to_string().contains("--feedback"), "{error}");
        let source = FeedbackSource {
            uri: "file:///nonexistent".into(),
            model: "m".into(),
            until: Some("soon".into()),
        };
        let error = append(&mut table(), "species", &[source]).unwrap_err();
        assert!(matches!(error, TrainerError::BadInput(_)), "{error}");
        assert!(error.to_string().contains("RFC 3339"), "{error}");
        let error = parse_sources("[{\"uri\":\"ftp://x/logs\",\"model\":\"m\"}]")
            .and_then(|sources| append(&mut table(), "species", &sources))
            .unwrap_err();
        assert!(matches!(error, TrainerError::BadInput(_)), "{error}");
    }
}
