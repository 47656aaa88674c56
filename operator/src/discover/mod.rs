//! `flywheel discover`: finds the CSV and Parquet tables under a folder or an `s3://` prefix,
//! reads a sample of each, and hands the samples to `flywheel_core::discover`, which profiles
//! them, proposes targets, finds joins and drafts studies. A file that cannot be read is listed
//! with the reason and the scan goes on.

pub mod html;
pub mod text;

use std::io::Read;
use std::path::{Path, PathBuf};

use flywheel_core::api::Study;
use flywheel_core::discover::{
    DiscoverOptions, Discovery, Skipped, TableSample, discover, draft_study,
};
use flywheel_core::infer::is_missing;
use flywheel_store::{BlockingStore, Bytes, Location};
use parquet::basic::Repetition;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::Error;

/// The table formats discovery reads, by file extension.
const CSV_EXTENSIONS: &[&str] = &["csv", "tsv"];
const PARQUET_EXTENSIONS: &[&str] = &["parquet", "pq"];

/// Scans `root` (a folder, searched recursively, a single file, or `s3://bucket/prefix`),
/// reading at most `sample_rows` rows of each table.
pub fn scan(root: &str, sample_rows: usize, options: &DiscoverOptions) -> Result<Discovery, Error> {
    let failed = |message: String| Error::Local {
        action: "discover tables",
        message,
    };
    let location = Location::parse(root).map_err(|e| failed(e.to_string()))?;
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    let mut reads = Vec::new();
    match &location {
        Location::Local(path) => {
            let root = path.canonicalize().map_err(|e| {
                failed(format!(
                    "{} cannot be opened ({e}); pass an existing folder",
                    path.display()
                ))
            })?;
            let mut files = Vec::new();
            walk(&root, &mut files, &mut skipped);
            for path in files {
                let name = path.display().to_string();
                let read = read_local(&path, &name, sample_rows);
                reads.push((name, read));
            }
        }
        Location::S3 { .. } => {
            let store = BlockingStore::from_env().map_err(|e| failed(e.to_string()))?;
            let objects = store.list(&location).map_err(|e| failed(e.to_string()))?;
            for object in objects {
                let name = object.to_string();
                if table_format(&name).is_none() {
                    continue;
                }
                let read = store
                    .get(&object)
                    .map_err(|e| format!("failed to read the object: {e}"))
                    .and_then(|bytes| read_bytes(bytes, &name, sample_rows));
                reads.push((name, read));
            }
        }
    }
    for (location, read) in reads {
        match read {
            Ok(sample) => samples.push(sample),
            Err(reason) => skipped.push(Skipped { location, reason }),
        }
    }
    skipped.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(discover(root, sample_rows, &samples, skipped, options))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TableFormat {
    Csv { delimiter: u8 },
    Parquet,
}

fn table_format(name: &str) -> Option<TableFormat> {
    let lower = name.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map(|(_, e)| e)?;
    if CSV_EXTENSIONS.contains(&extension) {
        let delimiter = if extension == "tsv" { b'\t' } else { b',' };
        Some(TableFormat::Csv { delimiter })
    } else if PARQUET_EXTENSIONS.contains(&extension) {
        Some(TableFormat::Parquet)
    } else {
        None
    }
}

/// The table files under `path` (or `path` itself), sorted; folders that cannot be listed are
/// recorded in `skipped`.
fn walk(path: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
    if path.is_file() {
        if table_format(&path.display().to_string()).is_some() {
            files.push(path.to_path_buf());
        }
        return;
    }
    // A linked folder may link back above itself; following it could never end.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        skipped.push(Skipped {
            location: path.display().to_string(),
            reason: "a symbolic link to a folder: not followed; scan its target directly".into(),
        });
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            skipped.push(Skipped {
                location: path.display().to_string(),
                reason: format!("failed to list the folder: {e}"),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        walk(&path, files, skipped);
    }
}

fn read_local(path: &Path, name: &str, limit: usize) -> Result<TableSample, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("failed to open the file: {e}"))?;
    match table_format(name) {
        Some(TableFormat::Parquet) => read_parquet(file, name, limit),
        Some(TableFormat::Csv { delimiter }) => {
            read_csv(std::io::BufReader::new(file), delimiter, name, limit)
        }
        None => Err("not a CSV or Parquet file".into()),
    }
}

fn read_bytes(bytes: Bytes, name: &str, limit: usize) -> Result<TableSample, String> {
    match table_format(name) {
        Some(TableFormat::Parquet) => read_parquet(bytes, name, limit),
        Some(TableFormat::Csv { delimiter }) => read_csv(&bytes[..], delimiter, name, limit),
        None => Err("not a CSV or Parquet file".into()),
    }
}

/// The first `limit` rows as a sample, and every row counted.
fn read_csv(
    reader: impl Read,
    delimiter: u8,
    name: &str,
    limit: usize,
) -> Result<TableSample, String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(reader);
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| format!("failed to read the header: {e}"))?
        .iter()
        .map(|n| n.trim().to_string())
        .collect();
    check_header(&names)?;
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    let mut record = csv::StringRecord::new();
    let mut total: u64 = 0;
    let mut counted = csv::ByteRecord::new();
    loop {
        let more = if (total as usize) < limit {
            reader.read_record(&mut record)
        } else {
            // Past the sample only the count matters; bytes spare a UTF-8 check per cell.
            reader.read_byte_record(&mut counted)
        };
        match more {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("failed to parse as CSV: {e}")),
        }
        if (total as usize) < limit {
            for (column, cell) in columns.iter_mut().zip(record.iter()) {
                column.push((!is_missing(cell)).then(|| cell.to_string()));
            }
        }
        total += 1;
    }
    if total == 0 {
        return Err("the table has a header but no rows".into());
    }
    Ok(TableSample {
        location: name.to_string(),
        format: "csv".into(),
        names,
        columns,
        total_rows: total,
    })
}

