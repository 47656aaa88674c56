//! The closed loop on one machine: `flywheel retrain` turns the prediction log of a served model
//! into a retraining study when its policy says so, `flywheel gate` decides whether the
//! retrained model (served as the shadow) beats the serving one, and `flywheel lineage` follows
//! a model back through trials, data and parent studies — and a study forward to its children.
//!
//! The rules are core's (`flywheel_core::{retraining, gate, feedback}`), shared with the
//! operator; this module only reads and writes the files they apply to.

use std::path::{Path, PathBuf};

use flywheel_core::api::{RetrainingPolicy, Study};
use flywheel_core::feedback::{self, Labelled, LogRecord};
use flywheel_core::gate::{self, GateDecision, GateSettings};
use flywheel_core::k8s_openapi::jiff::Timestamp;
use flywheel_core::model_card::ModelCard;
use flywheel_core::retraining::{self, Retraining, ServingState, Trigger};
use flywheel_core::search::space::Task;

use super::store::{StudyDir, write_atomic};
use crate::Error;

/// Every record of the prediction log in `dir`, oldest segment first.
pub fn read_log(dir: &Path) -> Result<Vec<LogRecord>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    let mut records = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        records.extend(feedback::parse_log(&text).0);
    }
    Ok(records)
}

/// A finished local study and the model it promoted.
pub struct ServedStudy {
    pub name: String,
    pub study: Study,
    pub model_dir: PathBuf,
    pub card: ModelCard,
}

/// Reads a study directory written by `flywheel run` and its winner's model card.
pub fn served_study(dir: &Path) -> Result<ServedStudy, Error> {
    let study = StudyDir::read_only(dir)
        .load_study()?
        .ok_or_else(|| Error::Local {
            action: "read the study",
            message: format!(
                "{} holds no study.json; pass the directory `flywheel run` wrote",
                dir.display()
            ),
        })?;
    let name = study.metadata.name.clone().unwrap_or_default();
    let best = study
        .status
        .as_ref()
        .and_then(|s| s.best_trial.clone())
        .ok_or_else(|| Error::Local {
            action: "find the served model",
            message: format!("study {name} has no winner yet; run it to the end first"),
        })?;
    let uri = best.artifact_uri.unwrap_or_default();
    let model_dir = PathBuf::from(uri.strip_prefix("file://").unwrap_or(&uri));
    let card = read_card(&model_dir)?;
    Ok(ServedStudy {
        name,
        study,
        model_dir,
        card,
    })
}

pub fn read_card(model_dir: &Path) -> Result<ModelCard, Error> {
    let path = model_dir.join("model.json");
    let bytes = std::fs::read(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path,
        message: e.to_string(),
    })
}

fn is_regression(card: &ModelCard) -> bool {
    card.task == Task::Regression
}

/// What `flywheel retrain` found.
pub enum RetrainDecision {
    /// No trigger fired; the state says how far each one is.
    Hold(ServingState),
    /// A trigger fired: the child study, its manifest and its dataset were written.
    Retrain {
        trigger: Trigger,
        child: Box<Study>,
        manifest: PathBuf,
        dataset: PathBuf,
    },
}

