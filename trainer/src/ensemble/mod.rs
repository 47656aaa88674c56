//! `flywheel-trainer ensemble`: finished trials become one model. Greedy selection
//! ([`select`]) on the members' `predictions.json` picks the weights, [`compose`] writes the
//! members' pipelines into one ONNX graph, and the same kind of parity gate as a trial's runs
//! the members one by one and the composed graph in ONNX Runtime on the dataset's rows. The
//! output folder is laid out as a trial's, so runners and the prediction server treat the
//! ensemble like any trial's model.

pub mod compose;
pub mod select;

use std::path::{Path, PathBuf};
use std::time::Instant;

use flywheel_core::api::Metric;
use flywheel_core::ensemble::{
    EnsembleCard, EnsembleMember, MemberPredictions, PREDICTIONS_FILE, PREDICTIONS_VERSION,
};
use flywheel_core::model_card::{Lineage, MODEL_CARD_VERSION, ModelCard};
use flywheel_core::protocol::{Outcome, Timings, TrialResult};
use flywheel_core::search::space::Task;

use crate::cli::EnsembleArgs;
use crate::data;
use crate::error::{Result, TrainerError};
use crate::features;
use crate::metrics::{self, Probabilities};
use crate::model::Prediction;
use crate::parity::{self, OrtPrediction};
use crate::trial::{
    self, CARD_FILE, HOLDOUT_FILE, HoldoutDocument, MODEL_FILE, SCHEMA_FILE, Staging,
};
use compose::MemberGraph;
use select::Pool;

/// The composed graph must reproduce the weighted members this closely: probabilities
/// absolutely, values relative to `max(|value|, 1)` (only f32 summation order differs).
pub const ENSEMBLE_TOLERANCE: f64 = 1e-5;
/// Rows the parity gate runs on (all rows when fewer).
const PARITY_ROWS: usize = 2000;
const LATENCY_SAMPLES: usize = 200;

/// A finished trial read from its artifact folder.
struct Member {
    dir: PathBuf,
    trial: String,
    card: ModelCard,
    onnx: Vec<u8>,
    predictions: MemberPredictions,
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| {
        TrainerError::bad_input(format!(
            "failed to read {}: {e}; --members takes finished trials' artifact folders",
            path.display()
        ))
    })
}

impl Member {
    fn load(dir: &Path) -> Result<Member> {
        let card: ModelCard = serde_json::from_slice(&read(dir, CARD_FILE)?).map_err(|e| {
            TrainerError::bad_input(format!(
                "failed to parse {}/{CARD_FILE}: {e}",
                dir.display()
            ))
        })?;
        let trial = card
            .lineage
            .trial
            .clone()
            .unwrap_or_else(|| card.version.clone());
        let predictions: MemberPredictions = serde_json::from_slice(&read(dir, PREDICTIONS_FILE)?)
            .map_err(|e| {
                TrainerError::bad_input(format!(
                    "failed to parse the predictions of member {trial} ({}): {e}",
                    dir.display()
                ))
            })?;
        predictions.check().map_err(|e| {
            TrainerError::bad_input(format!(
                "the predictions of member {trial} are inconsistent: {e}"
            ))
        })?;
        if card.ensemble.is_some() {
            return Err(TrainerError::bad_input(format!(
                "member {trial} is itself an ensemble; ensembles are built from single models"
            )));
        }
        Ok(Member {
            dir: dir.to_path_buf(),
            onnx: read(dir, MODEL_FILE)?,
            trial,
            card,
            predictions,
        })
    }
}

/// Refuses members that could not be averaged: another task, target, class list or raw
/// inputs than the first member, or predictions on other rows. The error names the trial.
pub fn check_schema(first: &ModelCard, trial: &str, card: &ModelCard) -> Result<()> {
    let first_trial = first.lineage.trial.as_deref().unwrap_or(&first.version);
    let disagree = |what: &str, theirs: String, ours: String| {
        TrainerError::bad_input(format!(
            "member {trial} disagrees with member {first_trial} on the {what} ({theirs} vs \
             {ours}): ensemble members must come from one study's dataset and target"
        ))
    };
    if card.task != first.task {
        return Err(disagree(
            "task",
            card.task.as_str().into(),
            first.task.as_str().into(),
        ));
    }
    if card.target != first.target {
        return Err(disagree(
            "target",
            card.target.clone(),
            first.target.clone(),
        ));
    }
    if card.classes != first.classes {
        return Err(disagree(
            "classes",
            card.classes.join(","),
            first.classes.join(","),
        ));
    }
    let columns = |c: &ModelCard| -> Vec<String> {
        c.inputs
            .iter()
            .map(|i| format!("{}:{}:{}", i.name, i.input, i.kind.as_str()))
            .collect()
    };
    if columns(card) != columns(first) {
        return Err(disagree(
            "inputs",
            columns(card).join(","),
            columns(first).join(","),
        ));
    }
    if card.outputs != first.outputs {
        return Err(disagree(
            "outputs",
            format!("{:?}", card.outputs),
            format!("{:?}", first.outputs),
        ));
    }
    Ok(())
}

