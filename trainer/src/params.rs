//! Hyper-parameters: the JSON object from `--params`, checked against the core catalogue (the
//! contract with the search engine) and completed with documented defaults.

use flywheel_core::search::space::{Family, ParamValue, Params, StaticDomain};

use crate::error::{Result, TrainerError};

/// Parses and validates `--params`, returning every catalogued parameter with a value.
pub fn resolve(family: Family, json: &str, budget: Option<u64>) -> Result<Params> {
    let given: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| TrainerError::bad_input(format!("--params is not a JSON object: {e}")))?;
    let mut params = Params::new();
    for (name, raw) in given {
        let Some(spec) = family.param(&name) else {
            let known: Vec<&str> = family.params().iter().map(|spec| spec.name).collect();
            return Err(TrainerError::bad_input(format!(
                "unknown hyper-parameter {name:?} for family {family} (known: {})",
                known.join(", ")
            )));
        };
        let value: ParamValue = serde_json::from_value(raw.clone()).map_err(|_| {
            TrainerError::bad_input(format!(
                "hyper-parameter {name:?} has an unusable value {raw}"
            ))
        })?;
        let value = coerce(spec.limits, value);
        if !spec.limits.to_domain().contains(&value) {
            return Err(TrainerError::bad_input(format!(
                "hyper-parameter {name:?} = {value} is outside its limits {}",
                describe(spec.limits)
            )));
        }
        params.insert(name, value);
    }
    for spec in family.params() {
        params
            .entry(spec.name.to_string())
            .or_insert_with(|| spec.default_value.to_value());
    }
    if let (Some(resource), Some(budget)) = (family.resource_param(), budget) {
        if budget == 0 {
            return Err(TrainerError::bad_input("--budget must be at least 1"));
        }
        let cap = i64::try_from(budget).unwrap_or(i64::MAX);
        if let Some(value) = params.get_mut(resource)
            && value.as_i64().is_some_and(|v| v > cap)
        {
            *value = ParamValue::Int(cap);
        }
    }
    Ok(params)
}

/// Integer-valued floats for integer parameters (`3.0` from a YAML writer) become integers, so
/// the model card records what was trained.
fn coerce(limits: StaticDomain, value: ParamValue) -> ParamValue {
    match (limits, &value) {
        (StaticDomain::Int { .. }, ParamValue::Float(_)) => {
            value.as_i64().map(ParamValue::Int).unwrap_or(value)
        }
        _ => value,
    }
}

fn describe(limits: StaticDomain) -> String {
    match limits {
        StaticDomain::Float { low, high, .. } => format!("[{low}, {high}]"),
        StaticDomain::Int { low, high, .. } => format!("integers [{low}, {high}]"),
        StaticDomain::Categorical(values) => format!("one of {}", values.join(", ")),
    }
}

/// Typed access to resolved parameters; `resolve` guarantees presence and type.
pub fn float(params: &Params, name: &str) -> f64 {
    params.get(name).and_then(ParamValue::as_f64).unwrap_or(0.0)
}

pub fn int(params: &Params, name: &str) -> i64 {
    params.get(name).and_then(ParamValue::as_i64).unwrap_or(1)
}

pub fn string<'a>(params: &'a Params, name: &str) -> &'a str {
    params.get(name).and_then(ParamValue::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_names_are_checked() {
        let params = resolve(Family::RandomForest, r#"{"max_depth": 5.0}"#, Some(10)).unwrap();
        assert_eq!(params["max_depth"], ParamValue::Int(5));
        assert_eq!(params["n_estimators"], ParamValue::Int(10));
        assert_eq!(params["max_features"], ParamValue::Float(0.5));
        let err = resolve(Family::RandomForest, r#"{"depth": 5}"#, None).unwrap_err();
        assert!(err.to_string().contains("\"depth\""), "{err}");
        let err = resolve(Family::DecisionTree, r#"{"max_depth": 0}"#, None).unwrap_err();
        assert!(err.to_string().contains("\"max_depth\""), "{err}");
        let err = resolve(Family::Logistic, r#"{"penalty": "l3"}"#, None).unwrap_err();
        assert!(err.to_string().contains("penalty"), "{err}");
        assert!(resolve(Family::Logistic, "[1]", None).is_err());
    }
}
