//! Request payloads to column batches. Every rejection names the offending field and what was
//! expected, so a client can fix its request without reading the server's code.

use std::borrow::Cow;

use flywheel_core::model_card::{
    BOOLEAN_SPELLINGS, ColumnKind, InputColumn, boolean_from_number, boolean_from_text,
};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::{ColumnData, Columns, ModelSpec};

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
                column.kind.as_str()
            ),
        ));
    }
    Ok(value)
}

/// A boolean column's cell, on every route (V1 objects and arrays, V2 tensors of any datatype,
/// and the fast path through [`boolean_cell`]): the spellings of [`BOOLEAN_SPELLINGS`], as the
/// float the model takes. `None` for anything else, including null (the caller's business).
fn boolean_value(value: &Value) -> Option<f32> {
    let boolean = match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().and_then(boolean_from_number),
        Value::String(s) => boolean_from_text(s),
        _ => None,
    };
    boolean.map(boolean_f32)
}

fn boolean_f32(b: bool) -> f32 {
    if b { 1.0 } else { 0.0 }
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
        (ColumnKind::Boolean, value, ColumnData::F32(v)) => {
            v.push(boolean_value(value).ok_or_else(|| mismatch(column, value, field))?);
            Ok(())
        }
        (ColumnKind::Categorical, Value::String(s), ColumnData::Str(v)) => {
            v.push(s.clone());
            Ok(())
        }
        (_, other, _) => Err(mismatch(column, other, field)),
    }
}

fn mismatch(column: &InputColumn, value: &Value, field: &str) -> ApiError {
    let expected = match column.kind {
        ColumnKind::Numeric => "a number",
        ColumnKind::Categorical => "a string",
        ColumnKind::Boolean => BOOLEAN_SPELLINGS,
    };
    let null = if column.nullable { " or null" } else { "" };
    ApiError::field(
        field,
        format!(
            "column '{}' is {}: expected {expected}{null}, got {}",
            column.name,
            column.kind.as_str(),
            describe(value)
        ),
    )
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
                    column.kind.as_str(),
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
        ColumnKind::Boolean => &["BOOL", "FP32", "FP64", "INT64", "INT32", "BYTES"],
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
                    column.kind.as_str(),
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
        // A boolean column takes the one spelling table whatever the declared datatype (a BOOL
        // tensor of 0/1, BYTES of "true"): what `push_cell` checks below.
        if column.kind != ColumnKind::Boolean {
            check_datatype_values(datatype, &data, &at("data"))?;
        }
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
                    column.kind.as_str(),
                    column_list(spec)
                ),
            ));
        };
        for (j, value) in data.iter().enumerate() {
            push_cell(column, value, out, &format!("inputs[{i}].data[{j}]"))?;
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

/// A V2 request as the fast path reads it: typed fields borrowing from the body, without the
/// `serde_json::Value` tree (a map per tensor, a `String` per key) the reference path builds.
pub struct FastInfer<'a> {
    /// The request's `id`; `None` when absent or null.
    pub id: Option<Cow<'a, str>>,
    /// The names in `outputs`; `None` when absent or null.
    pub outputs: Option<Vec<Cow<'a, str>>>,
    pub columns: Columns,
}

