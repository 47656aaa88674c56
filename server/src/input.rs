//! Request payloads to column batches. Every rejection names the offending field and what was
//! expected, so a client can fix its request without reading the server's code.

use flywheel_core::model_card::{ColumnKind, InputColumn};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::{ColumnData, Columns, ModelSpec};

fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Numeric => "numeric",
        ColumnKind::Categorical => "categorical",
        ColumnKind::Boolean => "boolean",
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    if text.len() <= 40 {
        format!("{kind} ({text})")
    } else {
        kind.to_string()
    }
}

fn empty_columns(spec: &ModelSpec, rows: usize) -> Vec<ColumnData> {
    spec.card
        .inputs
        .iter()
        .map(|c| match c.kind {
            ColumnKind::Categorical => ColumnData::Str(Vec::with_capacity(rows)),
            ColumnKind::Numeric | ColumnKind::Boolean => ColumnData::F32(Vec::with_capacity(rows)),
        })
        .collect()
}

fn to_f32(column: &InputColumn, number: f64, field: &str) -> Result<f32, ApiError> {
    let value = number as f32;
    if !value.is_finite() {
        return Err(ApiError::field(
            field,
            format!(
                "column '{}' is {}: {number} is outside the float32 range",
                column.name,
                kind_name(column.kind)
            ),
        ));
    }
    Ok(value)
}

fn null_error(column: &InputColumn, field: &str) -> ApiError {
    ApiError::field(
        field,
        format!(
            "column '{}' does not accept missing values (null): the model was trained without them",
            column.name
        ),
    )
}

/// Appends one JSON cell of `column` to `out`.
fn push_cell(
    column: &InputColumn,
    value: &Value,
    out: &mut ColumnData,
    field: &str,
) -> Result<(), ApiError> {
    match (column.kind, value, out) {
        (_, Value::Null, _) if !column.nullable => Err(null_error(column, field)),
        (ColumnKind::Numeric | ColumnKind::Boolean, Value::Null, ColumnData::F32(v)) => {
            v.push(f32::NAN);
            Ok(())
        }
        (ColumnKind::Categorical, Value::Null, ColumnData::Str(v)) => {
            v.push(String::new());
            Ok(())
        }
        (ColumnKind::Numeric, Value::Number(n), ColumnData::F32(v)) => {
            // serde_json refuses overflowing literals (1e999) while parsing, so as_f64 is finite.
            let number = n.as_f64().unwrap_or(f64::NAN);
            v.push(to_f32(column, number, field)?);
            Ok(())
        }
        (ColumnKind::Boolean, Value::Bool(b), ColumnData::F32(v)) => {
            v.push(if *b { 1.0 } else { 0.0 });
            Ok(())
        }
        (ColumnKind::Categorical, Value::String(s), ColumnData::Str(v)) => {
            v.push(s.clone());
            Ok(())
        }
        (kind, other, _) => {
            let expected = match kind {
                ColumnKind::Numeric => "a number",
                ColumnKind::Categorical => "a string",
                ColumnKind::Boolean => "true or false",
            };
            let null = if column.nullable { " or null" } else { "" };
            Err(ApiError::field(
                field,
                format!(
                    "column '{}' is {}: expected {expected}{null}, got {}",
                    column.name,
                    kind_name(kind),
                    describe(other)
                ),
            ))
        }
    }
}

fn check_rows(rows: usize, max: usize, field: &str, what: &str) -> Result<(), ApiError> {
    if rows == 0 {
        return Err(ApiError::field(field, format!("{what} must not be empty")));
    }
    if rows > max {
        return Err(ApiError::field(
            field,
            format!("at most {max} {what} are accepted per request, got {rows} (--max-instances)"),
        ));
    }
    Ok(())
}

/// KServe V1: `instances` is a list of objects keyed by raw column name, or of arrays holding
/// the columns in the card's order.
pub fn from_instances(
    spec: &ModelSpec,
    body: &Value,
    max_instances: usize,
) -> Result<Columns, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::field(
            "body",
            format!(
                "expected an object {{\"instances\": [...]}}, got {}",
                describe(body)
            ),
        ));
    };
    if let Some(key) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "instances" | "parameters"))
    {
        return Err(ApiError::field(
            key.as_str(),
            format!(
                "unknown field '{key}': a V1 request holds \"instances\" (and optionally \"parameters\")"
            ),
        ));
    }
    let instances = match body.get("instances") {
        Some(Value::Array(instances)) => instances,
        Some(other) => {
            return Err(ApiError::field(
                "instances",
                format!("expected an array of instances, got {}", describe(other)),
            ));
        }
        None => return Err(ApiError::field("instances", "missing field 'instances'")),
    };
    check_rows(instances.len(), max_instances, "instances", "instances")?;
    let columns = &spec.card.inputs;
    let mut data = empty_columns(spec, instances.len());
    for (i, instance) in instances.iter().enumerate() {
        match instance {
            Value::Object(map) => push_object(spec, map, i, &mut data)?,
            Value::Array(values) => {
                if values.len() != columns.len() {
                    return Err(ApiError::field(
                        format!("instances[{i}]"),
                        format!(
                            "expected {} values in the order [{}], got {}",
                            columns.len(),
                            column_list(spec),
                            values.len()
                        ),
                    ));
                }
                for (j, ((column, value), out)) in
                    columns.iter().zip(values).zip(&mut data).enumerate()
                {
                    push_cell(column, value, out, &format!("instances[{i}][{j}]"))?;
                }
            }
            other => {
                return Err(ApiError::field(
                    format!("instances[{i}]"),
                    format!(
                        "expected an object keyed by column name or an array of {} values, got {}",
                        columns.len(),
                        describe(other)
                    ),
                ));
            }
        }
    }
    Ok(Columns {
        rows: instances.len(),
        data,
    })
}

