//! Semantic validation of a Study: the rules a CRD schema cannot express (hyper-parameter names
//! per family, domains inside what a model accepts, grids that are finite, ...). The operator
//! turns these errors into a status condition; `flywheel validate` and `flywheel run` print them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::{AlgorithmName, DataFormat, Metric, ModelDeployment, Study, StudySpec};
use crate::retraining;
use crate::search::space::{Domain, Family, ParamValue, Params, Task};
use crate::search::{FamilySpace, Space, effective_task};
use crate::study::trial_name;

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

/// Every semantic error of a Study, metadata included.
pub fn validate_study(study: &Study) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match study.metadata.name.as_deref() {
        None | Some("") => errors.push(FieldError::new(
            "metadata.name",
            "a Study needs a name; set metadata.name",
        )),
        Some(name) => errors.extend(study_name_errors(name, study.spec.budget.max_trials)),
    }
    errors.extend(validate_spec(&study.spec));
    errors
}

/// Every problem with a ModelDeployment's name and the names derived from it: the API server's
/// rule, the Service and Deployment named after it, and the retraining studies it starts.
pub fn validate_deployment(md: &ModelDeployment) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = md.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        errors.extend(deployment_name_errors("metadata.name", name));
    }
    let study = md
        .spec
        .model
        .as_ref()
        .and_then(|model| model.study.as_ref());
    if let (Some(policy), Some(study)) = (&md.spec.retraining, study) {
        // Without its own budget a retraining study takes its parent's, unknown here: the
        // parent's own check already keeps its trial names in bounds, so check one-digit indexes.
        let max_trials = policy.budget.as_ref().map_or(1, |b| b.max_trials);
        let child = retraining::child_name(study, MAX_CHECKED_GENERATION);
        let last = trial_name(&child, max_trials.saturating_sub(1));
        if last.len() > MAX_JOB_NAME_LEN {
            let max = study.len().saturating_sub(last.len() - MAX_JOB_NAME_LEN);
            errors.push(FieldError::new(
                "spec.model.study",
                format!(
                    "must be at most {max} characters so that the trial Job names of its retraining studies fit the {MAX_JOB_NAME_LEN} characters of a label value ('{last}' is {} at generation {MAX_CHECKED_GENERATION}); shorten the study's name",
                    last.len()
                ),
            ));
        }
    }
    errors
}

/// Every problem with a Trial's name: the API server's rule, and its Job's name, which is the
/// same.
pub fn trial_name_errors(name: &str) -> Vec<FieldError> {
    let mut errors = invalid_name("metadata.name", name, dns1123_subdomain_errors(name));
    if errors.is_empty() && name.len() > MAX_JOB_NAME_LEN {
        errors.push(FieldError::new(
            "metadata.name",
            format!(
                "must be at most {MAX_JOB_NAME_LEN} characters because the trial's Job takes this name and the Job controller copies it into the label batch.kubernetes.io/job-name ('{name}' is {}); shorten it",
                name.len()
            ),
        ));
    }
    errors
}

/// Every problem with a Study's name: the API server's rule, then room for the names derived
/// from it (`<study>-<index>` for trials and their Jobs).
pub fn study_name_errors(name: &str, max_trials: u32) -> Vec<FieldError> {
    let errors = invalid_name("metadata.name", name, dns1123_subdomain_errors(name));
    if !errors.is_empty() {
        return errors;
    }
    let last = trial_name(name, max_trials.saturating_sub(1));
    if last.len() <= MAX_JOB_NAME_LEN {
        return Vec::new();
    }
    let max = name.len() - (last.len() - MAX_JOB_NAME_LEN);
    vec![FieldError::new(
        "metadata.name",
        format!(
            "must be at most {max} characters so that trial Job names (<study>-<index>) fit the {MAX_JOB_NAME_LEN} characters of a label value ('{last}' is {}); shorten the name or lower spec.budget.maxTrials",
            last.len()
        ),
    )]
}

/// The longest Job name: the Job controller copies it into its pods' `batch.kubernetes.io/job-name`
/// and `job-name` labels, and a label value holds at most 63 characters, so the API server
/// rejects a longer one. A trial's Job is named after the trial.
pub const MAX_JOB_NAME_LEN: usize = MAX_LABEL_LEN;

/// The retraining generation whose study names [`validate_deployment`] makes room for.
pub const MAX_CHECKED_GENERATION: u32 = 99;