/// The fast path of [`from_tensors`] for well-formed V2 bodies. It accepts exactly what
/// [`from_tensors`] accepts and builds the same columns; on anything else it returns `None` and
/// the caller runs the reference path on the same bytes, whose error names the field at fault.
/// So error quality lives in one place and the common case pays for no error bookkeeping.
pub fn fast_tensors<'a>(
    spec: &ModelSpec,
    body: &'a [u8],
    max_instances: usize,
) -> Option<FastInfer<'a>> {
    let FastRequest {
        id,
        inputs,
        outputs,
    } = serde_json::from_slice(body).ok()?;
    let columns = &spec.card.inputs;
    if inputs.is_empty() {
        return None;
    }
    let mut by_column: Vec<Option<Vec<Cell<'a>>>> = Vec::with_capacity(columns.len());
    by_column.resize_with(columns.len(), || None);
    let mut rows = None;
    for tensor in inputs {
        let index = columns.iter().position(|c| c.name == tensor.name)?;
        let column = &columns[index];
        let n = match tensor.shape.as_slice() {
            [n] | [n, 1] => usize::try_from(*n).ok()?,
            _ => return None,
        };
        let datatype = tensor.datatype.as_ref();
        if !accepted_datatypes(column.kind).contains(&datatype) || tensor.data.len() != n {
            return None;
        }
        match rows {
            Some(rows) if rows != n => return None,
            Some(_) => {}
            None if n == 0 || n > max_instances => return None,
            None => rows = Some(n),
        }
        if column.kind != ColumnKind::Boolean && !tensor.data.iter().all(|cell| cell.fits(datatype))
        {
            return None;
        }
        let slot = by_column.get_mut(index)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(tensor.data);
    }
    let rows = rows?;
    let mut data = Vec::with_capacity(columns.len());
    for (column, cells) in columns.iter().zip(by_column) {
        data.push(fast_column(column, cells?)?);
    }
    Some(FastInfer {
        id,
        outputs,
        columns: Columns { rows, data },
    })
}

/// One column's cells, converted as [`push_cell`] converts them; `None` where it would refuse.
fn fast_column(column: &InputColumn, cells: Vec<Cell<'_>>) -> Option<ColumnData> {
    let nullable = column.nullable;
    match column.kind {
        ColumnKind::Numeric => cells
            .into_iter()
            .map(|cell| match cell {
                Cell::Null => nullable.then_some(f32::NAN),
                Cell::Number { value, .. } => Some(value as f32).filter(|v| v.is_finite()),
                Cell::Bool(_) | Cell::Str(_) => None,
            })
            .collect::<Option<Vec<f32>>>()
            .map(ColumnData::F32),
        ColumnKind::Boolean => cells
            .into_iter()
            .map(|cell| match cell {
                Cell::Null => nullable.then_some(f32::NAN),
                cell => boolean_cell(&cell),
            })
            .collect::<Option<Vec<f32>>>()
            .map(ColumnData::F32),
        ColumnKind::Categorical => cells
            .into_iter()
            .map(|cell| match cell {
                Cell::Null => nullable.then(String::new),
                Cell::Str(s) => Some(s.into_owned()),
                Cell::Number { .. } | Cell::Bool(_) => None,
            })
            .collect::<Option<Vec<String>>>()
            .map(ColumnData::Str),
    }
}

/// [`boolean_value`] for the fast path's cells: the same table.
fn boolean_cell(cell: &Cell<'_>) -> Option<f32> {
    let boolean = match cell {
        Cell::Null => None,
        Cell::Bool(b) => Some(*b),
        Cell::Number { value, .. } => boolean_from_number(*value),
        Cell::Str(s) => boolean_from_text(s),
    };
    boolean.map(boolean_f32)
}

/// One element of a tensor's `data`.
enum Cell<'a> {
    Null,
    Bool(bool),
    /// `integer`: written without fraction or exponent, as INT32/INT64 data must be.
    Number {
        value: f64,
        integer: bool,
    },
    Str(Cow<'a, str>),
}

impl Cell<'_> {
    /// Whether the element may appear in data of `datatype`, as [`check_datatype_values`] says.
    fn fits(&self, datatype: &str) -> bool {
        match (datatype, self) {
            (_, Cell::Null) => true,
            ("FP32" | "FP64", Cell::Number { .. }) => true,
            ("INT32" | "INT64", Cell::Number { integer, .. }) => *integer,
            ("BOOL", Cell::Bool(_)) => true,
            ("BYTES", Cell::Str(_)) => true,
            _ => false,
        }
    }
}

/// The fast path's body. Deserialized by hand rather than derived: a derived struct would also
/// accept a JSON array of its fields, which the reference path refuses.
struct FastRequest<'a> {
    id: Option<Cow<'a, str>>,
    inputs: Vec<FastTensor<'a>>,
    outputs: Option<Vec<Cow<'a, str>>>,
}