/// Evaluates `policy` on the log of the model `parent` serves under `model_name`; when a
/// trigger fires, writes the child's dataset (the parent's rows plus the labelled production
/// rows) and manifest beside the parent's study directory.
pub fn plan_retraining(
    parent_dir: &Path,
    parent: &ServedStudy,
    records: &[LogRecord],
    model_name: &str,
    policy: &RetrainingPolicy,
    now: Timestamp,
) -> Result<RetrainDecision, Error> {
    let regression = is_regression(&parent.card);
    let rows: Vec<Labelled> = feedback::join(records, Some(model_name))
        .into_iter()
        .filter(|row| row.model_version == parent.card.version)
        .collect();
    let model_age_seconds = parent
        .card
        .lineage
        .created_at
        .parse::<Timestamp>()
        .ok()
        .map(|created| now.duration_since(created).as_secs().max(0) as u64);
    let state = ServingState {
        online: feedback::online_metric(&rows, regression),
        new_labels: rows.len() as u64,
        training_metrics: parent.card.metrics.clone(),
        model_age_seconds,
    };
    let Some(trigger) = retraining::evaluate(policy, &state) else {
        return Ok(RetrainDecision::Hold(state));
    };

    let slices = feedback::error_slices(
        &rows,
        &parent.card.categorical_inputs(),
        regression,
        feedback::SLICE_MIN_SAMPLES,
        feedback::SLICE_LIMIT,
    );
    let root = parent_dir.parent().unwrap_or(Path::new("."));
    let generation = retraining::next_generation(&parent.study.spec);
    let child_name = retraining::child_name(&parent.name, generation);
    let dataset = root.join(format!("{child_name}.csv"));
    let parent_dataset = PathBuf::from(
        parent
            .card
            .lineage
            .dataset_uri
            .strip_prefix("file://")
            .unwrap_or(&parent.card.lineage.dataset_uri),
    );
    let added = write_child_dataset(&parent_dataset, &parent.card.target, &rows, &dataset)?;
    let dataset_uri = std::fs::canonicalize(&dataset)
        .unwrap_or_else(|_| dataset.clone())
        .display()
        .to_string();
    let child = retraining::child_study(
        &parent.name,
        &parent.study.spec,
        policy,
        Retraining {
            trigger: trigger.clone(),
            dataset_uri,
            production_rows: added,
            error_slices: slices,
        },
    );
    let manifest = root.join(format!("{child_name}.yaml"));
    let yaml = serde_saphyr::to_string(&child).map_err(|e| Error::Serialize {
        what: "child study",
        message: e.to_string(),
    })?;
    write_atomic(&manifest, yaml.as_bytes())?;
    Ok(RetrainDecision::Retrain {
        trigger,
        child: Box::new(child),
        manifest,
        dataset,
    })
}

/// Writes the parent's table plus one row per labelled prediction (its inputs, and the ground
/// truth as the target), in the parent's column order; returns the rows added. Each request
/// appears once (the join de-duplicates by request id); a column the request lacked is left
/// empty, which the trainer reads as missing.
fn write_child_dataset(
    parent: &Path,
    target: &str,
    rows: &[Labelled],
    output: &Path,
) -> Result<u64, Error> {
    let read_error = |e: csv::Error| Error::Corrupt {
        path: parent.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = csv::Reader::from_path(parent).map_err(read_error)?;
    let header = reader.headers().map_err(read_error)?.clone();
    let mut writer = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| Error::Serialize {
        what: "child dataset",
        message: e.to_string(),
    };
    writer.write_record(&header).map_err(write_error)?;
    for record in reader.records() {
        writer
            .write_record(&record.map_err(read_error)?)
            .map_err(write_error)?;
    }
    let mut added = 0;
    for row in rows {
        let fields: Vec<String> = header
            .iter()
            .map(|column| {
                if column == target {
                    feedback::label_text(&row.actual)
                } else {
                    match row.inputs.get(column) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(value) => feedback::label_text(value),
                    }
                }
            })
            .collect();
        writer.write_record(&fields).map_err(write_error)?;
        added += 1;
    }
    let bytes = writer.into_inner().map_err(|e| Error::Serialize {
        what: "child dataset",
        message: e.to_string(),
    })?;
    write_atomic(output, &bytes)?;
    Ok(added)
}

/// The shadow gate over the log: the serving model's and the candidate's predictions of the
/// same labelled requests.
pub fn gate_decision(
    records: &[LogRecord],
    model_name: &str,
    serving: &ModelCard,
    candidate_version: &str,
    settings: &GateSettings,
) -> GateDecision {
    let rows: Vec<Labelled> = feedback::join(records, Some(model_name))
        .into_iter()
        .filter(|row| row.model_version == serving.version)
        .collect();
    let outcomes = feedback::paired_outcomes(&rows, is_regression(serving), candidate_version);
    // The seed ties the bootstrap to the pair of versions: the same log gives the same verdict.
    let seed = flywheel_core::study::name_seed(&format!("{}/{candidate_version}", serving.version));
    gate::decide(&outcomes, settings, seed)
}