fn column_list(spec: &ModelSpec) -> String {
    spec.card
        .inputs
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_object(
    spec: &ModelSpec,
    map: &Map<String, Value>,
    i: usize,
    data: &mut [ColumnData],
) -> Result<(), ApiError> {
    let columns = &spec.card.inputs;
    if let Some(key) = map.keys().find(|k| !columns.iter().any(|c| &c.name == *k)) {
        return Err(ApiError::field(
            format!("instances[{i}].{key}"),
            format!(
                "unknown column '{key}'; the model takes [{}]",
                column_list(spec)
            ),
        ));
    }
    for (column, out) in columns.iter().zip(data.iter_mut()) {
        let field = format!("instances[{i}].{}", column.name);
        let Some(value) = map.get(&column.name) else {
            return Err(ApiError::field(
                field,
                format!(
                    "missing column '{}' ({}{})",
                    column.name,
                    kind_name(column.kind),
                    if column.nullable {
                        "; send null for a missing value"
                    } else {
                        ""
                    }
                ),
            ));
        };
        push_cell(column, value, out, &field)?;
    }
    Ok(())
}

/// Open Inference Protocol datatypes accepted for each column kind.
fn accepted_datatypes(kind: ColumnKind) -> &'static [&'static str] {
    match kind {
        ColumnKind::Numeric => &["FP32", "FP64", "INT64", "INT32"],
        ColumnKind::Boolean => &["BOOL", "FP32", "FP64", "INT64", "INT32"],
        ColumnKind::Categorical => &["BYTES"],
    }
}

pub const DATATYPES: &[&str] = &["BOOL", "INT32", "INT64", "FP32", "FP64", "BYTES"];

