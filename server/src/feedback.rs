//! Joins feedback (the actual outcome) with recent predictions, and keeps online metrics per
//! model version over the last `--stats-window` labelled predictions.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::metrics::{FeedbackLabels, Metrics, ModelLabels};

/// What the model said for one row.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicted {
    /// Index into the card's classes.
    Class(usize),
    Value(f64),
}

/// The true outcome, validated against the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Actual {
    Class(usize),
    Value(f64),
}

/// How one piece of feedback was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// The prediction already had feedback; this one replaced it.
    Duplicate,
    /// No such prediction in the window (never made, or evicted).
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Unknown => "unknown",
        }
    }
}

struct Entry {
    version: String,
    predicted: Predicted,
    labelled: bool,
}

/// One labelled prediction's contribution to the online metric.
#[derive(Clone, Copy, Debug)]
enum Score {
    Correct(bool),
    Error(f64),
}

impl Score {
    fn of(predicted: &Predicted, actual: Actual) -> Score {
        match (predicted, actual) {
            (Predicted::Class(p), Actual::Class(a)) => Score::Correct(*p == a),
            (Predicted::Value(p), Actual::Value(a)) => Score::Error(p - a),
            // A model swap between prediction and feedback could change the task; such a pair
            // cannot be scored as either, so it counts as wrong rather than vanishing.
            _ => Score::Correct(false),
        }
    }
}

#[derive(Default)]
struct VersionStats {
    predictions: u64,
    labelled: u64,
    /// (request id, score), newest last, at most `--stats-window` long.
    window: VecDeque<(String, Score)>,
}

/// Online metrics of one model version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub model_version: String,
    pub predictions: u64,
    pub labelled: u64,
    /// Labelled predictions the metrics below cover.
    pub window: usize,
    pub accuracy: Option<f64>,
    pub rmse: Option<f64>,
    pub mae: Option<f64>,
}

impl VersionStats {
    fn summary(&self, version: &str) -> Summary {
        let (mut scored, mut correct, mut errors, mut squared, mut absolute) = (0, 0, 0, 0.0, 0.0);
        for (_, score) in &self.window {
            match score {
                Score::Correct(c) => {
                    scored += 1;
                    correct += usize::from(*c);
                }
                Score::Error(e) => {
                    errors += 1;
                    squared += e * e;
                    absolute += e.abs();
                }
            }
        }
        let ratio = |a: f64, n: usize| (n > 0).then(|| a / n as f64);
        Summary {
            model_version: version.to_string(),
            predictions: self.predictions,
            labelled: self.labelled,
            window: self.window.len(),
            accuracy: ratio(correct as f64, scored),
            rmse: ratio(squared, errors).map(f64::sqrt),
            mae: ratio(absolute, errors),
        }
    }
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Request ids in arrival order, for evicting the oldest.
    order: VecDeque<String>,
    versions: HashMap<String, VersionStats>,
}

/// The feedback index and online stats; one lock, held only for map operations.
pub struct FeedbackIndex {
    capacity: usize,
    stats_window: usize,
    inner: Mutex<Inner>,
    metrics: Metrics,
}

impl FeedbackIndex {
    pub fn new(capacity: usize, stats_window: usize, metrics: Metrics) -> FeedbackIndex {
        FeedbackIndex {
            capacity,
            stats_window: stats_window.max(1),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                versions: HashMap::new(),
            }),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing feedback, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers predictions (request id, predicted) of `version`.
    pub fn record(&self, version: &str, rows: impl IntoIterator<Item = (String, Predicted)>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut added = 0;
        for (id, predicted) in rows {
            added += 1;
            if self.capacity == 0 {
                continue;
            }
            let entry = Entry {
                version: version.to_string(),
                predicted,
                labelled: false,
            };
            if inner.entries.insert(id.clone(), entry).is_none() {
                inner.order.push_back(id);
            }
            while inner.entries.len() > self.capacity {
                match inner.order.pop_front() {
                    Some(old) => {
                        inner.entries.remove(&old);
                    }
                    None => break,
                }
            }
        }
        inner
            .versions
            .entry(version.to_string())
            .or_default()
            .predictions += added;
    }

