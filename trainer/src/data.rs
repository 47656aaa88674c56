//! Loading a CSV dataset into compact typed columns and inferring its schema, with a reason for
//! every decision so `schema.json` explains what the model sees.

use std::collections::HashMap;
use std::path::PathBuf;

use flywheel_core::infer::{
    ColumnType, MAX_CLASSES, count_distinct, infer_column as infer_column_type,
    numbers_are_classes, parse_number,
};
use flywheel_core::model_card::boolean_from_text;
use flywheel_core::search::space::Task;
use flywheel_store::{BlockingStore, Location, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainerError};

pub use flywheel_core::infer::{MISSING_TOKENS, is_missing};

/// The raw bytes of a dataset and where they came from.
pub struct Source {
    pub uri: String,
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`, hex.
    pub digest: String,
}

/// Reads a dataset URI: a plain path, `file://` or `s3://` (through the artifact store).
pub fn fetch(uri: &str) -> Result<Source> {
    let path = match uri.split_once("://") {
        None => PathBuf::from(uri),
        Some(("file", rest)) => PathBuf::from(rest),
        Some(("s3", _)) => return fetch_object(uri),
        Some((scheme, _)) => {
            return Err(TrainerError::bad_input(format!(
                "unsupported dataset scheme {scheme:?} in {uri:?}: use file://, s3:// or a plain \
                 path"
            )));
        }
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        TrainerError::bad_input(format!("failed to read dataset {}: {e}", path.display()))
    })?;
    Ok(source(uri, bytes))
}

/// Reads an object-store dataset. What the caller can fix (a missing object, no or refused
/// credentials, a malformed URI) is bad input; anything else (the service unreachable after
/// retries) is internal, as a retry may succeed.
fn fetch_object(uri: &str) -> Result<Source> {
    let bad_input = |e: StoreError| TrainerError::bad_input(format!("failed to read dataset: {e}"));
    let location = Location::parse(uri).map_err(bad_input)?;
    let store = BlockingStore::from_env()
        .map_err(|e| TrainerError::Internal(format!("failed to read dataset {uri}: {e}")))?;
    let bytes = store.get(&location).map_err(|e| match e {
        StoreError::S3 { .. } | StoreError::Io { .. } | StoreError::Runtime(_) => {
            TrainerError::Internal(format!("failed to read dataset: {e}"))
        }
        e => bad_input(e),
    })?;
    Ok(source(uri, bytes.to_vec()))
}

/// `bytes` as lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of `bytes`, hex: how datasets and their parts are named.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn source(uri: &str, bytes: Vec<u8>) -> Source {
    let digest = sha256_hex(&bytes);
    Source {
        uri: uri.to_string(),
        bytes,
        digest,
    }
}

/// How a dataset's bytes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// By the extension (`.parquet`, `.pq`), else by Parquet's magic bytes, else CSV.
    Auto,
    Csv,
    Parquet,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// The format to read `source` with: `self` unless auto.
    pub fn resolve(self, source: &Source) -> Format {
        if self != Format::Auto {
            return self;
        }
        let name = source.uri.rsplit('/').next().unwrap_or_default();
        let extension = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "parquet" | "pq" => Format::Parquet,
            "csv" | "tsv" | "txt" => Format::Csv,
            // No telling extension (an object key, a temp file): Parquet files start and end
            // with "PAR1", which no CSV header does in practice.
            _ if source.bytes.starts_with(b"PAR1") && source.bytes.ends_with(b"PAR1") => {
                Format::Parquet
            }
            _ => Format::Csv,
        }
    }
}

/// Parses `source` as `format` (resolved first) into string columns.
pub fn parse(source: &Source, format: Format) -> Result<RawTable> {
    match format.resolve(source) {
        Format::Parquet => crate::parquet_input::parse_parquet(&source.bytes),
        _ => parse_csv(&source.bytes),
    }
}

/// A CSV file as string columns (`None` is a missing cell).
pub struct RawTable {
    pub names: Vec<String>,
    pub columns: Vec<Vec<Option<String>>>,
    pub rows: usize,
}