struct FastTensor<'a> {
    name: Cow<'a, str>,
    shape: Vec<u64>,
    datatype: Cow<'a, str>,
    data: Vec<Cell<'a>>,
}

/// A string borrowed from the body where it holds no escapes.
struct Text<'a>(Cow<'a, str>);

/// Only the fast path's own errors come out of these visitors, and it discards them.
fn refuse<E: de::Error>() -> E {
    E::custom("not on the fast path")
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum RequestKey {
    Id,
    Parameters,
    Inputs,
    Outputs,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TensorKey {
    Name,
    Shape,
    Datatype,
    Data,
    Parameters,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum OutputKey {
    Name,
    #[serde(other)]
    Other,
}

/// Stores `value` in `slot`, refusing a repeated key (the reference path keeps the last one).
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(refuse()),
    }
}

impl<'de> Deserialize<'de> for FastRequest<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequestVisitor;
        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = FastRequest<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an inference request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut id: Option<Option<Text<'de>>> = None;
                let mut parameters = None;
                let mut inputs = None;
                let mut outputs: Option<Option<Vec<OutputName<'de>>>> = None;
                while let Some(key) = map.next_key::<RequestKey>()? {
                    match key {
                        RequestKey::Id => once(&mut id, map.next_value()?)?,
                        RequestKey::Parameters => {
                            once(&mut parameters, map.next_value::<IgnoredAny>()?)?;
                        }
                        RequestKey::Inputs => once(&mut inputs, map.next_value()?)?,
                        RequestKey::Outputs => once(&mut outputs, map.next_value()?)?,
                    }
                }
                Ok(FastRequest {
                    id: id.flatten().map(|t| t.0),
                    inputs: inputs.ok_or_else(refuse)?,
                    outputs: outputs
                        .flatten()
                        .map(|names| names.into_iter().map(|n| n.0).collect()),
                })
            }
        }
        deserializer.deserialize_map(RequestVisitor)
    }
}

impl<'de> Deserialize<'de> for FastTensor<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TensorVisitor;
        impl<'de> Visitor<'de> for TensorVisitor {
            type Value = FastTensor<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a tensor object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name: Option<Text<'de>> = None;
                let mut shape = None;
                let mut datatype: Option<Text<'de>> = None;
                let mut data = None;
                let mut parameters = None;
                while let Some(key) = map.next_key::<TensorKey>()? {
                    match key {
                        TensorKey::Name => once(&mut name, map.next_value()?)?,
                        TensorKey::Shape => once(&mut shape, map.next_value()?)?,
                        TensorKey::Datatype => once(&mut datatype, map.next_value()?)?,
                        TensorKey::Data => once(&mut data, map.next_value::<Cells<'de>>()?.0)?,
                        TensorKey::Parameters => {
                            once(&mut parameters, map.next_value::<IgnoredAny>()?)?;
                        }
                    }
                }
                Ok(FastTensor {
                    name: name.ok_or_else(refuse)?.0,
                    shape: shape.ok_or_else(refuse)?,
                    datatype: datatype.ok_or_else(refuse)?.0,
                    data: data.ok_or_else(refuse)?,
                })
            }
        }
        deserializer.deserialize_map(TensorVisitor)
    }
}

/// An entry of `outputs`: its `name`; other keys are ignored, as the reference path does.
struct OutputName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for OutputName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OutputVisitor;
        impl<'de> Visitor<'de> for OutputVisitor {
            type Value = OutputName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an output object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name: Option<Text<'de>> = None;
                while let Some(key) = map.next_key::<OutputKey>()? {
                    match key {
                        OutputKey::Name => once(&mut name, map.next_value()?)?,
                        OutputKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(OutputName(name.ok_or_else(refuse)?.0))
            }
        }
        deserializer.deserialize_map(OutputVisitor)
    }
}

/// A tensor's `data`, nested arrays flattened row-major as [`flatten`] does.
struct Cells<'a>(Vec<Cell<'a>>);

/// Appends the elements of one (possibly nested) array to `out`.
struct CellsSeed<'o, 'a>(&'o mut Vec<Cell<'a>>);