fn check_header(names: &[String]) -> Result<(), String> {
    if names.iter().all(String::is_empty) {
        return Err("the header row is empty".into());
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("column name {name:?} appears twice in the header"));
        }
    }
    Ok(())
}

/// The first `limit` rows of a Parquet file, each cell as the text a CSV file would hold; the
/// row count comes from the file's metadata.
fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    name: &str,
    limit: usize,
) -> Result<TableSample, String> {
    let reader =
        SerializedFileReader::new(reader).map_err(|e| format!("failed to read as parquet: {e}"))?;
    let metadata = reader.metadata().file_metadata();
    let total = u64::try_from(metadata.num_rows()).unwrap_or(0);
    let fields = metadata.schema_descr().root_schema().get_fields().to_vec();
    // The trainer refuses nested columns, so a study drafted on this table could not run.
    if let Some(nested) = fields.iter().find(|f| {
        let info = f.get_basic_info();
        f.is_group() || (info.has_repetition() && info.repetition() == Repetition::REPEATED)
    }) {
        return Err(format!(
            "column {:?} is nested (a list, map or struct); the trainer reads flat tables: \
             flatten it into scalar columns or drop it",
            nested.name()
        ));
    }
    let names: Vec<String> = fields.iter().map(|f| f.name().trim().to_string()).collect();
    check_header(&names)?;
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    let rows = reader.get_row_iter(None).map_err(|e| parquet_error(&e))?;
    for row in rows.take(limit) {
        let row = row.map_err(|e| parquet_error(&e))?;
        for ((column, (_, field)), name) in
            columns.iter_mut().zip(row.get_column_iter()).zip(&names)
        {
            column.push(parquet_cell(name, field)?);
        }
    }
    if total == 0 {
        return Err("the table has no rows".into());
    }
    Ok(TableSample {
        location: name.to_string(),
        format: "parquet".into(),
        names,
        columns,
        total_rows: total,
    })
}

/// Null, non-finite floats and the missing tokens are missing; dates, times and decimals are
/// text, which the type rules see as categories or identifiers, as the trainer does.
fn parquet_cell(column: &str, field: &Field) -> Result<Option<String>, String> {
    let text = match field {
        Field::Null => return Ok(None),
        Field::Float(v) if !v.is_finite() => return Ok(None),
        Field::Double(v) if !v.is_finite() => return Ok(None),
        Field::Str(text) => text.clone(),
        Field::Bytes(bytes) => String::from_utf8(bytes.data().to_vec()).map_err(|_| {
            format!(
                "column {column:?} holds binary data that is not UTF-8 text, which the trainer \
                 refuses: drop it or convert it to a string column"
            )
        })?,
        other => other.to_string(),
    };
    Ok((!is_missing(&text)).then_some(text))
}

/// Names the codec when the file uses one this build leaves out (the `parquet` crate says
/// which cargo feature is missing; flate2 is gzip).
fn parquet_error(error: &ParquetError) -> String {
    let text = error.to_string();
    match text.split("Disabled feature at compile time: ").nth(1) {
        Some(feature) => {
            let codec = match feature.trim() {
                "flate2" => "gzip",
                other => other,
            };
            format!(
                "compressed with {codec}, which Flywheel does not read: rewrite it uncompressed, \
                 with snappy or with zstd"
            )
        }
        None => format!("failed to read parquet rows: {text}"),
    }
}

/// The draft studies of a discovery, each with its file name (`<study name>.yaml`).
pub fn drafts(discovery: &Discovery) -> Vec<(String, Study)> {
    let mut drafts: Vec<(String, Study)> = Vec::new();
    for proposal in &discovery.targets {
        let mut study = draft_study(proposal);
        let base = study.metadata.name.clone().unwrap_or_default();
        // Two tables with one name in different folders: number the later drafts.
        let mut name = base.clone();
        let mut n = 2;
        while drafts
            .iter()
            .any(|(file, _)| *file == format!("{name}.yaml"))
        {
            name = format!("{base}-{n}");
            n += 1;
        }
        study.metadata.name = Some(name.clone());
        drafts.push((format!("{name}.yaml"), study));
    }
    drafts
}

/// Writes the drafts into `dir` as YAML, each headed by the reasons for its target; returns the
/// paths written.
pub fn write_drafts(discovery: &Discovery, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for ((file, study), proposal) in drafts(discovery).into_iter().zip(&discovery.targets) {
        let yaml = serde_saphyr::to_string(&study).map_err(|e| Error::Serialize {
            what: "a draft study",
            message: e.to_string(),
        })?;
        let header = format!(
            "# Drafted by `flywheel discover`: {} of {} ({}), because: {}.\n\
             # Review the budget and the families before `flywheel run` or `kubectl apply`.\n",
            proposal.column,
            proposal.table,
            proposal.task.as_str(),
            proposal.why.join("; ")
        );
        let path = dir.join(file);
        std::fs::write(&path, header + &yaml).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