/// One step of a model's ancestry.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LineageStep {
    pub study: String,
    pub generation: u32,
    pub version: String,
    pub trial: Option<String>,
    pub family: String,
    pub params: serde_json::Value,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub dataset_uri: String,
    pub dataset_digest: String,
    pub dataset_rows: u64,
    /// Why this study was started, for a retraining study.
    pub trigger: Option<String>,
    pub trigger_message: Option<String>,
    pub error_slices: Vec<feedback::ErrorSlice>,
}

/// The model of the study in `dir` and each ancestor's, nearest first; parents are looked up
/// as sibling directories (where `flywheel retrain` runs them).
pub fn ancestry(dir: &Path) -> Result<Vec<LineageStep>, Error> {
    let root = dir.parent().unwrap_or(Path::new("."));
    let mut steps = Vec::new();
    let mut current = dir.to_path_buf();
    // A cycle is impossible with generated names, but a hand-edited origin should not hang.
    for _ in 0..64 {
        let served = served_study(&current)?;
        let origin = served.study.spec.origin.clone();
        let card = &served.card;
        steps.push(LineageStep {
            study: served.name.clone(),
            generation: origin.as_ref().map_or(0, |o| o.generation),
            version: card.version.clone(),
            trial: card.lineage.trial.clone(),
            family: card.family.to_string(),
            params: serde_json::to_value(&card.params).unwrap_or_default(),
            metrics: card.metrics.clone(),
            dataset_uri: card.lineage.dataset_uri.clone(),
            dataset_digest: card.lineage.dataset_digest.clone(),
            dataset_rows: card.lineage.dataset_rows,
            trigger: origin.as_ref().map(|o| o.trigger.clone()),
            trigger_message: origin.as_ref().map(|o| o.message.clone()),
            error_slices: origin
                .as_ref()
                .map(|o| o.error_slices.clone())
                .unwrap_or_default(),
        });
        match origin {
            Some(origin) => current = root.join(&origin.parent_study),
            None => break,
        }
    }
    Ok(steps)
}

/// Studies started from the study named `study` (sibling directories whose origin names it).
pub fn descendants(root: &Path, study: &str) -> Vec<(String, Option<String>)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut children: Vec<(String, Option<String>)> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let child = StudyDir::read_only(&path).load_study().ok().flatten()?;
            let origin = child.spec.origin.as_ref()?;
            if origin.parent_study != study {
                return None;
            }
            let version = child
                .status
                .as_ref()?
                .best_trial
                .as_ref()
                .map(|b| b.name.clone());
            Some((child.metadata.name.clone().unwrap_or_default(), version))
        })
        .collect();
    children.sort();
    children
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn child_datasets_append_labelled_rows_in_the_parents_column_order() {
        let dir = std::env::temp_dir().join(format!("flywheel-child-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let parent = dir.join("parent.csv");
        std::fs::write(&parent, "island,mass,species\nBiscoe,4200,Gentoo\n").unwrap();
        let row = Labelled {
            request_id: "r1".into(),
            time: String::new(),
            model_version: "v1".into(),
            inputs: serde_json::json!({"mass": 3800.5, "island": "Dream"})
                .as_object()
                .unwrap()
                .clone(),
            prediction: "Adelie".into(),
            actual: "Chinstrap".into(),
            shadow: None,
        };
        let mut missing = row.clone();
        missing.inputs.remove("mass");
        let output = dir.join("child.csv");
        let added = write_child_dataset(&parent, "species", &[row, missing], &output).unwrap();
        assert_eq!(added, 2);
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            "island,mass,species\nBiscoe,4200,Gentoo\nDream,3800.5,Chinstrap\nDream,,Chinstrap\n"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