impl<'de> Deserialize<'de> for Cells<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut cells = Vec::new();
        deserializer.deserialize_seq(CellsSeed(&mut cells))?;
        Ok(Cells(cells))
    }
}

impl<'de> Visitor<'de> for CellsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.0.reserve(hint);
        }
        while seq.next_element_seed(CellSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One element of `data`: a scalar, or a nested array whose elements are appended in order.
struct CellSeed<'o, 'a>(&'o mut Vec<Cell<'a>>);

impl<'de> DeserializeSeed<'de> for CellSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a scalar or an array")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(Cell::Null);
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Cell::Bool(v));
        Ok(())
    }
    // Integers convert to f64 as `serde_json::Number::as_f64` converts them.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(Cell::Number {
            value: v as f64,
            integer: true,
        });
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(Cell::Number {
            value: v as f64,
            integer: true,
        });
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(refuse());
        }
        self.0.push(Cell::Number {
            value: v,
            integer: false,
        });
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Cell::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push(Cell::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        CellsSeed(self.0).visit_seq(seq)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn spec() -> ModelSpec {
        crate::model::test_spec(
            "1",
            &[
                ("x", "numeric", false),
                ("m", "numeric", true),
                ("b", "boolean", false),
                ("c", "categorical", true),
            ],
        )
    }

    fn tensor(name: &str, datatype: &str, shape: Value, data: Value) -> Value {
        json!({"name": name, "datatype": datatype, "shape": shape, "data": data})
    }

    fn valid() -> Value {
        json!({"id": "r1", "parameters": {"content_type": "pd"}, "inputs": [
            tensor("x", "FP32", json!([2, 1]), json!([[1.5], [-2]])),
            tensor("m", "INT64", json!([2]), json!([null, 3])),
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [true, false],
             "parameters": {}},
            tensor("c", "BYTES", json!([2, 1]), json!(["a\"q", null])),
        ], "outputs": [{"name": "predictions", "extra": 1}]})
    }

    /// Equal columns, NaN (a missing value) equal to itself.
    fn same(a: &Columns, b: &Columns) -> bool {
        a.rows == b.rows
            && a.data.len() == b.data.len()
            && a.data.iter().zip(&b.data).all(|pair| match pair {
                (ColumnData::F32(x), ColumnData::F32(y)) => x
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(y.iter().map(|v| v.to_bits())),
                (x, y) => x == y,
            })
    }

    /// The fast path agrees with the reference path: same columns where it accepts a body, and
    /// it accepts nothing the reference path refuses.
    fn check(body: &Value, fast_expected: bool) {
        let bytes = serde_json::to_vec(body).unwrap();
        let spec = spec();
        let fast = fast_tensors(&spec, &bytes, 3);
        let reference = from_tensors(&spec, body, 3);
        match (&fast, &reference) {
            (Some(fast), Ok(reference)) => assert!(same(&fast.columns, reference), "{body}"),
            (Some(_), Err(error)) => panic!("fast path accepted {body}, refused with {error:?}"),
            (None, _) => {}
        }
        assert_eq!(fast.is_some(), fast_expected, "{body}");
    }

    #[test]
    fn fast_path_matches_the_reference_path() {
        let body = valid();
        check(&body, true);
        let bytes = serde_json::to_vec(&body).unwrap();
        let fast = fast_tensors(&spec(), &bytes, 3).unwrap();
        assert_eq!(fast.id.as_deref(), Some("r1"));
        assert_eq!(
            fast.outputs
                .unwrap()
                .iter()
                .map(|o| o.as_ref())
                .collect::<Vec<_>>(),
            ["predictions"]
        );
        assert!(same(
            &fast.columns,
            &Columns {
                rows: 2,
                data: vec![
                    ColumnData::F32(vec![1.5, -2.0]),
                    ColumnData::F32(vec![f32::NAN, 3.0]),
                    ColumnData::F32(vec![1.0, 0.0]),
                    ColumnData::Str(vec!["a\"q".into(), String::new()]),
                ],
            }
        ));

        // Numbers for a boolean column, FP64 and INT32 for numeric ones, id null.
        let mut body = valid();
        body["id"] = Value::Null;
        body["inputs"][2] = tensor("b", "FP32", json!([2]), json!([1.0, 0]));
        body["inputs"][0]["datatype"] = json!("FP64");
        body["inputs"][1]["datatype"] = json!("INT32");
        check(&body, true);
        // A boolean column takes the spelling table whatever the tensor's datatype says.
        for (datatype, data) in [
            ("BYTES", json!(["TRUE", "0"])),
            ("BYTES", json!(["1.0", "no"])),
            ("BOOL", json!([1, 0.0])),
            ("INT64", json!([true, "false"])),
        ] {
            let mut body = valid();
            body["inputs"][2] = tensor("b", datatype, json!([2]), data);
            check(&body, true);
            let columns = from_tensors(&spec(), &body, 3).unwrap();
            assert!(same(
                &Columns {
                    rows: 2,
                    data: vec![columns.data[2].clone()],
                },
                &Columns {
                    rows: 2,
                    data: vec![ColumnData::F32(vec![1.0, 0.0])],
                }
            ));
        }

        type Change = Box<dyn Fn(&mut Value)>;
        let refused: Vec<Change> = vec![
            Box::new(|b| b["inputs"][0]["data"] = json!([1.0, "2"])),
            Box::new(|b| b["inputs"][0]["data"] = json!([1.0, null])),
            Box::new(|b| b["inputs"][0]["data"] = json!([1.0, 1e39])),
            Box::new(|b| b["inputs"][0]["data"] = json!([1.0])),
            Box::new(|b| b["inputs"][0]["data"] = json!({"a": 1})),
            Box::new(|b| b["inputs"][0]["shape"] = json!([2, 2])),
            Box::new(|b| b["inputs"][0]["shape"] = json!([2.0])),
            Box::new(|b| b["inputs"][0]["shape"] = json!([-2])),
            Box::new(|b| b["inputs"][0]["datatype"] = json!("BYTES")),
            Box::new(|b| b["inputs"][0]["name"] = json!("c")),
            Box::new(|b| b["inputs"][0]["name"] = json!("nope")),
            Box::new(|b| b["inputs"][0]["extra"] = json!(1)),
            Box::new(|b| {
                b["inputs"][0] = json!(["x", [2], "FP32", [1.0, 2.0]]);
            }),
            Box::new(|b| b["inputs"][1]["data"] = json!([null, 3.5])),
            Box::new(|b| b["inputs"][2]["data"] = json!([null, true])),
            Box::new(|b| b["inputs"][2]["data"] = json!([0.5, 0])),
            Box::new(|b| b["inputs"][2]["data"] = json!([2, 0])),
            Box::new(|b| b["inputs"][2]["data"] = json!(["maybe", true])),
            Box::new(|b| b["inputs"][2]["data"] = json!([[true], {"a": 1}])),
            Box::new(|b| b["inputs"][3]["data"] = json!([1, "a"])),
            Box::new(|b| {
                b["inputs"].as_array_mut().unwrap().pop();
            }),
            Box::new(|b| b["inputs"] = json!([])),
            Box::new(|b| b["id"] = json!(7)),
            Box::new(|b| b["outputs"] = json!(["predictions"])),
            Box::new(|b| b["extra"] = json!(1)),
            Box::new(|b| {
                for input in b["inputs"].as_array_mut().unwrap() {
                    input["shape"] = json!([4]);
                    input["data"] = json!([1, 1, 1, 1]);
                }
            }),
        ];
        for change in refused {
            let mut body = valid();
            change(&mut body);
            check(&body, false);
        }
        check(&json!([valid()]), false);
        assert!(fast_tensors(&spec(), b"{\"inputs\": [] ", 3).is_none());
        // The last of two keys wins on the reference path; the fast path leaves such bodies to it.
        let text = serde_json::to_string(&valid()).unwrap();
        let twice = text.replacen("{\"id\":\"r1\",", "{\"id\":\"r0\",\"id\":\"r1\",", 1);
        assert_ne!(twice, text);
        assert!(fast_tensors(&spec(), twice.as_bytes(), 3).is_none());
    }
}
