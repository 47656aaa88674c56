//! Joins feedback (the actual outcome) with recent predictions, and keeps online metrics per
//! model version over the last `--stats-window` labelled predictions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use flywheel_core::feedback::PairedStats;

use crate::metrics::{FeedbackLabels, Metrics, ModelLabels};

/// What the model said for one row.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicted {
    /// Index into the classes of the version that predicted it.
    Class(usize),
    Value(f64),
}

/// The true outcome, validated against the serving model.
#[derive(Clone, Debug, PartialEq)]
pub enum Actual {
    /// A class label. Kept as text, not an index: the version that made a prediction (an older
    /// primary, a shadow) may order its classes differently from the one serving now.
    Class(String),
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

/// One model version's prediction for a request id.
struct Scored {
    version: Arc<str>,
    predicted: Predicted,
    /// Whether it has a score in its version's window.
    scored: bool,
}

struct Entry {
    /// The primary's prediction first, then any shadow's for the same request id.
    predictions: Vec<Scored>,
    /// The latest feedback, kept so that a shadow prediction arriving after it is scored too.
    actual: Option<Actual>,
    /// Where each shadow's pairing with the primary counted this request, so a corrected label
    /// replaces its contribution instead of adding another.
    paired: Vec<(Arc<str>, PairSlot)>,
}

/// Labelled requests whose regression errors are kept per (primary, shadow) pairing: enough
/// for any sensible gate, bounded memory however long a shadow runs.
pub const MAX_PAIRED_ERRORS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
enum PairSlot {
    /// Index into [`Pairing::counts`].
    Class(usize),
    /// Index into [`Pairing::errors`].
    Error(usize),
}

/// A shadow's predictions against the primary's on the same labelled requests.
#[derive(Default)]
struct Pairing {
    /// Both right, only the primary, only the shadow, neither.
    counts: [u64; 4],
    /// `[primary, shadow]` absolute errors.
    errors: Vec<[f64; 2]>,
}

impl Pairing {
    /// Counts one labelled request, replacing `previous` (this request's earlier count).
    fn record(
        &mut self,
        serving: Score,
        candidate: Score,
        previous: Option<PairSlot>,
    ) -> Option<PairSlot> {
        if let Some(PairSlot::Class(k)) = previous
            && let Some(count) = self.counts.get_mut(k)
        {
            *count = count.saturating_sub(1);
        }
        match (serving, candidate) {
            (Score::Correct(s), Score::Correct(c)) => {
                let k = match (s, c) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, true) => 2,
                    (false, false) => 3,
                };
                self.counts[k] += 1;
                Some(PairSlot::Class(k))
            }
            (Score::Error(s), Score::Error(c)) => {
                let pair = [s.abs(), c.abs()];
                match previous {
                    Some(PairSlot::Error(i)) if i < self.errors.len() => {
                        self.errors[i] = pair;
                        Some(PairSlot::Error(i))
                    }
                    _ if self.errors.len() < MAX_PAIRED_ERRORS => {
                        self.errors.push(pair);
                        Some(PairSlot::Error(self.errors.len() - 1))
                    }
                    _ => None,
                }
            }
            // A classifier against a regressor: nothing to compare.
            _ => None,
        }
    }

    fn stats(&self, serving_version: &str) -> PairedStats {
        PairedStats {
            serving_version: serving_version.to_string(),
            samples: self.counts.iter().sum::<u64>() + self.errors.len() as u64,
            both_right: self.counts[0],
            only_serving: self.counts[1],
            only_candidate: self.counts[2],
            neither_right: self.counts[3],
            absolute_errors: self.errors.clone(),
        }
    }
}

/// One labelled prediction's contribution to the online metric.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Score {
    Correct(bool),
    Error(f64),
}

impl Score {
    fn of(predicted: &Predicted, classes: &[String], actual: &Actual) -> Score {
        match (predicted, actual) {
            (Predicted::Class(p), Actual::Class(a)) => {
                Score::Correct(classes.get(*p).is_some_and(|label| label == a))
            }
            (Predicted::Value(p), Actual::Value(a)) => Score::Error(p - a),
            // A model swap between prediction and feedback could change the task; such a pair
            // cannot be scored as either, so it counts as wrong rather than vanishing.
            _ => Score::Correct(false),
        }
    }
}