pub fn parse_csv(bytes: &[u8]) -> Result<RawTable> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(TrainerError::bad_input("dataset is empty"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(&e))?
        .iter()
        .map(|name| name.trim().to_string())
        .collect();
    check_names(&names)?;
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    let mut record = csv::StringRecord::new();
    let mut rows = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&e)),
        }
        for (column, cell) in columns.iter_mut().zip(record.iter()) {
            column.push(if is_missing(cell) {
                None
            } else {
                Some(cell.to_string())
            });
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(TrainerError::bad_input(
            "dataset has a header but no data rows",
        ));
    }
    Ok(RawTable {
        names,
        columns,
        rows,
    })
}

/// Column names must be non-empty and unique: they become the exported model's inputs.
pub fn check_names(names: &[String]) -> Result<()> {
    let mut seen = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(TrainerError::bad_input(format!(
                "column {} has an empty name in the header",
                i + 1
            )));
        }
        if seen.insert(name.as_str(), i).is_some() {
            return Err(TrainerError::bad_input(format!(
                "column name {name:?} appears twice in the header"
            )));
        }
    }
    Ok(())
}

fn csv_error(error: &csv::Error) -> TrainerError {
    match error.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => {
            let line = pos
                .as_ref()
                .map_or_else(|| "?".to_string(), |p| p.line().to_string());
            TrainerError::bad_input(format!(
                "ragged row on line {line}: it has {len} fields but the header has {expected_len}"
            ))
        }
        csv::ErrorKind::Utf8 { pos, .. } => {
            let line = pos
                .as_ref()
                .map_or_else(|| "?".to_string(), |p| p.line().to_string());
            TrainerError::bad_input(format!("line {line} is not valid UTF-8"))
        }
        _ => TrainerError::bad_input(format!("failed to parse the dataset as CSV: {error}")),
    }
}

/// How the trainer treats a feature column.
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureKind {
    /// A real number.
    Numeric,
    /// 0/1 (from 0/1 numbers or true/false, yes/no words).
    Boolean,
    /// A number used as a category code (few distinct integers); on the wire still a number.
    IntegerCodes,
    /// A string category; `levels` are the distinct strings seen, codes index into them.
    Strings { levels: Vec<String> },
}

/// A feature column in compact form.
#[derive(Clone, Debug)]
pub struct Feature {
    pub name: String,
    pub kind: FeatureKind,
    /// Numeric, Boolean, IntegerCodes: values with NaN for missing.
    pub values: Vec<f32>,
    /// Strings: level index per row, `MISSING_CODE` for missing.
    pub codes: Vec<u32>,
}

pub const MISSING_CODE: u32 = u32::MAX;

impl Feature {
    pub fn is_missing(&self, row: usize) -> bool {
        match self.kind {
            FeatureKind::Strings { .. } => self.codes[row] == MISSING_CODE,
            _ => self.values[row].is_nan(),
        }
    }
}

/// The prediction target.
#[derive(Clone, Debug)]
pub enum Target {
    /// Class index per row into `classes`.
    Classes {
        classes: Vec<String>,
        y: Vec<u32>,
    },
    Values {
        y: Vec<f64>,
    },
}

/// One column's entry in `schema.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ColumnSchema {
    pub name: String,
    /// feature, target or dropped.
    pub role: &'static str,
    /// numeric, boolean, categorical, or the raw type of a dropped column.
    pub kind: &'static str,
    pub missing: usize,
    pub distinct: usize,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Schema {
    pub rows: usize,
    /// Rows dropped because the target was missing.
    pub rows_without_target: usize,
    pub target: String,
    pub task: Task,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    pub columns: Vec<ColumnSchema>,
}

/// A dataset ready for featurisation: rows with a target, typed feature columns.
pub struct Dataset {
    pub features: Vec<Feature>,
    pub target: Target,
    pub task: Task,
    pub rows: usize,
    /// For each kept row, its 0-based index among the file's data rows (header excluded); rows
    /// without a target are skipped, so this maps dataset rows back to the file.
    pub source_rows: Vec<usize>,
    pub schema: Schema,
}