fn metric_of(args: &EnsembleArgs, task: Task) -> Result<Metric> {
    match args.metric.as_deref() {
        None if task == Task::Regression => Ok(Metric::R2),
        None => Ok(Metric::Accuracy),
        Some(name) => {
            let metric = Metric::ALL
                .into_iter()
                .find(|m| m.as_str() == name)
                .ok_or_else(|| TrainerError::bad_input(format!("unknown --metric {name:?}")))?;
            if metric.is_regression() != (task == Task::Regression) {
                return Err(TrainerError::bad_input(format!(
                    "--metric {name} does not apply to a {} task",
                    task.as_str()
                )));
            }
            Ok(metric)
        }
    }
}

/// The members' predictions side by side; every member must have predicted the same rows.
fn pool(members: &[Member]) -> Result<Pool> {
    let first = &members[0].predictions;
    for member in &members[1..] {
        let p = &member.predictions;
        if p.rows != first.rows || p.kind != first.kind || p.targets != first.targets {
            return Err(TrainerError::bad_input(format!(
                "member {} predicted other rows than member {} ({} {:?} rows vs {} {:?}): \
                 ensemble members must share the study's seed and evaluation settings",
                member.trial,
                members[0].trial,
                p.rows.len(),
                p.kind,
                first.rows.len(),
                first.kind
            )));
        }
    }
    Ok(Pool {
        members: members
            .iter()
            .map(|m| m.predictions.predictions.concat())
            .collect(),
        width: first.width(),
        classification: !first.classes.is_empty(),
        targets: first.targets.clone(),
    })
}

fn weights_of(
    args: &EnsembleArgs,
    members: &[Member],
    pool: &Pool,
    metric: Metric,
) -> Result<Vec<f64>> {
    if args.weights.is_empty() {
        if args.max_members == 0 || args.rounds == 0 {
            return Err(TrainerError::bad_input(
                "--max-members and --rounds must be at least 1",
            ));
        }
        return Ok(select::select(pool, metric, args.max_members, args.rounds).weights());
    }
    if args.weights.len() != members.len() {
        return Err(TrainerError::bad_input(format!(
            "--weights has {} values for {} members; give one per member",
            args.weights.len(),
            members.len()
        )));
    }
    if args.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(TrainerError::bad_input(
            "--weights must be finite and non-negative",
        ));
    }
    let total: f64 = args.weights.iter().sum();
    if total <= 0.0 {
        return Err(TrainerError::bad_input("--weights must not all be zero"));
    }
    Ok(args.weights.iter().map(|w| w / total).collect())
}

