//! Semantic validation of a Study: the rules a CRD schema cannot express (hyper-parameter names
//! per family, domains inside what a model accepts, grids that are finite, ...). The operator
//! turns these errors into a status condition; `flywheel validate` and `flywheel run` print them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::{AlgorithmName, DataFormat, Metric, Study, StudySpec};
use crate::search::space::{Domain, Family, ParamValue, Params, Task};
use crate::search::{FamilySpace, Space, effective_task};

/// One problem with a manifest, located by its field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    /// Path in the manifest, e.g. `spec.searchSpace[0].params.max_depth.int.high`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The longest Study name whose trial names (`<study>-<index>`) still fit the 63 characters
/// Kubernetes allows in a Job's name label.
pub const MAX_STUDY_NAME_LEN: usize = 52;

/// Every semantic error of a Study, metadata included.
pub fn validate_study(study: &Study) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match study.metadata.name.as_deref() {
        None | Some("") => errors.push(FieldError::new(
            "metadata.name",
            "a Study needs a name; set metadata.name",
        )),
        Some(name) => {
            if let Some(problem) = dns_label_problem(name, MAX_STUDY_NAME_LEN) {
                errors.push(FieldError::new("metadata.name", problem));
            }
        }
    }
    errors.extend(validate_spec(&study.spec));
    errors
}

/// Every semantic error of a Study spec.
pub fn validate_spec(spec: &StudySpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_dataset(spec, &mut errors);
    check_objective(spec, &mut errors);
    let _ = resolve_space(spec, &mut errors);
    check_warm_start(spec, &mut errors);
    if let Some(promotion) = &spec.promotion
        && let Some(problem) = dns_label_problem(&promotion.deployment, 63)
    {
        errors.push(FieldError::new("spec.promotion.deployment", problem));
    }
    errors.sort();
    errors.dedup();
    errors
}

impl Space {
    /// The study's search space with defaults filled in, or every error that prevents it.
    pub fn from_spec(spec: &StudySpec) -> Result<Space, Vec<FieldError>> {
        let mut errors = Vec::new();
        let space = resolve_space(spec, &mut errors);
        if errors.is_empty() {
            Ok(space)
        } else {
            Err(errors)
        }
    }
}

fn check_dataset(spec: &StudySpec, errors: &mut Vec<FieldError>) {
    let uri = spec.dataset.uri.trim();
    if uri.is_empty() {
        errors.push(FieldError::new(
            "spec.dataset.uri",
            "must not be empty; set it to the table's location, e.g. file:///data/train.csv",
        ));
        return;
    }
    if let Some((scheme, _)) = uri.split_once("://")
        && !["file", "s3", "gs", "az", "http", "https"].contains(&scheme)
    {
        errors.push(FieldError::new(
            "spec.dataset.uri",
            format!(
                "unsupported scheme '{scheme}://'; use file://, s3://, gs://, az://, http(s):// or a plain path"
            ),
        ));
    }
    if spec.dataset.format == DataFormat::Auto && format_from_uri(uri).is_none() {
        errors.push(FieldError::new(
            "spec.dataset.format",
            format!("cannot tell the format of '{uri}' from its extension; set format: csv or format: parquet"),
        ));
    }
    if spec.dataset.target.trim().is_empty() {
        errors.push(FieldError::new(
            "spec.dataset.target",
            "must name the column to predict",
        ));
    }
    for (i, source) in spec.dataset.feedback.iter().enumerate() {
        if let Some(until) = &source.until
            && until
                .parse::<crate::k8s_openapi::jiff::Timestamp>()
                .is_err()
        {
            errors.push(FieldError::new(
                format!("spec.dataset.feedback[{i}].until"),
                format!("'{until}' is not an RFC 3339 time; write e.g. 2026-11-30T10:00:00Z"),
            ));
        }
    }
}

/// The format implied by a URI's extension (`.csv`, `.csv.gz`, `.tsv`, `.parquet`, `.pq`).
pub fn format_from_uri(uri: &str) -> Option<DataFormat> {
    let path = uri
        .split(['?', '#'])
        .next()
        .unwrap_or(uri)
        .to_ascii_lowercase();
    if [".csv", ".csv.gz", ".tsv"]
        .iter()
        .any(|ext| path.ends_with(ext))
    {
        Some(DataFormat::Csv)
    } else if [".parquet", ".pq"].iter().any(|ext| path.ends_with(ext)) {
        Some(DataFormat::Parquet)
    } else {
        None
    }
}