    /// The version that predicted `id`, if it is in the window.
    pub fn version_of(&self, id: &str) -> Option<String> {
        self.lock().entries.get(id).map(|e| e.version.clone())
    }

    /// Joins `actual` with the prediction `id`; the last feedback for an id wins.
    pub fn label(&self, id: &str, actual: Actual, served_version: &str) -> Outcome {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.entries.get_mut(id) else {
            drop(guard);
            self.count(served_version, Outcome::Unknown);
            return Outcome::Unknown;
        };
        let score = Score::of(&entry.predicted, actual);
        let outcome = if entry.labelled {
            Outcome::Duplicate
        } else {
            Outcome::Accepted
        };
        entry.labelled = true;
        let version = entry.version.clone();
        let stats = inner.versions.entry(version.clone()).or_default();
        match outcome {
            Outcome::Duplicate => {
                // Replace the earlier score where it is still in the window.
                if let Some(slot) = stats.window.iter_mut().find(|(i, _)| i == id) {
                    slot.1 = score;
                }
            }
            _ => {
                stats.labelled += 1;
                stats.window.push_back((id.to_string(), score));
                while stats.window.len() > self.stats_window {
                    stats.window.pop_front();
                }
            }
        }
        let summary = stats.summary(&version);
        drop(guard);
        self.count(&version, outcome);
        let labels = ModelLabels {
            model_version: version,
        };
        if let Some(accuracy) = summary.accuracy {
            self.metrics
                .online_accuracy
                .get_or_create(&labels)
                .set(accuracy);
        }
        if let Some(rmse) = summary.rmse {
            self.metrics.online_rmse.get_or_create(&labels).set(rmse);
        }
        if let Some(mae) = summary.mae {
            self.metrics.online_mae.get_or_create(&labels).set(mae);
        }
        outcome
    }

    fn count(&self, version: &str, outcome: Outcome) {
        self.metrics
            .feedback
            .get_or_create(&FeedbackLabels {
                model_version: version.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }

    /// Stats of every version seen, sorted by version.
    pub fn summaries(&self) -> Vec<Summary> {
        let inner = self.lock();
        let mut out: Vec<Summary> = inner
            .versions
            .iter()
            .map(|(version, stats)| stats.summary(version))
            .collect();
        out.sort_by(|a, b| a.model_version.cmp(&b.model_version));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn index(capacity: usize, window: usize) -> FeedbackIndex {
        FeedbackIndex::new(capacity, window, Metrics::new(&mut Registry::default()))
    }

    #[test]
    fn evicts_oldest_and_scores_the_window() {
        let index = index(2, 2);
        index.record(
            "v1",
            [
                ("a".to_string(), Predicted::Class(0)),
                ("b".to_string(), Predicted::Class(1)),
                ("c".to_string(), Predicted::Class(1)),
            ],
        );
        assert_eq!(index.label("a", Actual::Class(0), "v1"), Outcome::Unknown);
        assert_eq!(index.label("b", Actual::Class(0), "v1"), Outcome::Accepted);
        assert_eq!(index.label("c", Actual::Class(1), "v1"), Outcome::Accepted);
        let s = &index.summaries()[0];
        assert_eq!((s.predictions, s.labelled, s.window), (3, 2, 2));
        assert_eq!(s.accuracy, Some(0.5));
        assert_eq!(index.label("b", Actual::Class(1), "v1"), Outcome::Duplicate);
        let s = &index.summaries()[0];
        assert_eq!((s.labelled, s.accuracy), (2, Some(1.0)));
    }

    #[test]
    fn regression_errors() {
        let index = index(10, 10);
        index.record(
            "v",
            [
                ("a".to_string(), Predicted::Value(1.0)),
                ("b".to_string(), Predicted::Value(5.0)),
            ],
        );
        index.label("a", Actual::Value(4.0), "v");
        index.label("b", Actual::Value(1.0), "v");
        let s = &index.summaries()[0];
        assert_eq!(s.mae, Some(3.5));
        assert_eq!(s.rmse, Some(12.5f64.sqrt()));
        assert_eq!(s.accuracy, None);
    }
}