#[derive(Default)]
struct VersionStats {
    /// The version's class labels, which its predicted indices refer to.
    classes: Vec<String>,
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

    /// Scores `id`'s prediction: a new entry in the window, or (`rescore`) a replacement of the
    /// earlier score where it is still in the window.
    fn score(
        &mut self,
        id: &str,
        predicted: &Predicted,
        actual: &Actual,
        rescore: bool,
        max: usize,
    ) {
        let score = Score::of(predicted, &self.classes, actual);
        if rescore {
            if let Some(slot) = self.window.iter_mut().find(|(i, _)| i == id) {
                slot.1 = score;
            }
            return;
        }
        self.labelled += 1;
        self.window.push_back((id.to_string(), score));
        while self.window.len() > max {
            self.window.pop_front();
        }
    }
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Request ids in arrival order, for evicting the oldest.
    order: VecDeque<String>,
    versions: HashMap<String, VersionStats>,
    /// Keyed by (primary version, shadow version).
    pairings: HashMap<(Arc<str>, Arc<str>), Pairing>,
}

/// Pairs the shadow prediction at `shadow` of `entry` with its primary's, when it has a label.
fn pair(
    entry: &mut Entry,
    shadow: usize,
    versions: &HashMap<String, VersionStats>,
    pairings: &mut HashMap<(Arc<str>, Arc<str>), Pairing>,
) {
    let (Some(actual), Some(primary), Some(candidate)) = (
        entry.actual.as_ref(),
        entry.predictions.first(),
        entry.predictions.get(shadow),
    ) else {
        return;
    };
    if shadow == 0 {
        return;
    }
    let classes = |version: &str| versions.get(version).map_or(&[][..], |v| &v.classes[..]);
    let serving = Score::of(&primary.predicted, classes(&primary.version), actual);
    let challenger = Score::of(&candidate.predicted, classes(&candidate.version), actual);
    let key = (primary.version.clone(), candidate.version.clone());
    let previous = entry
        .paired
        .iter()
        .position(|(v, _)| *v == key.1)
        .map(|i| entry.paired.swap_remove(i).1);
    let pairing = pairings.entry(key.clone()).or_default();
    if let Some(slot) = pairing.record(serving, challenger, previous) {
        entry.paired.push((key.1, slot));
    }
}

impl Inner {
    /// The stats of `version`, created with its classes on first sight.
    fn version(&mut self, version: &str, classes: &[String]) -> &mut VersionStats {
        self.versions
            .entry(version.to_string())
            .or_insert_with(|| VersionStats {
                classes: classes.to_vec(),
                ..VersionStats::default()
            })
    }
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
                pairings: HashMap::new(),
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