/// Builds the ensemble; the caller turns an error into a failed result.
pub fn run(args: &EnsembleArgs) -> Result<TrialResult> {
    let started = Instant::now();
    if args.threads == 0 {
        return Err(TrainerError::bad_input("--threads must be at least 1"));
    }
    let staging = Staging::new(&args.output)?;
    let members: Vec<Member> = args
        .members
        .iter()
        .map(|dir| Member::load(dir))
        .collect::<Result<_>>()?;
    let Some(first) = members.first().map(|m| &m.card) else {
        return Err(TrainerError::bad_input("--members names no trial"));
    };
    for member in &members[1..] {
        check_schema(first, &member.trial, &member.card)?;
    }
    let metric = metric_of(args, first.task)?;
    let pool = pool(&members)?;
    let weights = weights_of(args, &members, &pool, metric)?;
    // Scored with the weights exactly as the graph stores them (f32).
    let stored: Vec<f64> = weights.iter().map(|&w| f64::from(w as f32)).collect();
    let blended = pool.blend(&stored);
    let score = pool.score(metric, &blended);
    let singles: Vec<f64> = pool.members.iter().map(|m| pool.score(metric, m)).collect();
    let best_single = select::best(&singles, metric.direction());

    // Heaviest first (ties in --members order): the card names the heaviest member's family.
    let mut order: Vec<usize> = (0..members.len()).filter(|&i| weights[i] > 0.0).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
    let chosen: Vec<(&Member, f32)> = order
        .iter()
        .map(|&i| (&members[i], weights[i] as f32))
        .collect();
    eprintln!(
        "ensemble of {}: {}={score:.6} (best single {} {:.6})",
        chosen
            .iter()
            .map(|(m, w)| format!("{}×{w:.3}", m.trial))
            .collect::<Vec<_>>()
            .join(" + "),
        metric.as_str(),
        members[best_single].trial,
        singles[best_single]
    );

    let stage = Instant::now();
    let graphs: Vec<MemberGraph> = chosen
        .iter()
        .map(|(m, w)| MemberGraph {
            trial: &m.trial,
            card: &m.card,
            onnx: &m.onnx,
            weight: *w,
        })
        .collect();
    let doc = format!(
        "flywheel ensemble of {}",
        chosen
            .iter()
            .map(|(m, _)| m.trial.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bytes = compose::compose(&graphs, &doc)?;
    let lead = chosen[0].0;
    let checked = parity_gate(
        args,
        &lead.card,
        &chosen,
        &bytes,
        &members[0].predictions.rows,
    )?;
    let (rows, latency) = (checked.rows, checked.latency);
    let export_seconds = stage.elapsed().as_secs_f64();

    let all_metrics = if pool.classification {
        let truth: Vec<u32> = pool.targets.iter().map(|&t| t as u32).collect();
        metrics::classification(
            &truth,
            &Probabilities {
                classes: pool.width,
                values: blended.clone(),
            },
        )
    } else {
        metrics::regression(&pool.targets, &blended)
    };
    let model_bytes = bytes.len() as u64;
    let card = ModelCard {
        card_version: MODEL_CARD_VERSION,
        version: args.name.clone(),
        family: lead.card.family,
        params: lead.card.params.clone(),
        task: lead.card.task,
        target: lead.card.target.clone(),
        classes: lead.card.classes.clone(),
        inputs: lead.card.inputs.clone(),
        outputs: lead.card.outputs.clone(),
        metrics: all_metrics.clone(),
        latency: Some(latency),
        model_bytes: Some(model_bytes),
        lineage: Lineage {
            study: args.study.clone(),
            trial: Some(args.name.clone()),
            trainer_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: jiff::Timestamp::now().to_string(),
            ..lead.card.lineage.clone()
        },
        ensemble: Some(EnsembleCard {
            members: chosen
                .iter()
                .map(|(m, w)| EnsembleMember {
                    trial: m.trial.clone(),
                    family: m.card.family,
                    weight: f64::from(*w),
                })
                .collect(),
            metric: metric.as_str().to_string(),
            evaluated_on: members[0].predictions.kind,
            rows: pool.targets.len() as u64,
            score,
            best_single: members[best_single].trial.clone(),
            best_single_score: singles[best_single],
        }),
    };
    let own = MemberPredictions {
        version: PREDICTIONS_VERSION,
        trial: Some(args.name.clone()),
        predictions: blended.chunks(pool.width).map(<[f64]>::to_vec).collect(),
        ..members[0].predictions.clone()
    };
    staging.write(MODEL_FILE, &bytes)?;
    let mut published = vec![MODEL_FILE, PREDICTIONS_FILE, CARD_FILE];
    // The lead member's schema describes the ensemble's inputs as well.
    if let Ok(schema) = std::fs::read(lead.dir.join(SCHEMA_FILE)) {
        staging.write(SCHEMA_FILE, &schema)?;
        published.insert(1, SCHEMA_FILE);
    }
    staging.write(PREDICTIONS_FILE, &trial::json_compact(&own)?)?;
    staging.write(HOLDOUT_FILE, &trial::json(&checked.holdout)?)?;
    published.insert(published.len() - 1, HOLDOUT_FILE);
    staging.write(CARD_FILE, &trial::json(&card)?)?;
    staging.publish(&args.output, &published)?;
    eprintln!("parity: composed graph matches the weighted members on {rows} rows");

    Ok(TrialResult {
        outcome: Outcome::Succeeded,
        reason: None,
        message: None,
        metrics: all_metrics,
        holdout_metrics: std::collections::BTreeMap::new(),
        artifact_uri: Some(trial::artifact_uri(&args.output)),
        latency: Some(latency),
        model_bytes: Some(model_bytes),
        timings: Timings {
            export_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
            ..Timings::default()
        },
    })
}

/// What the parity gate checked.
struct Checked {
    rows: usize,
    latency: flywheel_core::api::Latency,
    /// The checked rows and the weighted members' predictions for them (`holdout.json`).
    holdout: HoldoutDocument,
}

/// Runs each member and the composed graph in ONNX Runtime on the selection rows (up to
/// [`PARITY_ROWS`] of them) and requires the graph to equal the weighted sum of the members
/// within [`ENSEMBLE_TOLERANCE`]; measures the graph's single-row latency.
fn parity_gate(
    args: &EnsembleArgs,
    card: &ModelCard,
    chosen: &[(&Member, f32)],
    bytes: &[u8],
    selection_rows: &[u64],
) -> Result<Checked> {
    let source = data::fetch(&args.dataset)?;
    let table = data::parse(&source, args.format.resolve(&source))?;
    let data = data::infer(table, &card.target, card.task)?;
    let names: Vec<String> = data.features.iter().map(|f| f.name.clone()).collect();
    let expected: Vec<String> = card.inputs.iter().map(|i| i.name.clone()).collect();
    if names != expected {
        return Err(TrainerError::bad_input(format!(
            "--dataset {} has the feature columns [{}] but the members take [{}]; pass the \
             dataset the members were trained on",
            args.dataset,
            names.join(", "),
            expected.join(", ")
        )));
    }
    // The selection rows as dataset rows (both ascend), so holdout.json covers the rows the
    // ensemble was scored on, as a trial's does.
    let wanted: std::collections::HashSet<u64> = selection_rows.iter().copied().collect();
    let selected: Vec<usize> = (0..data.rows)
        .filter(|&r| wanted.contains(&(data.source_rows[r] as u64)))
        .collect();
    if selected.is_empty() {
        return Err(TrainerError::bad_input(format!(
            "none of the members' prediction rows are in --dataset {}; pass the dataset the \
             members were trained on",
            args.dataset
        )));
    }
    let rows: Vec<usize> = features::sample_rows(selected.len(), PARITY_ROWS, 0)
        .into_iter()
        .map(|i| selected[i])
        .collect();
    let inputs: Vec<String> = card.inputs.iter().map(|i| i.input.clone()).collect();
    let classification = card.task != Task::Regression;
    let env = parity::environment()?;
    let mut expected: Vec<f64> = Vec::new();
    for (member, weight) in chosen {
        let mut session = parity::session(&env, &member.onnx, args.threads)?;
        let out = parity::run(
            &mut session,
            parity::inputs(&data.features, &inputs, &rows)?,
            classification,
        )?;
        let values = match out {
            OrtPrediction::Classes { probabilities, .. } => probabilities,
            OrtPrediction::Values(values) => values,
        };
        if expected.is_empty() {
            expected = vec![0.0; values.len()];
        }
        if values.len() != expected.len() {
            return Err(TrainerError::Parity(format!(
                "member {} returned {} outputs for {} rows",
                member.trial,
                values.len(),
                rows.len()
            )));
        }
        expected
            .iter_mut()
            .zip(&values)
            .for_each(|(e, v)| *e += f64::from(*weight) * f64::from(*v));
    }
    let mut session = parity::session(&env, bytes, args.threads)?;
    let composed = parity::run(
        &mut session,
        parity::inputs(&data.features, &inputs, &rows)?,
        classification,
    )?;
    compare(&expected, &composed, card.classes.len().max(1))?;
    let latency = parity::latency(
        &mut session,
        &data.features,
        &inputs,
        &rows,
        classification,
        LATENCY_SAMPLES,
    )?;
    let prediction = if classification {
        Prediction::Classes(Probabilities {
            classes: card.classes.len(),
            values: expected,
        })
    } else {
        Prediction::Values(expected)
    };
    Ok(Checked {
        rows: rows.len(),
        latency,
        holdout: trial::holdout_document(&data, &rows, &prediction),
    })
}

/// The composed graph's output against the weighted members' (`[rows, width]`).
fn compare(expected: &[f64], composed: &OrtPrediction, width: usize) -> Result<()> {
    let (values, labels) = match composed {
        OrtPrediction::Classes {
            labels,
            probabilities,
        } => (probabilities, Some(labels)),
        OrtPrediction::Values(values) => (values, None),
    };
    if values.len() != expected.len() {
        return Err(TrainerError::Parity(format!(
            "the composed graph returned {} outputs, the members {}",
            values.len(),
            expected.len()
        )));
    }
    for (i, (e, v)) in expected.iter().zip(values).enumerate() {
        let scale = if labels.is_some() {
            1.0
        } else {
            e.abs().max(1.0)
        };
        if (e - f64::from(*v)).abs() > ENSEMBLE_TOLERANCE * scale || v.is_nan() {
            return Err(TrainerError::Parity(format!(
                "row {} output {}: the weighted members give {e} but the composed graph {v}",
                i / width,
                i % width
            )));
        }
    }
    if let Some(labels) = labels {
        for (row, &label) in labels.iter().enumerate() {
            let mine = &expected[row * width..(row + 1) * width];
            let top = metrics::argmax(mine) as usize;
            let theirs = usize::try_from(label).unwrap_or(usize::MAX);
            let tie = theirs < width && (mine[top] - mine[theirs]).abs() <= ENSEMBLE_TOLERANCE;
            if theirs != top && !tie {
                return Err(TrainerError::Parity(format!(
                    "row {row}: the weighted members pick class {top} but the composed graph {label}"
                )));
            }
        }
    }
    Ok(())
}
