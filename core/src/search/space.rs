//! Model families, hyper-parameter domains and the documented default search space.
//!
//! The catalogue here is the contract between the search engine and the trainer: a
//! hyper-parameter the trainer understands is listed with its hard limits (what the model can
//! accept at all) and the default domain searched when a study does not narrow it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A model family a trial can train.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Linear regression (regression only), L1 or L2 regularised.
    Linear,
    /// Logistic regression (binary and multiclass), L1 or L2 regularised.
    Logistic,
    /// Linear support vector machine (classification: squared hinge loss, one-vs-rest;
    /// regression: epsilon-insensitive on the standardised target).
    Svm,
    /// A single CART decision tree.
    DecisionTree,
    /// A random forest of CART trees, features sampled per split.
    RandomForest,
    /// Histogram-based gradient boosted trees.
    GradientBoosting,
    /// A multi-layer perceptron trained with Adam.
    Mlp,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Linear,
        Family::Logistic,
        Family::Svm,
        Family::DecisionTree,
        Family::RandomForest,
        Family::GradientBoosting,
        Family::Mlp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Linear => "linear",
            Family::Logistic => "logistic",
            Family::Svm => "svm",
            Family::DecisionTree => "decision_tree",
            Family::RandomForest => "random_forest",
            Family::GradientBoosting => "gradient_boosting",
            Family::Mlp => "mlp",
        }
    }

    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|family| family.as_str() == name)
    }

    /// Whether the family can learn the task at all: linear regression has no classifier and
    /// logistic regression no regressor.
    pub fn supports(self, task: Task) -> bool {
        match self {
            Family::Linear => task == Task::Regression,
            Family::Logistic => task != Task::Regression,
            _ => true,
        }
    }

    /// Whether the built-in trainer (`flywheel-trainer`) trains this family; a custom trial image
    /// may train the others. Every catalogued family is built in today; validation keeps the
    /// check so a family can be catalogued before the trainer learns it.
    pub fn builtin(self) -> bool {
        true
    }

    /// The hyper-parameter whose value is the trial's training resource (trees, boosting rounds,
    /// epochs): intermediate reports count steps of it, so early stopping can act.
    pub fn resource_param(self) -> Option<&'static str> {
        match self {
            Family::RandomForest | Family::GradientBoosting => Some("n_estimators"),
            Family::Mlp => Some("epochs"),
            _ => None,
        }
    }

    /// The hyper-parameters this family accepts, with hard limits and default search domains.
    pub fn params(self) -> &'static [ParamSpec] {
        match self {
            Family::Linear => LINEAR,
            Family::Logistic => LOGISTIC,
            Family::Svm => SVM,
            Family::DecisionTree => DECISION_TREE,
            Family::RandomForest => RANDOM_FOREST,
            Family::GradientBoosting => GRADIENT_BOOSTING,
            Family::Mlp => MLP,
        }
    }

    pub fn param(self, name: &str) -> Option<&'static ParamSpec> {
        self.params().iter().find(|spec| spec.name == name)
    }

    /// The default search space: every hyper-parameter at its default domain.
    pub fn default_space(self) -> BTreeMap<String, Domain> {
        self.params()
            .iter()
            .map(|spec| (spec.name.to_string(), spec.default_domain.to_domain()))
            .collect()
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the study predicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Decided by the trainer from the target column (few distinct labels: classification).
    #[default]
    Auto,
    Binary,
    Multiclass,
    Regression,
}

impl Task {
    /// The name as written in manifests and passed to trials.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Auto => "auto",
            Task::Binary => "binary",
            Task::Multiclass => "multiclass",
            Task::Regression => "regression",
        }
    }
}

/// A hyper-parameter value: what a sampler suggests and a trainer receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl ParamValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(value) => Some(*value as f64),
            ParamValue::Float(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParamValue::Int(value) => Some(*value),
            // YAML and JSON writers may render an integer-valued float as `3.0`.
            ParamValue::Float(value) if value.fract() == 0.0 && value.is_finite() => {
                Some(*value as i64)
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(value) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(value) => write!(f, "{value}"),
            ParamValue::Int(value) => write!(f, "{value}"),
            ParamValue::Float(value) => write!(f, "{value}"),
            ParamValue::Str(value) => f.write_str(value),
        }
    }
}

impl JsonSchema for ParamValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ParamValue".into()
    }

    // A scalar of any type: structural schemas allow an untyped node only with
    // `x-kubernetes-preserve-unknown-fields`.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A hyper-parameter value: number, string or boolean.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Hyper-parameter values of one configuration, keyed by name.
pub type Params = BTreeMap<String, ParamValue>;