    /// Remembers the primary's predictions (request id, predicted) of `version`, whose class
    /// labels are `classes`.
    pub fn record(
        &self,
        version: &str,
        classes: &[String],
        rows: impl IntoIterator<Item = (String, Predicted)>,
    ) {
        let shared: Arc<str> = Arc::from(version);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut added = 0;
        for (id, predicted) in rows {
            added += 1;
            if self.capacity == 0 {
                continue;
            }
            let entry = Entry {
                predictions: vec![Scored {
                    version: shared.clone(),
                    predicted,
                    scored: false,
                }],
                actual: None,
                paired: Vec::new(),
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
        inner.version(version, classes).predictions += added;
    }

    /// Adds a shadow model's predictions for request ids the primary already predicted. Ids no
    /// longer in the window are only counted; ids that already have feedback are scored at once.
    pub fn record_shadow(
        &self,
        version: &str,
        classes: &[String],
        rows: impl IntoIterator<Item = (String, Predicted)>,
    ) {
        let shared: Arc<str> = Arc::from(version);
        let mut touched = false;
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.version(version, classes);
        let mut added = 0;
        for (id, predicted) in rows {
            added += 1;
            let Some(entry) = inner.entries.get_mut(&id) else {
                continue;
            };
            let Some(stats) = inner.versions.get_mut(version) else {
                continue;
            };
            let slot = match entry
                .predictions
                .iter()
                .position(|p| *p.version == *version)
            {
                Some(i) => i,
                None => {
                    entry.predictions.push(Scored {
                        version: shared.clone(),
                        predicted: predicted.clone(),
                        scored: false,
                    });
                    entry.predictions.len() - 1
                }
            };
            let Some(scored) = entry.predictions.get_mut(slot) else {
                continue;
            };
            scored.predicted = predicted;
            if let Some(actual) = &entry.actual {
                stats.score(
                    &id,
                    &scored.predicted,
                    actual,
                    scored.scored,
                    self.stats_window,
                );
                scored.scored = true;
                touched = true;
                pair(entry, slot, &inner.versions, &mut inner.pairings);
            }
        }
        let summary = inner.versions.get_mut(version).map(|stats| {
            stats.predictions += added;
            stats.summary(version)
        });
        drop(guard);
        if touched && let Some(summary) = summary {
            self.publish(&summary);
        }
    }

    /// The version that predicted `id` for clients (the primary), if it is in the window.
    pub fn version_of(&self, id: &str) -> Option<String> {
        self.lock()
            .entries
            .get(id)
            .and_then(|e| e.predictions.first())
            .map(|p| p.version.to_string())
    }

    /// Joins `actual` with the predictions for `id` (the primary's and any shadow's); the last
    /// feedback for an id wins.
    pub fn label(&self, id: &str, actual: Actual, served_version: &str) -> Outcome {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.entries.get_mut(id) else {
            drop(guard);
            self.count(served_version, Outcome::Unknown);
            return Outcome::Unknown;
        };
        let outcome = if entry.actual.is_some() {
            Outcome::Duplicate
        } else {
            Outcome::Accepted
        };
        let mut summaries = Vec::with_capacity(entry.predictions.len());
        for prediction in &mut entry.predictions {
            let Some(stats) = inner.versions.get_mut(&*prediction.version) else {
                continue;
            };
            stats.score(
                id,
                &prediction.predicted,
                &actual,
                prediction.scored,
                self.stats_window,
            );
            prediction.scored = true;
            summaries.push(stats.summary(&prediction.version));
        }
        let primary = entry
            .predictions
            .first()
            .map_or_else(|| served_version.to_string(), |p| p.version.to_string());
        entry.actual = Some(actual);
        for shadow in 1..entry.predictions.len() {
            pair(entry, shadow, &inner.versions, &mut inner.pairings);
        }
        drop(guard);
        self.count(&primary, outcome);
        for summary in &summaries {
            self.publish(summary);
        }
        outcome
    }

    /// Sets the online metric gauges of `summary`'s version.
    fn publish(&self, summary: &Summary) {
        let labels = ModelLabels {
            model_version: summary.model_version.clone(),
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

    /// The shadow `shadow`'s predictions paired with the primary `primary`'s on the same
    /// labelled requests, for the shadow gate; `None` before the first such request.
    pub fn paired(&self, primary: &str, shadow: &str) -> Option<PairedStats> {
        let inner = self.lock();
        inner
            .pairings
            .get(&(Arc::from(primary), Arc::from(shadow)))
            .map(|pairing| pairing.stats(primary))
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

    fn classes() -> Vec<String> {
        vec!["a".to_string(), "b".to_string()]
    }

    fn class(label: &str) -> Actual {
        Actual::Class(label.to_string())
    }

    #[test]
    fn evicts_oldest_and_scores_the_window() {
        let index = index(2, 2);
        index.record(
            "v1",
            &classes(),
            [
                ("a".to_string(), Predicted::Class(0)),
                ("b".to_string(), Predicted::Class(1)),
                ("c".to_string(), Predicted::Class(1)),
            ],
        );
        assert_eq!(index.label("a", class("a"), "v1"), Outcome::Unknown);
        assert_eq!(index.label("b", class("a"), "v1"), Outcome::Accepted);
        assert_eq!(index.label("c", class("b"), "v1"), Outcome::Accepted);
        let s = &index.summaries()[0];
        assert_eq!((s.predictions, s.labelled, s.window), (3, 2, 2));
        assert_eq!(s.accuracy, Some(0.5));
        assert_eq!(index.label("b", class("b"), "v1"), Outcome::Duplicate);
        let s = &index.summaries()[0];
        assert_eq!((s.labelled, s.accuracy), (2, Some(1.0)));
    }

    #[test]
    fn regression_errors() {
        let index = index(10, 10);
        index.record(
            "v",
            &[],
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

    #[test]
    fn shadow_predictions_are_scored_with_the_primary() {
        let index = index(10, 10);
        index.record("p", &classes(), [("x".to_string(), Predicted::Class(0))]);
        // The shadow orders its classes differently: index 0 is "b" there.
        let shadow_classes = vec!["b".to_string(), "a".to_string()];
        index.record_shadow(
            "s",
            &shadow_classes,
            [("x".to_string(), Predicted::Class(1))],
        );
        // An id the primary never predicted is counted, not indexed.
        index.record_shadow(
            "s",
            &shadow_classes,
            [("y".to_string(), Predicted::Class(0))],
        );
        assert_eq!(index.label("x", class("a"), "p"), Outcome::Accepted);
        let summaries = index.summaries();
        assert_eq!(summaries.len(), 2);
        let (p, s) = (&summaries[0], &summaries[1]);
        assert_eq!(
            (p.model_version.as_str(), p.labelled, p.accuracy),
            ("p", 1, Some(1.0))
        );
        assert_eq!(
            (
                s.model_version.as_str(),
                s.predictions,
                s.labelled,
                s.accuracy
            ),
            ("s", 2, 1, Some(1.0))
        );
        assert_eq!(index.version_of("x").as_deref(), Some("p"));

        // A shadow prediction arriving after the feedback is scored at once.
        index.record("p", &classes(), [("z".to_string(), Predicted::Class(1))]);
        assert_eq!(index.label("z", class("b"), "p"), Outcome::Accepted);
        index.record_shadow(
            "s",
            &shadow_classes,
            [("z".to_string(), Predicted::Class(1))],
        );
        let s = &index.summaries()[1];
        assert_eq!((s.labelled, s.accuracy), (2, Some(0.5)));
        // Corrected feedback rescores both, counting nothing twice.
        assert_eq!(index.label("z", class("a"), "p"), Outcome::Duplicate);
        let summaries = index.summaries();
        assert_eq!(
            (summaries[0].labelled, summaries[0].accuracy),
            (2, Some(0.5))
        );
        assert_eq!(
            (summaries[1].labelled, summaries[1].accuracy),
            (2, Some(1.0))
        );
        // The gate's evidence: x both right; z first only the primary, then (relabelled) only
        // the shadow — replaced, not added.
        let paired = index.paired("p", "s").unwrap();
        assert_eq!(
            (
                paired.samples,
                paired.both_right,
                paired.only_serving,
                paired.only_candidate,
                paired.neither_right
            ),
            (2, 1, 0, 1, 0)
        );
        assert_eq!(paired.serving_version, "p");
        assert!(index.paired("s", "p").is_none());
    }

    #[test]
    fn regression_shadows_pair_absolute_errors() {
        let index = index(10, 10);
        index.record("p", &[], [("a".to_string(), Predicted::Value(3.0))]);
        index.record_shadow("s", &[], [("a".to_string(), Predicted::Value(4.5))]);
        assert!(index.paired("p", "s").is_none(), "no label yet");
        index.label("a", Actual::Value(5.0), "p");
        index.record("p", &[], [("b".to_string(), Predicted::Value(1.0))]);
        index.label("b", Actual::Value(2.0), "p");
        index.record_shadow("s", &[], [("b".to_string(), Predicted::Value(2.25))]);
        let paired = index.paired("p", "s").unwrap();
        assert_eq!(paired.absolute_errors, vec![[2.0, 0.5], [1.0, 0.25]]);
        index.label("a", Actual::Value(3.0), "p");
        let paired = index.paired("p", "s").unwrap();
        assert_eq!(paired.samples, 2);
        assert_eq!(paired.absolute_errors[0], [0.0, 1.5]);
        assert_eq!(paired.both_right + paired.only_serving, 0);
    }
}
