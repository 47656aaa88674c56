//! Checks a manifest against a CRD's OpenAPI v3 schema the way the API server does before it
//! stores an object: types, required fields, enums, bounds, and unknown fields (which the API
//! server prunes silently — a typo like `budjet:` would vanish, so here it is an error).

use flywheel_core::validate::FieldError;
use serde_json::{Map, Value};

/// Every schema violation of `value`, with field paths starting at `path`.
pub fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && has_type(schema)
        {
            errors.push(FieldError::new(path, "must not be null"));
        }
        return;
    }
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        && !has_type(schema)
    {
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(FieldError::new(
                path,
                format!("expected an integer or a string, got {}", describe(value)),
            ));
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => check_object(schema, value, path, errors),
        Some("array") => check_array(schema, value, path, errors),
        Some("string") => match value.as_str() {
            Some(text) => check_string(schema, text, path, errors),
            None if value.is_boolean() => errors.push(FieldError::new(
                path,
                format!(
                    "expected a string, got the boolean {value} (YAML reads unquoted y, yes, on, true as booleans; quote the value)"
                ),
            )),
            None => errors.push(type_error(path, "a string", value)),
        },
        Some("integer") => check_integer(schema, value, path, errors),
        Some("number") => match value.as_f64() {
            Some(number) => check_bounds(schema, number, path, errors),
            None => errors.push(type_error(path, "a number", value)),
        },
        Some("boolean") if !value.is_boolean() => {
            errors.push(type_error(path, "true or false", value));
        }
        _ => {}
    }
}

fn has_type(schema: &Value) -> bool {
    schema.get("type").is_some()
}

fn check_object(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(object) = value.as_object() else {
        errors.push(type_error(path, "an object", value));
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                errors.push(FieldError::new(
                    join(path, name),
                    "required field is missing",
                ));
            }
        }
    }
    for (name, child) in object {
        let child_path = join(path, name);
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(child_schema), _) => check(child_schema, child, &child_path, errors),
            (None, Some(additional_schema)) if additional_schema.is_object() => {
                check(additional_schema, child, &child_path, errors)
            }
            _ if preserve => {}
            _ => errors.push(unknown_field(&child_path, name, properties)),
        }
    }
}

fn unknown_field(path: &str, name: &str, properties: Option<&Map<String, Value>>) -> FieldError {
    let known: Vec<&str> = properties
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let hint = closest(name, &known)
        .map(|candidate| format!("; did you mean '{candidate}'?"))
        .unwrap_or_default();
    let list = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    FieldError::new(
        path,
        format!("unknown field '{name}'{hint} (known fields: {list})"),
    )
}

/// The known name within edit distance 2 of `name`, if any: most unknown fields are typos.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| {
            (
                edit_distance(&name.to_lowercase(), &candidate.to_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn check_array(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(items) = value.as_array() else {
        errors.push(type_error(path, "a list", value));
        return;
    };
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errors.push(FieldError::new(
            path,
            format!("must list at least {min} item(s)"),
        ));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && (items.len() as u64) > max
    {
        errors.push(FieldError::new(
            path,
            format!("must list at most {max} items"),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn check_string(schema: &Value, text: &str, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|v| v.as_str() == Some(text))
    {
        let choices: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        let hint = closest(text, &choices)
            .map(|candidate| format!("; did you mean '{candidate}'?"))
            .unwrap_or_default();
        errors.push(FieldError::new(
            path,
            format!("'{text}' is not one of {}{hint}", choices.join(", ")),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && (text.chars().count() as u64) < min
    {
        errors.push(FieldError::new(
            path,
            format!("must be at least {min} character(s)"),
        ));
    }
}

fn check_integer(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let number = match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.as_f64().unwrap_or(f64::NAN),
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
            n.as_f64().unwrap_or(f64::NAN)
        }
        _ => {
            errors.push(type_error(path, "a whole number", value));
            return;
        }
    };
    let format_range = match schema.get("format").and_then(Value::as_str) {
        Some("uint32") => Some((0.0, f64::from(u32::MAX))),
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        Some("uint64") => Some((0.0, u64::MAX as f64)),
        Some("uint8") => Some((0.0, 255.0)),
        Some("uint16") => Some((0.0, 65535.0)),
        _ => None,
    };
    if let Some((low, high)) = format_range
        && (number < low || number > high)
    {
        errors.push(FieldError::new(
            path,
            format!("{number} is out of range [{low}, {high}]"),
        ));
        return;
    }
    check_bounds(schema, number, path, errors);
}

fn check_bounds(schema: &Value, number: f64, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        errors.push(FieldError::new(
            path,
            format!("must be at least {min}, got {number}"),
        ));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        errors.push(FieldError::new(
            path,
            format!("must be at most {max}, got {number}"),
        ));
    }
}

fn type_error(path: &str, expected: &str, value: &Value) -> FieldError {
    FieldError::new(
        path,
        format!("expected {expected}, got {}", describe(value)),
    )
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string '{s}'"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn suggests_the_closest_known_field() {
        assert_eq!(closest("budjet", &["budget", "dataset"]), Some("budget"));
        assert_eq!(closest("zzzzzz", &["budget"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn reports_types_bounds_required_and_unknown_fields() {
        let schema = json!({
            "type": "object",
            "required": ["n"],
            "properties": {
                "n": {"type": "integer", "format": "uint32", "minimum": 1.0},
                "s": {"type": "string", "enum": ["a", "b"]},
                "m": {"type": "object", "additionalProperties": {"type": "number"}}
            }
        });
        let mut errors = Vec::new();
        check(
            &schema,
            &json!({"s": "c", "x": 1, "m": {"k": "v"}}),
            "spec",
            &mut errors,
        );
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.n", "spec.m.k", "spec.s", "spec.x"]);
        errors.clear();
        check(&schema, &json!({"n": 0}), "spec", &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("at least 1"));
        errors.clear();
        check(&schema, &json!({"n": 2.5}), "spec", &mut errors);
        assert!(errors[0].message.contains("whole number"));
    }
}
