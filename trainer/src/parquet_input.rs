//! Parquet datasets, read into the same string columns as a CSV file ([`RawTable`]) so that
//! missing values, schema inference and everything after it are shared with the CSV path.
//!
//! The `parquet` crate's record API is used without arrow (see the README's dependency notes):
//! a table of features is flat, and converting each cell to the text the CSV path would have
//! read keeps one inference for both formats. Numbers are written in Rust's shortest round-trip
//! form, so a Parquet double and the same number in a CSV file become the same feature value.

use flywheel_store::Bytes;
use parquet::basic::Repetition;
use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::data::{RawTable, check_names, is_missing};
use crate::error::{Result, TrainerError};

/// The compression codecs this build reads (the `parquet` crate's features in Cargo.toml).
pub const CODECS: &str = "uncompressed, with snappy or with zstd";

pub fn parse_parquet(bytes: &[u8]) -> Result<RawTable> {
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(bytes)).map_err(|e| {
        TrainerError::bad_input(format!(
            "failed to read the dataset as parquet: {e} (pass --format csv for a CSV file)"
        ))
    })?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let fields = schema.root_schema().get_fields();
    let names: Vec<String> = fields.iter().map(|f| f.name().trim().to_string()).collect();
    check_names(&names)?;
    for field in fields {
        let info = field.get_basic_info();
        if field.is_group() || (info.has_repetition() && info.repetition() == Repetition::REPEATED)
        {
            return Err(TrainerError::bad_input(format!(
                "parquet column {:?} is nested (a list, map or struct): the trainer reads flat \
                 tables; flatten it into scalar columns or drop it",
                field.name()
            )));
        }
    }
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    let rows = reader.get_row_iter(None).map_err(|e| read_error(&e))?;
    let mut count = 0;
    for row in rows {
        let row = row.map_err(|e| read_error(&e))?;
        for (index, (_, field)) in row.get_column_iter().enumerate() {
            let Some(column) = columns.get_mut(index) else {
                return Err(TrainerError::bad_input(
                    "parquet row has more columns than the file's schema",
                ));
            };
            column.push(cell(&names[index], field)?);
        }
        count += 1;
    }
    if count == 0 {
        return Err(TrainerError::bad_input("parquet dataset has no rows"));
    }
    Ok(RawTable {
        names,
        columns,
        rows: count,
    })
}

/// A Parquet value as the text a CSV file would hold; `None` for missing (null, NaN, infinite,
/// or a string that is one of the CSV missing tokens, which the exported model also reads as
/// missing).
fn cell(column: &str, field: &Field) -> Result<Option<String>> {
    fn float(value: f64, text: String) -> Option<String> {
        value.is_finite().then_some(text)
    }
    Ok(match field {
        Field::Null => None,
        Field::Bool(v) => Some(v.to_string()),
        Field::Byte(v) => Some(v.to_string()),
        Field::Short(v) => Some(v.to_string()),
        Field::Int(v) => Some(v.to_string()),
        Field::Long(v) => Some(v.to_string()),
        Field::UByte(v) => Some(v.to_string()),
        Field::UShort(v) => Some(v.to_string()),
        Field::UInt(v) => Some(v.to_string()),
        Field::ULong(v) => Some(v.to_string()),
        Field::Float16(v) => float(f64::from(*v), v.to_string()),
        Field::Float(v) => float(f64::from(*v), v.to_string()),
        Field::Double(v) => float(*v, v.to_string()),
        Field::Str(text) => text_cell(text),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => text_cell(text),
            Err(_) => {
                return Err(TrainerError::bad_input(format!(
                    "parquet column {column:?} holds binary data that is not UTF-8 text: drop it \
                     or convert it to a string column"
                )));
            }
        },
        // Dates, times and decimals as text: schema inference then treats them as categories
        // (or drops them as identifiers when nearly every value differs).
        Field::Decimal(_)
        | Field::Date(_)
        | Field::TimeMillis(_)
        | Field::TimeMicros(_)
        | Field::TimestampMillis(_)
        | Field::TimestampMicros(_) => Some(field.to_string()),
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => {
            return Err(TrainerError::bad_input(format!(
                "parquet column {column:?} is nested (a list, map or struct): flatten it into \
                 scalar columns or drop it"
            )));
        }
    })
}

fn text_cell(text: &str) -> Option<String> {
    (!is_missing(text)).then(|| text.to_string())
}

fn read_error(error: &ParquetError) -> TrainerError {
    let text = error.to_string();
    if let Some(feature) = text.split("Disabled feature at compile time: ").nth(1) {
        // The crate names its cargo feature; flate2 is the gzip codec.
        let codec = if feature.trim() == "flate2" {
            "gzip"
        } else {
            feature.trim()
        };
        return TrainerError::bad_input(format!(
            "the parquet file is compressed with {codec}, which this trainer does not read: \
             rewrite it {CODECS} (e.g. pyarrow.parquet.write_table(table, path, \
             compression=\"snappy\"), the default of pyarrow and pandas)"
        ));
    }
    if text.contains("not supported yet") {
        return TrainerError::bad_input(format!(
            "the parquet file uses an unsupported feature: {text} (this trainer reads files \
             written {CODECS})"
        ));
    }
    TrainerError::bad_input(format!(
        "failed to read the parquet dataset: {text}; the file may be truncated or corrupt"
    ))
}