/// Flattens row-major nested `data` (allowed by the protocol) into `out`.
fn flatten<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// Open Inference Protocol V2: one tensor per raw column, named by column, shape `[N]` or `[N, 1]`.
pub fn from_tensors(
    spec: &ModelSpec,
    body: &Value,
    max_instances: usize,
) -> Result<Columns, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::field(
            "body",
            format!(
                "expected an inference request object, got {}",
                describe(body)
            ),
        ));
    };
    if let Some(key) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "parameters" | "inputs" | "outputs"))
    {
        return Err(ApiError::field(
            key.as_str(),
            format!(
                "unknown field '{key}': an inference request holds id, parameters, inputs and outputs"
            ),
        ));
    }
    let inputs = match body.get("inputs") {
        Some(Value::Array(inputs)) if !inputs.is_empty() => inputs,
        Some(Value::Array(_)) => return Err(ApiError::field("inputs", "inputs must not be empty")),
        Some(other) => {
            return Err(ApiError::field(
                "inputs",
                format!("expected an array of tensors, got {}", describe(other)),
            ));
        }
        None => return Err(ApiError::field("inputs", "missing field 'inputs'")),
    };
    let columns = &spec.card.inputs;
    let mut tensors: Vec<Option<(usize, Vec<&Value>)>> = vec![None; columns.len()];
    let mut rows: Option<(usize, usize)> = None;
    for (i, input) in inputs.iter().enumerate() {
        let at = |key: &str| format!("inputs[{i}].{key}");
        let Value::Object(tensor) = input else {
            return Err(ApiError::field(
                format!("inputs[{i}]"),
                format!(
                    "expected a tensor object {{name, shape, datatype, data}}, got {}",
                    describe(input)
                ),
            ));
        };
        if let Some(key) = tensor.keys().find(|k| {
            !matches!(
                k.as_str(),
                "name" | "shape" | "datatype" | "data" | "parameters"
            )
        }) {
            return Err(ApiError::field(
                at(key),
                format!(
                    "unknown field '{key}': a tensor holds name, shape, datatype, data and parameters"
                ),
            ));
        }
        let name = match tensor.get("name") {
            Some(Value::String(name)) => name,
            Some(other) => {
                return Err(ApiError::field(
                    at("name"),
                    format!("expected a string, got {}", describe(other)),
                ));
            }
            None => return Err(ApiError::field(at("name"), "missing field 'name'")),
        };
        let Some(index) = columns.iter().position(|c| &c.name == name) else {
            return Err(ApiError::field(
                at("name"),
                format!(
                    "unknown input '{name}'; the model takes [{}]",
                    column_list(spec)
                ),
            ));
        };
        if tensors[index].is_some() {
            return Err(ApiError::field(
                at("name"),
                format!("input '{name}' is given twice"),
            ));
        }
        let column = &columns[index];
        let shape = parse_shape(tensor.get("shape"), &at("shape"))?;
        let n = match shape.as_slice() {
            [n] | [n, 1] => *n,
            _ => {
                return Err(ApiError::field(
                    at("shape"),
                    format!("input '{name}' must have shape [N] or [N, 1], got {shape:?}"),
                ));
            }
        };
        let datatype = match tensor.get("datatype") {
            Some(Value::String(d)) => d.as_str(),
            Some(other) => {
                return Err(ApiError::field(
                    at("datatype"),
                    format!("expected a string, got {}", describe(other)),
                ));
            }
            None => return Err(ApiError::field(at("datatype"), "missing field 'datatype'")),
        };
        let accepted = accepted_datatypes(column.kind);
        if !accepted.contains(&datatype) {
            let known = if DATATYPES.contains(&datatype) {
                ""
            } else {
                "unknown datatype; "
            };
            return Err(ApiError::field(
                at("datatype"),
                format!(
                    "{known}input '{name}' is {}: expected datatype {}, got {datatype}",
                    kind_name(column.kind),
                    accepted.join(" or ")
                ),
            ));
        }
        let mut data = Vec::with_capacity(n);
        match tensor.get("data") {
            Some(value @ Value::Array(_)) => flatten(value, &mut data),
            Some(other) => {
                return Err(ApiError::field(
                    at("data"),
                    format!("expected an array, got {}", describe(other)),
                ));
            }
            None => return Err(ApiError::field(at("data"), "missing field 'data'")),
        }
        if data.len() != n {
            return Err(ApiError::field(
                at("data"),
                format!(
                    "shape {shape:?} holds {n} elements, but data has {}",
                    data.len()
                ),
            ));
        }
        if let Some((first, rows)) = rows {
            if rows != n {
                return Err(ApiError::field(
                    at("shape"),
                    format!(
                        "every input must have the same number of rows: '{}' has {rows}, '{name}' has {n}",
                        columns[first].name
                    ),
                ));
            }
        } else {
            check_rows(n, max_instances, &at("shape"), "rows")?;
            rows = Some((index, n));
        }
        check_datatype_values(datatype, &data, &at("data"))?;
        tensors[index] = Some((i, data));
    }
    let rows = rows.map(|(_, n)| n).unwrap_or(0);
    let mut out = empty_columns(spec, rows);
    for ((column, tensor), out) in columns.iter().zip(&tensors).zip(&mut out) {
        let Some((i, data)) = tensor else {
            return Err(ApiError::field(
                "inputs",
                format!(
                    "missing input '{}' ({}); the model takes [{}]",
                    column.name,
                    kind_name(column.kind),
                    column_list(spec)
                ),
            ));
        };
        for (j, value) in data.iter().enumerate() {
            let value = match (column.kind, value) {
                // BOOL tensors of a numeric-typed boolean column, and 0/1 numbers of a boolean one.
                (ColumnKind::Boolean, Value::Number(n)) => {
                    Value::Bool(n.as_f64().is_some_and(|x| x != 0.0))
                }
                _ => (*value).clone(),
            };
            push_cell(column, &value, out, &format!("inputs[{i}].data[{j}]"))?;
        }
    }
    Ok(Columns { rows, data: out })
}

fn parse_shape(value: Option<&Value>, field: &str) -> Result<Vec<usize>, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::field(field, "missing field 'shape'"));
    };
    let bad = || {
        ApiError::field(
            field,
            format!(
                "expected an array of non-negative integers, got {}",
                describe(value)
            ),
        )
    };
    let Value::Array(dims) = value else {
        return Err(bad());
    };
    dims.iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// The protocol types its data: FP32 data must be numbers, INT64 integers, BOOL booleans.
fn check_datatype_values(datatype: &str, data: &[&Value], field: &str) -> Result<(), ApiError> {
    for (j, value) in data.iter().enumerate() {
        let ok = match (datatype, value) {
            (_, Value::Null) => true,
            ("FP32" | "FP64", Value::Number(_)) => true,
            ("INT32" | "INT64", Value::Number(n)) => n.is_i64() || n.is_u64(),
            ("BOOL", Value::Bool(_)) => true,
            ("BYTES", Value::String(_)) => true,
            _ => false,
        };
        if !ok {
            let expected = match datatype {
                "FP32" | "FP64" => "numbers",
                "INT32" | "INT64" => "integers",
                "BOOL" => "true or false",
                _ => "strings",
            };
            return Err(ApiError::field(
                format!("{field}[{j}]"),
                format!(
                    "{datatype} data must be {expected}, got {}",
                    describe(value)
                ),
            ));
        }
    }
    Ok(())
}