fn check_objective(spec: &StudySpec, errors: &mut Vec<FieldError>) {
    let metric = spec.objective.metric;
    match (spec.dataset.task, metric.is_regression()) {
        (Task::Regression, false) => errors.push(FieldError::new(
            "spec.objective.metric",
            format!(
                "{} is a classification metric but the task is regression; use rmse, mae or r2",
                metric.as_str()
            ),
        )),
        (Task::Binary | Task::Multiclass, true) => errors.push(FieldError::new(
            "spec.objective.metric",
            format!(
                "{} is a regression metric but the task is classification; use accuracy, balanced_accuracy, f1_macro, roc_auc or log_loss",
                metric.as_str()
            ),
        )),
        _ => {}
    }
    if let Some(goal) = spec.objective.goal {
        let problem = match metric {
            _ if !goal.is_finite() => Some("must be a finite number"),
            Metric::Accuracy | Metric::BalancedAccuracy | Metric::F1Macro | Metric::RocAuc
                if !(0.0..=1.0).contains(&goal) =>
            {
                Some("must be between 0 and 1 for this metric")
            }
            Metric::R2 if goal > 1.0 => Some("must be at most 1 for r2"),
            Metric::LogLoss | Metric::Rmse | Metric::Mae if goal < 0.0 => {
                Some("must be at least 0 for an error metric")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            errors.push(FieldError::new("spec.objective.goal", problem));
        }
    }
}

fn resolve_space(spec: &StudySpec, errors: &mut Vec<FieldError>) -> Space {
    let task = effective_task(spec);
    let mut families = Vec::new();
    if spec.search_space.is_empty() {
        let custom_image = spec.trial.image.is_some();
        for family in Family::ALL
            .into_iter()
            .filter(|f| f.supports(task) && (custom_image || f.builtin()))
        {
            families.push(FamilySpace {
                family,
                domains: family.default_space(),
                fixed: Params::new(),
            });
        }
    }
    let mut seen = BTreeSet::new();
    for (i, entry) in spec.search_space.iter().enumerate() {
        let at = format!("spec.searchSpace[{i}]");
        let family = entry.family;
        if !seen.insert(family) {
            errors.push(FieldError::new(
                format!("{at}.family"),
                format!("{family} is listed twice; merge its params into one entry"),
            ));
            continue;
        }
        if !family.supports(task) {
            errors.push(FieldError::new(
                format!("{at}.family"),
                unsupported_family_message(family, task),
            ));
            continue;
        }
        if !family.builtin() && spec.trial.image.is_none() {
            errors.push(FieldError::new(
                format!("{at}.family"),
                format!(
                    "the built-in trainer does not train {family} yet; remove it, or set trial.image to a custom trial image that does"
                ),
            ));
            continue;
        }
        let mut domains: BTreeMap<String, Domain> = family.default_space();
        for (name, api_domain) in &entry.params {
            let path = format!("{at}.params.{name}");
            let Some(param) = family.param(name) else {
                errors.push(unknown_param(&path, family, name));
                continue;
            };
            let Some(domain) = api_domain.to_domain() else {
                errors.push(FieldError::new(
                    path,
                    "set exactly one of float, int or categorical",
                ));
                continue;
            };
            if let Some(problem) = domain_problem(&domain, &param.limits.to_domain()) {
                errors.push(FieldError::new(path, problem));
                continue;
            }
            domains.insert(name.clone(), domain);
        }
        let mut fixed = Params::new();
        for (name, value) in &entry.fixed {
            let path = format!("{at}.fixed.{name}");
            let Some(param) = family.param(name) else {
                errors.push(unknown_param(&path, family, name));
                continue;
            };
            if entry.params.contains_key(name) {
                errors.push(FieldError::new(
                    path,
                    format!("{name} is both searched (params) and fixed; keep one"),
                ));
                continue;
            }
            if let Some(problem) = value_problem(value, &param.limits.to_domain()) {
                errors.push(FieldError::new(path, problem));
                continue;
            }
            domains.remove(name);
            fixed.insert(name.clone(), value.clone());
        }
        families.push(FamilySpace {
            family,
            domains,
            fixed,
        });
    }
    if families.is_empty() && errors.is_empty() {
        errors.push(FieldError::new(
            "spec.searchSpace",
            "no model family fits the task; list at least one family",
        ));
    }
    if spec.algorithm.name == AlgorithmName::Grid {
        for (i, family) in families.iter().enumerate() {
            for (name, domain) in &family.domains {
                if domain.grid_points().is_none() {
                    let index = spec
                        .search_space
                        .iter()
                        .position(|entry| entry.family == family.family)
                        .unwrap_or(i);
                    let explicit = spec
                        .search_space
                        .get(index)
                        .is_some_and(|entry| entry.params.contains_key(name));
                    let path = if explicit {
                        format!("spec.searchSpace[{index}].params.{name}.float.steps")
                    } else {
                        format!("spec.searchSpace[{index}].params.{name}")
                    };
                    errors.push(FieldError::new(
                        path,
                        format!(
                            "the grid algorithm cannot enumerate the continuous domain of {}.{name}; give it float.steps, a categorical list, or fix it",
                            family.family
                        ),
                    ));
                }
            }
        }
    }
    Space { families }
}

fn check_warm_start(spec: &StudySpec, errors: &mut Vec<FieldError>) {
    let Some(warm) = &spec.warm_start else { return };
    let task = effective_task(spec);
    for (i, study) in warm.studies.iter().enumerate() {
        if let Some(problem) = dns_label_problem(study, MAX_STUDY_NAME_LEN) {
            errors.push(FieldError::new(
                format!("spec.warmStart.studies[{i}]"),
                problem,
            ));
        }
    }
    for (i, configuration) in warm.configurations.iter().enumerate() {
        let at = format!("spec.warmStart.configurations[{i}]");
        let family = configuration.family;
        if !family.supports(task) {
            errors.push(FieldError::new(
                format!("{at}.family"),
                unsupported_family_message(family, task),
            ));
            continue;
        }
        for (name, value) in &configuration.params {
            let path = format!("{at}.params.{name}");
            match family.param(name) {
                None => errors.push(unknown_param(&path, family, name)),
                Some(param) => {
                    if let Some(problem) = value_problem(value, &param.limits.to_domain()) {
                        errors.push(FieldError::new(path, problem));
                    }
                }
            }
        }
    }
}

fn unsupported_family_message(family: Family, task: Task) -> String {
    match (family, task) {
        (Family::Linear, _) => {
            "linear is linear regression and cannot classify; use logistic for classification"
                .to_string()
        }
        (Family::Logistic, _) => {
            "logistic is a classifier and cannot do regression; use linear for regression"
                .to_string()
        }
        _ => format!("{family} does not support this task"),
    }
}

fn unknown_param(path: &str, family: Family, name: &str) -> FieldError {
    let known: Vec<&str> = family.params().iter().map(|p| p.name).collect();
    FieldError::new(
        path,
        format!(
            "unknown hyper-parameter '{name}' for family {family}; known: {}",
            known.join(", ")
        ),
    )
}

/// Why `domain` is not a valid search domain inside `limits`, if it is not.
fn domain_problem(domain: &Domain, limits: &Domain) -> Option<String> {
    match (domain, limits) {
        (
            Domain::Float { low, high, log, .. },
            Domain::Float {
                low: min,
                high: max,
                ..
            },
        ) => {
            if !low.is_finite() || !high.is_finite() {
                return Some("low and high must be finite numbers".into());
            }
            if low >= high {
                return Some(format!("low ({low}) must be less than high ({high})"));
            }
            if *log && *low <= 0.0 {
                return Some(format!("a log domain needs low > 0, got {low}"));
            }
            if low < min || high > max {
                return Some(format!(
                    "[{low}, {high}] leaves the accepted range [{min}, {max}]"
                ));
            }
            None
        }
        (
            Domain::Int { low, high, log },
            Domain::Int {
                low: min,
                high: max,
                ..
            },
        ) => {
            if low >= high {
                return Some(format!("low ({low}) must be less than high ({high})"));
            }
            if *log && *low <= 0 {
                return Some(format!("a log domain needs low > 0, got {low}"));
            }
            if low < min || high > max {
                return Some(format!(
                    "[{low}, {high}] leaves the accepted range [{min}, {max}]"
                ));
            }
            None
        }
        (Domain::Categorical { values }, limits) => {
            if values.is_empty() {
                return Some("categorical.values must list at least one value".into());
            }
            let mut seen = Vec::new();
            for value in values {
                if seen.contains(&value) {
                    return Some(format!("categorical value {value} is listed twice"));
                }
                seen.push(value);
                if let Some(problem) = value_problem(value, limits) {
                    return Some(format!("categorical value {value}: {problem}"));
                }
            }
            None
        }
        (Domain::Float { .. }, Domain::Int { .. }) => {
            Some("this hyper-parameter takes integers; use an int domain".into())
        }
        (Domain::Int { .. }, Domain::Float { .. }) => {
            Some("this hyper-parameter takes real numbers; use a float domain".into())
        }
        (_, Domain::Categorical { values }) => Some(format!(
            "this hyper-parameter takes one of {}; use a categorical domain",
            list(values)
        )),
    }
}

/// Why `value` is not accepted by `limits`, if it is not.
fn value_problem(value: &ParamValue, limits: &Domain) -> Option<String> {
    if limits.contains(value) {
        return None;
    }
    Some(match limits {
        Domain::Float { low, high, .. } => {
            format!("{value} is outside the accepted range [{low}, {high}]")
        }
        Domain::Int { low, high, .. } => match value.as_i64() {
            Some(_) => format!("{value} is outside the accepted range [{low}, {high}]"),
            None => format!("{value} is not an integer; use a whole number in [{low}, {high}]"),
        },
        Domain::Categorical { values } => {
            format!("{value} is not one of {}", list(values))
        }
    })
}

fn list(values: &[ParamValue]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `name` is not a DNS-1123 label of at most `max_len` characters, if it is not.
pub fn dns_label_problem(name: &str, max_len: usize) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > max_len {
        return Some(format!(
            "'{name}' is {} characters; use at most {max_len}",
            name.len()
        ));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let valid_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_chars || !valid_ends {
        return Some(format!(
            "'{name}' is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    None
}