/// A validated search domain for one hyper-parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// Real values in `[low, high]`, sampled uniformly in log space when `log`; `steps` grid points.
    Float {
        low: f64,
        high: f64,
        log: bool,
        steps: Option<u32>,
    },
    /// Integers in `[low, high]`.
    Int { low: i64, high: i64, log: bool },
    /// One of a fixed set of values.
    Categorical { values: Vec<ParamValue> },
}

impl Domain {
    /// Whether `value` lies in the domain (integers also count for float domains).
    pub fn contains(&self, value: &ParamValue) -> bool {
        match self {
            Domain::Float { low, high, .. } => value
                .as_f64()
                .is_some_and(|v| v.is_finite() && v >= *low && v <= *high),
            Domain::Int { low, high, .. } => {
                value.as_i64().is_some_and(|v| v >= *low && v <= *high)
            }
            Domain::Categorical { values } => values.contains(value),
        }
    }

    /// The grid points enumerated by the grid sampler, or `None` for a continuous domain
    /// without `steps` (the grid would be infinite).
    pub fn grid_points(&self) -> Option<Vec<ParamValue>> {
        match self {
            Domain::Float {
                low,
                high,
                log,
                steps: Some(steps),
            } => {
                let steps = (*steps).max(1);
                if steps == 1 {
                    return Some(vec![ParamValue::Float(*low)]);
                }
                let (a, b) = if *log {
                    (low.ln(), high.ln())
                } else {
                    (*low, *high)
                };
                // The ends are exact and the inner points clamped: exp(ln(x)) can land a hair
                // outside [low, high], where `contains` would reject the grid's own point.
                Some(
                    (0..steps)
                        .map(|i| {
                            let value = if i == 0 {
                                *low
                            } else if i == steps - 1 {
                                *high
                            } else {
                                let x = a + (b - a) * f64::from(i) / f64::from(steps - 1);
                                (if *log { x.exp() } else { x }).clamp(*low, *high)
                            };
                            ParamValue::Float(value)
                        })
                        .collect(),
                )
            }
            Domain::Float { steps: None, .. } => None,
            Domain::Int { low, high, .. } => Some((*low..=*high).map(ParamValue::Int).collect()),
            Domain::Categorical { values } => Some(values.clone()),
        }
    }
}

/// A hyper-parameter the trainer understands.
#[derive(Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub doc: &'static str,
    /// The values the model accepts at all; a study's domain must lie inside.
    pub limits: StaticDomain,
    /// The domain searched when the study names the family without narrowing this parameter.
    pub default_domain: StaticDomain,
    /// The value used when the parameter is neither searched nor given.
    pub default_value: StaticValue,
}

/// A `Domain` that can live in a `static` table.
#[derive(Debug, Clone, Copy)]
pub enum StaticDomain {
    Float { low: f64, high: f64, log: bool },
    Int { low: i64, high: i64, log: bool },
    Categorical(&'static [&'static str]),
}