/// Every semantic error of a Study spec.
pub fn validate_spec(spec: &StudySpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_dataset(spec, &mut errors);
    check_objective(spec, &mut errors);
    let _ = resolve_space(spec, &mut errors);
    check_warm_start(spec, &mut errors);
    if let Some(promotion) = &spec.promotion {
        errors.extend(deployment_name_errors(
            "spec.promotion.deployment",
            &promotion.deployment,
        ));
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
        errors.extend(invalid_name(
            &format!("spec.warmStart.studies[{i}]"),
            study,
            dns1123_subdomain_errors(study),
        ));
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

/// A ModelDeployment's name problems at `path`: the API server's rule for it, and the DNS-1035
/// label its Service (and Deployment) of the same name need.
fn deployment_name_errors(path: &str, name: &str) -> Vec<FieldError> {
    let errors = invalid_name(path, name, dns1123_subdomain_errors(name));
    if !errors.is_empty() {
        return errors;
    }
    let mut errors = invalid_name(path, name, dns1035_label_errors(name));
    for error in &mut errors {
        error.message.push_str(
            "; the ModelDeployment's Service takes this name, and Service names are DNS-1035 labels",
        );
    }
    errors
}

/// One `Invalid value` error per message, worded as the API server words them
/// (`metadata.name: Invalid value: "Bad_Name": ...`).
/// One error per message of a name rule, in the API server's `Invalid value: "…": …` form.
pub fn invalid_name(path: &str, value: &str, messages: Vec<String>) -> Vec<FieldError> {
    messages
        .into_iter()
        .map(|message| FieldError::new(path, format!("Invalid value: {value:?}: {message}")))
        .collect()
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

/// The longest DNS-1123 subdomain, the limit on every Kubernetes object name.
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// The longest DNS label (Service names, label values).
pub const MAX_LABEL_LEN: usize = 63;

/// Why `value` is not a DNS-1123 subdomain, the API server's rule for the names of Studies,
/// Trials, ModelDeployments and Jobs: apimachinery's `IsDNS1123Subdomain`, messages word for
/// word, so `flywheel validate` prints what `kubectl apply` would. Empty when valid.
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > MAX_SUBDOMAIN_LEN {
        errors.push(format!(
            "must be no more than {MAX_SUBDOMAIN_LEN} characters"
        ));
    }
    if !value.split('.').all(|label| is_label(label, false)) {
        errors.push(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*')"
        ));
    }
    errors
}

/// Why `value` is not a DNS-1035 label, the API server's rule for Service names
/// (apimachinery's `IsDNS1035Label`, messages word for word). Empty when valid.
pub fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > MAX_LABEL_LEN {
        errors.push(format!("must be no more than {MAX_LABEL_LEN} characters"));
    }
    if !is_label(value, true) {
        // The two spaces before "or" are apimachinery's, kept so the text matches kubectl's.
        errors.push(format!(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"
        ));
    }
    errors
}

/// Whether `value` matches the DNS label pattern (any length): lowercase alphanumerics and '-',
/// alphanumeric at both ends, a letter first when `letter_first` (DNS-1035).
fn is_label(value: &str, letter_first: bool) -> bool {
    let bytes = value.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let first_ok = if letter_first {
        first.is_ascii_lowercase()
    } else {
        alphanumeric(first)
    };
    first_ok && alphanumeric(last) && bytes.iter().all(|&b| alphanumeric(b) || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    #[test]
    fn subdomains_follow_apimachinery() {
        for valid in [
            "a",
            "0",
            "churn",
            "churn-2026",
            "my.study",
            "a-b.c-d.e",
            "9lives",
        ] {
            assert!(dns1123_subdomain_errors(valid).is_empty(), "{valid}");
        }
        for invalid in [
            "", "Bad_Name", "-a", "a-", "a..b", ".a", "a.", "a_b", "a.-b", "é",
        ] {
            assert_eq!(
                dns1123_subdomain_errors(invalid),
                vec![SUBDOMAIN_MESSAGE.to_string()],
                "{invalid:?}"
            );
        }
        assert!(dns1123_subdomain_errors(&"a".repeat(253)).is_empty());
        assert_eq!(
            dns1123_subdomain_errors(&"a".repeat(254)),
            vec!["must be no more than 253 characters".to_string()]
        );
        assert_eq!(
            dns1123_subdomain_errors(&format!("A{}", "a".repeat(253))).len(),
            2
        );
    }

    #[test]
    fn dns1035_labels_start_with_a_letter_and_have_no_dots() {
        assert!(dns1035_label_errors("penguins-2").is_empty());
        for invalid in ["9lives", "my.model", "a-", "Model"] {
            let errors = dns1035_label_errors(invalid);
            assert_eq!(errors.len(), 1, "{invalid}");
            assert!(
                errors[0].starts_with("a DNS-1035 label must consist"),
                "{invalid}"
            );
        }
        assert_eq!(
            dns1035_label_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn a_bad_study_name_reads_like_the_api_server() {
        let errors = study_name_errors("Bad_Name", 12);
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec![format!(
                "metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_MESSAGE}"
            )]
        );
    }

    #[test]
    fn study_names_leave_room_for_the_last_trial_index() {
        // 12 trials: the last Job is <name>-11, three characters past the name.
        assert!(study_name_errors(&"a".repeat(60), 12).is_empty());
        let errors = study_name_errors(&"a".repeat(61), 12);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "metadata.name");
        assert!(
            errors[0]
                .message
                .starts_with("must be at most 60 characters so that trial Job names"),
            "{}",
            errors[0].message
        );
        assert!(errors[0].message.contains("is 64"), "{}", errors[0].message);
        // One trial: only "-0" is added.
        assert!(study_name_errors(&"a".repeat(61), 1).is_empty());
        assert!(study_name_errors(&"a".repeat(57), 100_000).is_empty());
        assert_eq!(study_name_errors(&"a".repeat(57), 100_001).len(), 1);
    }

    #[test]
    fn trial_names_must_fit_their_job() {
        assert!(trial_name_errors(&format!("{}-9", "a".repeat(61))).is_empty());
        let errors = trial_name_errors(&format!("{}-10", "a".repeat(61)));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .starts_with("must be at most 63 characters")
        );
        assert!(
            trial_name_errors("Trial_0")[0]
                .message
                .contains(SUBDOMAIN_MESSAGE)
        );
    }

    #[test]
    fn deployment_names_are_checked_for_their_service() {
        assert!(deployment_name_errors("metadata.name", "penguins").is_empty());
        let errors = deployment_name_errors("metadata.name", "9lives");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .starts_with("Invalid value: \"9lives\": a DNS-1035 label must consist"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[0]
                .message
                .ends_with("Service names are DNS-1035 labels")
        );
        // Not a subdomain at all: the API server's own message, once.
        let errors = deployment_name_errors("spec.promotion.deployment", "My Model");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains(SUBDOMAIN_MESSAGE));
    }
}