pub fn infer(table: RawTable, target_name: &str, task: Task) -> Result<Dataset> {
    let RawTable {
        names,
        mut columns,
        rows: raw_rows,
    } = table;
    let Some(target_index) = names.iter().position(|name| name == target_name) else {
        return Err(TrainerError::bad_input(format!(
            "target column {target_name:?} not found; the columns are: {}",
            names.join(", ")
        )));
    };
    let target_cells = std::mem::take(&mut columns[target_index]);
    let keep: Vec<usize> = (0..raw_rows)
        .filter(|&row| target_cells[row].is_some())
        .collect();
    if keep.is_empty() {
        return Err(TrainerError::bad_input(format!(
            "target column {target_name:?} has no values: every cell is missing"
        )));
    }
    let rows = keep.len();
    let target_values: Vec<&str> = keep
        .iter()
        .filter_map(|&row| target_cells[row].as_deref())
        .collect();
    let (target, task, target_reason) = infer_target(target_name, &target_values, task)?;

    let mut schema_columns = Vec::with_capacity(names.len());
    let mut features = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if index == target_index {
            let distinct = match &target {
                Target::Classes { classes, .. } => classes.len(),
                Target::Values { y } => count_distinct(y.iter().map(|v| v.to_bits())),
            };
            schema_columns.push(ColumnSchema {
                name: name.clone(),
                role: "target",
                kind: if task == Task::Regression {
                    "numeric"
                } else {
                    "categorical"
                },
                missing: raw_rows - rows,
                distinct,
                reason: target_reason.clone(),
            });
            continue;
        }
        let cells: Vec<Option<&str>> = keep
            .iter()
            .map(|&row| columns[index][row].as_deref())
            .collect();
        let (feature, entry) = infer_column(name, &cells);
        schema_columns.push(entry);
        if let Some(feature) = feature {
            features.push(feature);
        }
    }
    if features.is_empty() {
        return Err(TrainerError::bad_input(
            "no usable feature columns: every column other than the target was dropped (see schema reasons)",
        ));
    }
    let classes = match &target {
        Target::Classes { classes, .. } => classes.clone(),
        Target::Values { .. } => Vec::new(),
    };
    let schema = Schema {
        rows,
        rows_without_target: raw_rows - rows,
        target: target_name.to_string(),
        task,
        classes,
        columns: schema_columns,
    };
    Ok(Dataset {
        features,
        target,
        task,
        rows,
        source_rows: keep,
        schema,
    })
}