impl StaticDomain {
    pub fn to_domain(self) -> Domain {
        match self {
            StaticDomain::Float { low, high, log } => Domain::Float {
                low,
                high,
                log,
                steps: None,
            },
            StaticDomain::Int { low, high, log } => Domain::Int { low, high, log },
            StaticDomain::Categorical(values) => Domain::Categorical {
                values: values
                    .iter()
                    .map(|v| ParamValue::Str((*v).to_string()))
                    .collect(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum StaticValue {
    Float(f64),
    Int(i64),
    Str(&'static str),
}

impl StaticValue {
    pub fn to_value(self) -> ParamValue {
        match self {
            StaticValue::Float(v) => ParamValue::Float(v),
            StaticValue::Int(v) => ParamValue::Int(v),
            StaticValue::Str(v) => ParamValue::Str(v.to_string()),
        }
    }
}

const fn float(low: f64, high: f64, log: bool) -> StaticDomain {
    StaticDomain::Float { low, high, log }
}

const fn int(low: i64, high: i64, log: bool) -> StaticDomain {
    StaticDomain::Int { low, high, log }
}

const PENALTY: ParamSpec = ParamSpec {
    name: "penalty",
    doc: "regularisation type: l2 (ridge) or l1 (lasso)",
    limits: StaticDomain::Categorical(&["l2", "l1"]),
    default_domain: StaticDomain::Categorical(&["l2", "l1"]),
    default_value: StaticValue::Str("l2"),
};

const ALPHA: ParamSpec = ParamSpec {
    name: "alpha",
    doc: "regularisation strength (larger is simpler)",
    limits: float(0.0, 1e4, false),
    default_domain: float(1e-6, 1.0, true),
    default_value: StaticValue::Float(1e-4),
};

static LINEAR: &[ParamSpec] = &[PENALTY, ALPHA];
static LOGISTIC: &[ParamSpec] = &[PENALTY, ALPHA];
static SVM: &[ParamSpec] = &[
    ParamSpec {
        name: "c",
        doc: "inverse regularisation strength",
        limits: float(1e-6, 1e6, true),
        default_domain: float(1e-3, 100.0, true),
        default_value: StaticValue::Float(1.0),
    },
    ParamSpec {
        name: "epsilon",
        doc: "width of the insensitive tube, in standard deviations of the target (regression only)",
        limits: float(0.0, 1e3, false),
        default_domain: float(0.0, 1.0, false),
        default_value: StaticValue::Float(0.0),
    },
];

const MAX_DEPTH_TREE: ParamSpec = ParamSpec {
    name: "max_depth",
    doc: "maximum depth of a tree",
    limits: int(1, 64, false),
    default_domain: int(2, 20, false),
    default_value: StaticValue::Int(12),
};

const MIN_SAMPLES_LEAF: ParamSpec = ParamSpec {
    name: "min_samples_leaf",
    doc: "minimum training rows in a leaf",
    limits: int(1, 100_000, true),
    default_domain: int(1, 50, true),
    default_value: StaticValue::Int(1),
};

static DECISION_TREE: &[ParamSpec] = &[MAX_DEPTH_TREE, MIN_SAMPLES_LEAF];

static RANDOM_FOREST: &[ParamSpec] = &[
    ParamSpec {
        name: "n_estimators",
        doc: "number of trees (the training resource)",
        limits: int(1, 5000, true),
        default_domain: int(20, 300, true),
        default_value: StaticValue::Int(100),
    },
    ParamSpec {
        name: "max_depth",
        doc: "maximum depth of each tree",
        limits: int(1, 64, false),
        default_domain: int(4, 32, false),
        default_value: StaticValue::Int(32),
    },
    ParamSpec {
        name: "max_features",
        doc: "fraction of features considered at each split",
        limits: float(0.01, 1.0, false),
        default_domain: float(0.1, 1.0, false),
        default_value: StaticValue::Float(0.5),
    },
    MIN_SAMPLES_LEAF,
];

static GRADIENT_BOOSTING: &[ParamSpec] = &[
    ParamSpec {
        name: "n_estimators",
        doc: "boosting rounds (the training resource)",
        limits: int(1, 10_000, true),
        default_domain: int(50, 1000, true),
        default_value: StaticValue::Int(100),
    },
    ParamSpec {
        name: "learning_rate",
        doc: "shrinkage applied to each tree",
        limits: float(1e-4, 1.0, true),
        default_domain: float(0.01, 0.3, true),
        default_value: StaticValue::Float(0.1),
    },
    ParamSpec {
        name: "max_leaves",
        doc: "maximum leaves per tree",
        limits: int(2, 4096, true),
        default_domain: int(8, 128, true),
        default_value: StaticValue::Int(31),
    },
    ParamSpec {
        name: "max_depth",
        doc: "maximum depth per tree",
        limits: int(1, 32, false),
        default_domain: int(3, 12, false),
        default_value: StaticValue::Int(8),
    },
    ParamSpec {
        name: "min_child_weight",
        doc: "minimum hessian sum in a leaf",
        limits: float(0.0, 1e4, false),
        default_domain: float(1e-3, 10.0, true),
        default_value: StaticValue::Float(1e-3),
    },
    ParamSpec {
        name: "subsample",
        doc: "fraction of rows sampled per round",
        limits: float(0.05, 1.0, false),
        default_domain: float(0.5, 1.0, false),
        default_value: StaticValue::Float(1.0),
    },
    ParamSpec {
        name: "l2",
        doc: "L2 regularisation of leaf values",
        limits: float(0.0, 1e4, false),
        default_domain: float(1e-3, 10.0, true),
        default_value: StaticValue::Float(0.0),
    },
];

static MLP: &[ParamSpec] = &[
    ParamSpec {
        name: "hidden_layers",
        doc: "number of hidden layers",
        limits: int(1, 8, false),
        default_domain: int(1, 3, false),
        default_value: StaticValue::Int(1),
    },
    ParamSpec {
        name: "hidden_units",
        doc: "units per hidden layer",
        limits: int(1, 4096, true),
        default_domain: int(16, 256, true),
        default_value: StaticValue::Int(100),
    },
    ParamSpec {
        name: "activation",
        doc: "hidden-layer activation",
        limits: StaticDomain::Categorical(&["relu", "tanh", "sigmoid"]),
        default_domain: StaticDomain::Categorical(&["relu", "tanh"]),
        default_value: StaticValue::Str("relu"),
    },
    ParamSpec {
        name: "learning_rate",
        doc: "Adam step size",
        limits: float(1e-6, 1.0, true),
        default_domain: float(1e-4, 1e-2, true),
        default_value: StaticValue::Float(1e-3),
    },
    ParamSpec {
        name: "batch_size",
        doc: "rows per gradient step",
        limits: int(1, 65_536, true),
        default_domain: int(32, 512, true),
        default_value: StaticValue::Int(200),
    },
    ParamSpec {
        name: "epochs",
        doc: "passes over the training data (the training resource)",
        limits: int(1, 10_000, true),
        default_domain: int(10, 200, true),
        default_value: StaticValue::Int(50),
    },
    ParamSpec {
        name: "weight_decay",
        doc: "L2 penalty on weights",
        limits: float(0.0, 1.0, false),
        default_domain: float(1e-6, 1e-2, true),
        default_value: StaticValue::Float(1e-4),
    },
];

/// The catalogue as a Markdown document (docs/search-space.md is exactly this text).
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# Search space\n\n\
         Generated by `flywheel search-space`; do not edit. Each family lists the hyper-parameters \
         the trainer accepts, the range a study's domain must stay inside, the domain searched \
         when the study names the family without narrowing the parameter, and the value used \
         when a parameter is neither searched nor fixed.\n",
    );
    for family in Family::ALL {
        let tasks = match (
            family.supports(Task::Regression),
            family.supports(Task::Binary),
        ) {
            (true, true) => "classification and regression",
            (true, false) => "regression",
            _ => "classification",
        };
        out.push_str(&format!("\n## `{family}` ({tasks})\n\n"));
        if let Some(resource) = family.resource_param() {
            out.push_str(&format!(
                "Training resource (report steps, early stopping): `{resource}`.\n\n"
            ));
        }
        out.push_str("| parameter | meaning | accepted | default search | default value |\n");
        out.push_str("|---|---|---|---|---|\n");
        for spec in family.params() {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | `{}` |\n",
                spec.name,
                spec.doc,
                describe(&spec.limits),
                describe(&spec.default_domain),
                spec.default_value.to_value()
            ));
        }
    }
    out
}

fn describe(domain: &StaticDomain) -> String {
    match domain {
        StaticDomain::Float { low, high, log } => {
            format!("float [{low}, {high}]{}", if *log { " log" } else { "" })
        }
        StaticDomain::Int { low, high, log } => {
            format!("int [{low}, {high}]{}", if *log { " log" } else { "" })
        }
        StaticDomain::Categorical(values) => values.join(" \\| "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_domain_lies_inside_its_limits() {
        for family in Family::ALL {
            for spec in family.params() {
                let limits = spec.limits.to_domain();
                let default = spec.default_domain.to_domain();
                let corners: Vec<ParamValue> = match &default {
                    Domain::Float { low, high, .. } => {
                        vec![ParamValue::Float(*low), ParamValue::Float(*high)]
                    }
                    Domain::Int { low, high, .. } => {
                        vec![ParamValue::Int(*low), ParamValue::Int(*high)]
                    }
                    Domain::Categorical { values } => values.clone(),
                };
                for corner in corners {
                    assert!(
                        limits.contains(&corner),
                        "{family}.{} default {corner}",
                        spec.name
                    );
                }
                assert!(
                    limits.contains(&spec.default_value.to_value()),
                    "{family}.{} default value",
                    spec.name
                );
                match default {
                    Domain::Float { low, log: true, .. } => {
                        assert!(low > 0.0, "{family}.{}", spec.name)
                    }
                    Domain::Int { low, log: true, .. } => {
                        assert!(low > 0, "{family}.{}", spec.name)
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn family_names_round_trip() {
        for family in Family::ALL {
            assert_eq!(Family::parse(family.as_str()), Some(family));
            let json = serde_json::to_string(&family).unwrap();
            assert_eq!(json, format!("\"{}\"", family.as_str()));
        }
        assert_eq!(Family::parse("xgboost"), None);
    }

    #[test]
    fn log_grid_is_geometric_and_includes_ends() {
        let domain = Domain::Float {
            low: 0.001,
            high: 1.0,
            log: true,
            steps: Some(4),
        };
        let points: Vec<f64> = domain
            .grid_points()
            .unwrap()
            .iter()
            .filter_map(ParamValue::as_f64)
            .collect();
        let expected = [0.001, 0.01, 0.1, 1.0];
        assert_eq!(points.len(), 4);
        assert!(
            points
                .iter()
                .all(|p| domain.contains(&ParamValue::Float(*p)))
        );
        for (got, want) in points.iter().zip(expected) {
            assert!(
                (got - want).abs() < 1e-12 * want.max(1.0),
                "{got} vs {want}"
            );
        }
        let continuous = Domain::Float {
            low: 0.0,
            high: 1.0,
            log: false,
            steps: None,
        };
        assert!(continuous.grid_points().is_none());
    }
}