fn infer_target(name: &str, values: &[&str], task: Task) -> Result<(Target, Task, String)> {
    let numbers: Option<Vec<f64>> = values.iter().map(|v| parse_number(v)).collect();
    let classify = match (task, &numbers) {
        (Task::Regression, None) => {
            let bad = values
                .iter()
                .find(|v| parse_number(v).is_none())
                .copied()
                .unwrap_or_default();
            return Err(TrainerError::bad_input(format!(
                "task is regression but target column {name:?} is not numeric (value {bad:?})"
            )));
        }
        (Task::Regression, Some(_)) => false,
        (Task::Binary | Task::Multiclass, _) => true,
        (Task::Auto, None) => true,
        (Task::Auto, Some(numbers)) => numbers_are_classes(numbers),
    };
    if !classify {
        let y = numbers.unwrap_or_default();
        let reason = if task == Task::Auto {
            "numeric with many distinct values: regression".to_string()
        } else {
            "regression as requested".to_string()
        };
        return Ok((Target::Values { y }, Task::Regression, reason));
    }
    // Numeric labels are keyed by value so "1" and "1.0" are one class.
    let key = |i: usize| -> String {
        match &numbers {
            Some(numbers) => format_number(numbers[i]),
            None => values[i].to_string(),
        }
    };
    let mut classes: Vec<String> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    for i in 0..values.len() {
        let label = key(i);
        if !index.contains_key(&label) {
            index.insert(label.clone(), 0);
            classes.push(label);
        }
        if classes.len() > MAX_CLASSES {
            return Err(TrainerError::bad_input(format!(
                "target column {name:?} has more than {MAX_CLASSES} distinct values: not a classification target"
            )));
        }
    }
    match &numbers {
        Some(_) => classes.sort_by(|a, b| {
            let a = parse_number(a).unwrap_or(0.0);
            let b = parse_number(b).unwrap_or(0.0);
            a.total_cmp(&b)
        }),
        None => classes.sort(),
    }
    if classes.len() < 2 {
        return Err(TrainerError::bad_input(format!(
            "target column {name:?} has only one class ({:?}): nothing to learn",
            classes.first().cloned().unwrap_or_default()
        )));
    }
    let resolved = match task {
        Task::Binary if classes.len() != 2 => {
            return Err(TrainerError::bad_input(format!(
                "task is binary but target column {name:?} has {} classes",
                classes.len()
            )));
        }
        Task::Multiclass => Task::Multiclass,
        _ if classes.len() == 2 => Task::Binary,
        _ => Task::Multiclass,
    };
    for (i, class) in classes.iter().enumerate() {
        index.insert(class.clone(), i as u32);
    }
    let y = (0..values.len())
        .map(|i| index.get(&key(i)).copied().unwrap_or(0))
        .collect();
    let reason = match (task, &numbers) {
        (Task::Auto, Some(_)) => format!("few distinct integer values: {} classes", classes.len()),
        (Task::Auto, None) => format!("text labels: {} classes", classes.len()),
        _ => format!("{} classes", classes.len()),
    };
    Ok((Target::Classes { classes, y }, resolved, reason))
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Types a column by core's rules and, for a feature, builds its compact values.
fn infer_column(name: &str, cells: &[Option<&str>]) -> (Option<Feature>, ColumnSchema) {
    let inferred = infer_column_type(name, cells);
    let column_type = inferred.column_type;
    let entry = ColumnSchema {
        name: name.to_string(),
        role: if column_type.is_feature() {
            "feature"
        } else {
            "dropped"
        },
        kind: column_type.kind(),
        missing: inferred.missing,
        distinct: inferred.distinct,
        reason: inferred.reason,
    };
    let numeric = |read: fn(&str) -> Option<f32>| -> Vec<f32> {
        cells
            .iter()
            .map(|c| c.and_then(read).unwrap_or(f32::NAN))
            .collect()
    };
    let feature = |kind, values, codes| Feature {
        name: name.to_string(),
        kind,
        values,
        codes,
    };
    let feature = match column_type {
        ColumnType::Numeric => Some(feature(
            FeatureKind::Numeric,
            numeric(|c| parse_number(c).map(|v| v as f32)),
            Vec::new(),
        )),
        ColumnType::IntegerCodes => Some(feature(
            FeatureKind::IntegerCodes,
            numeric(|c| parse_number(c).map(|v| v as f32)),
            Vec::new(),
        )),
        ColumnType::NumericBoolean => Some(feature(
            FeatureKind::Boolean,
            numeric(|c| parse_number(c).map(|v| v as f32)),
            Vec::new(),
        )),
        // The table the server accepts too, so a served model takes the cells of its own CSV.
        ColumnType::WordBoolean => Some(feature(
            FeatureKind::Boolean,
            numeric(|c| boolean_from_text(c).map(|b| if b { 1.0 } else { 0.0 })),
            Vec::new(),
        )),
        ColumnType::Text => {
            let mut levels: Vec<String> = Vec::new();
            let mut index: HashMap<&str, u32> = HashMap::new();
            let codes: Vec<u32> = cells
                .iter()
                .map(|cell| match cell {
                    None => MISSING_CODE,
                    Some(cell) => *index.entry(cell).or_insert_with(|| {
                        levels.push((*cell).to_string());
                        (levels.len() - 1) as u32
                    }),
                })
                .collect();
            Some(feature(FeatureKind::Strings { levels }, Vec::new(), codes))
        }
        ColumnType::Empty
        | ColumnType::MostlyMissing
        | ColumnType::Constant
        | ColumnType::Identifier => None,
    };
    (feature, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(csv: &str) -> Result<RawTable> {
        parse_csv(csv.as_bytes())
    }

    #[test]
    fn ragged_rows_name_their_line() {
        let err = table("a,b\n1,2\n3\n").err().unwrap();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn kinds_are_inferred_with_reasons() {
        let mut csv = String::from("id,x,flag,color,code,y\n");
        for i in 0..40 {
            let color = ["red", "green", "blue"][i % 3];
            let x = if i % 7 == 0 {
                String::new()
            } else {
                format!("{}.5", i % 9)
            };
            csv.push_str(&format!(
                "{i},{x},{},{color},{},{}\n",
                i % 2 == 0,
                i % 3,
                i % 2
            ));
        }
        let data = infer(table(&csv).unwrap(), "y", Task::Auto).unwrap();
        assert_eq!(data.task, Task::Binary);
        let kinds: Vec<(&str, &str, &str)> = data
            .schema
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.role, c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("id", "dropped", "id"),
                ("x", "feature", "numeric"),
                ("flag", "feature", "boolean"),
                ("color", "feature", "categorical"),
                ("code", "feature", "categorical"),
                ("y", "target", "categorical"),
            ]
        );
        assert!(data.schema.columns[1].reason.contains("missing"));
    }
}
