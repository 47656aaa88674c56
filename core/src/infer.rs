//! The column type rules: how a table's text cells are read as numbers, booleans, category codes,
//! categories or identifiers. The trainer decides its features with them and `flywheel discover`
//! profiles tables with them, so a discovered column is typed exactly as a trial will type it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::model_card::{boolean_from_number, boolean_from_text};

/// Cell values read as missing. The exported model maps the same tokens to missing for string
/// columns, so training and serving agree.
pub const MISSING_TOKENS: &[&str] = &["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"];

/// A column with at most this many distinct integer values is treated as category codes.
pub const MAX_INTEGER_CODES: usize = 5;
/// A numeric target with at most this many distinct integer values means classification.
pub const MAX_AUTO_CLASSES: usize = 20;
/// More classes than this is almost certainly a mistaken target.
pub const MAX_CLASSES: usize = 1000;
/// Columns missing in more than this fraction of rows carry too little to impute from.
pub const MAX_MISSING_FRACTION: f64 = 0.95;
/// Below this many rows "every value differs" says nothing about a column being an identifier.
const MIN_ROWS_FOR_ID: usize = 20;

pub fn is_missing(cell: &str) -> bool {
    MISSING_TOKENS.contains(&cell.trim())
}

/// A finite number, or `None`.
pub fn parse_number(cell: &str) -> Option<f64> {
    cell.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// What a column is, by the rules of [`infer_column`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Every value missing.
    Empty,
    /// More than [`MAX_MISSING_FRACTION`] of the values missing.
    MostlyMissing,
    /// One distinct value.
    Constant,
    /// Unique integers per row, or text where nearly every value differs.
    Identifier,
    /// Numbers that are all 0 or 1.
    NumericBoolean,
    /// true/false, yes/no words (mixed with 0/1).
    WordBoolean,
    /// At most [`MAX_INTEGER_CODES`] distinct integers: category codes.
    IntegerCodes,
    /// Real numbers.
    Numeric,
    /// Text categories.
    Text,
}

impl ColumnType {
    /// The kind as `schema.json` and `flywheel discover` name it.
    pub fn kind(self) -> &'static str {
        match self {
            ColumnType::Empty => "empty",
            ColumnType::MostlyMissing => "mostly_missing",
            ColumnType::Constant => "constant",
            ColumnType::Identifier => "id",
            ColumnType::NumericBoolean | ColumnType::WordBoolean => "boolean",
            ColumnType::IntegerCodes | ColumnType::Text => "categorical",
            ColumnType::Numeric => "numeric",
        }
    }

    /// Whether the trainer uses the column as a feature (the others are dropped).
    pub fn is_feature(self) -> bool {
        matches!(
            self,
            ColumnType::NumericBoolean
                | ColumnType::WordBoolean
                | ColumnType::IntegerCodes
                | ColumnType::Numeric
                | ColumnType::Text
        )
    }
}

/// A column's type with the counts behind it and the reason, in words.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnInference {
    pub column_type: ColumnType,
    pub missing: usize,
    pub distinct: usize,
    pub reason: String,
}

/// Types a column from its cells (`None` is missing).
pub fn infer_column(name: &str, cells: &[Option<&str>]) -> ColumnInference {
    let rows = cells.len();
    let missing = cells.iter().filter(|c| c.is_none()).count();
    let present: Vec<&str> = cells.iter().flatten().copied().collect();
    let typed = |column_type, distinct, reason: String| ColumnInference {
        column_type,
        missing,
        distinct,
        reason,
    };
    if present.is_empty() {
        return typed(ColumnType::Empty, 0, "every value is missing".into());
    }
    let missing_fraction = missing as f64 / rows as f64;
    if missing_fraction > MAX_MISSING_FRACTION {
        return typed(
            ColumnType::MostlyMissing,
            count_distinct(present.iter()),
            format!("{:.1}% of values are missing", missing_fraction * 100.0),
        );
    }
    let missing_note = if missing > 0 {
        format!("; {missing} missing values imputed with an indicator column")
    } else {
        String::new()
    };
    let constant = |distinct| {
        typed(
            ColumnType::Constant,
            distinct,
            "a single value: carries no information".into(),
        )
    };
    let numbers: Option<Vec<f64>> = present.iter().map(|c| parse_number(c)).collect();
    if let Some(numbers) = numbers {
        let distinct = count_distinct(numbers.iter().map(|v| v.to_bits()));
        let integral = numbers.iter().all(|v| v.fract() == 0.0);
        if distinct <= 1 {
            return constant(distinct);
        }
        if numbers.iter().all(|&v| boolean_from_number(v).is_some()) {
            return typed(
                ColumnType::NumericBoolean,
                distinct,
                format!("only 0 and 1{missing_note}"),
            );
        }
        if integral && distinct == present.len() && rows >= MIN_ROWS_FOR_ID {
            let (low, high) = numbers
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if looks_like_id(name) || (high - low + 1.0) as usize == distinct {
                return typed(
                    ColumnType::Identifier,
                    distinct,
                    "unique integers per row: an identifier".into(),
                );
            }
        }
        if integral && distinct <= MAX_INTEGER_CODES {
            return typed(
                ColumnType::IntegerCodes,
                distinct,
                format!(
                    "{distinct} distinct integers: category codes, one-hot for linear models{missing_note}"
                ),
            );
        }
        return typed(
            ColumnType::Numeric,
            distinct,
            format!("numbers{missing_note}"),
        );
    }
    // The table the server accepts too, so a served model takes the cells of its own CSV.
    let booleans: Option<Vec<bool>> = present.iter().map(|c| boolean_from_text(c)).collect();
    if let Some(booleans) = booleans {
        let distinct = count_distinct(booleans.iter());
        if distinct <= 1 {
            return constant(distinct);
        }
        return typed(
            ColumnType::WordBoolean,
            distinct,
            format!("true/false words{missing_note}"),
        );
    }
    let distinct = count_distinct(present.iter());
    if distinct <= 1 {
        return constant(distinct);
    }
    if rows >= MIN_ROWS_FOR_ID
        && (distinct == present.len() || distinct > (present.len() / 2).max(1000))
    {
        return typed(
            ColumnType::Identifier,
            distinct,
            "nearly every value is distinct: an identifier or free text".into(),
        );
    }
    typed(
        ColumnType::Text,
        distinct,
        format!("text with {distinct} distinct values{missing_note}"),
    )
}

/// The auto task rule for a numeric target: integers with few distinct values are class labels,
/// anything else is a quantity to regress.
pub fn numbers_are_classes(numbers: &[f64]) -> bool {
    let integral = numbers.iter().all(|v| v.fract() == 0.0);
    integral && count_distinct(numbers.iter().map(|v| v.to_bits())) <= MAX_AUTO_CLASSES
}

/// Names people give identifier columns.
pub fn looks_like_id(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "id" || lower.ends_with("_id") || lower.ends_with(" id") || lower == "index"
}

pub fn count_distinct<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>) -> usize {
    values.collect::<HashSet<T>>().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, cells: &[&str]) -> ColumnInference {
        let cells: Vec<Option<&str>> = cells
            .iter()
            .map(|c| (!is_missing(c)).then_some(*c))
            .collect();
        infer_column(name, &cells)
    }

    fn repeat(cells: &[&str], rows: usize) -> Vec<String> {
        (0..rows)
            .map(|i| cells[i % cells.len()].to_string())
            .collect()
    }

    fn types(name: &str, cells: &[String]) -> ColumnType {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        column(name, &cells).column_type
    }

    #[test]
    fn each_rule_has_its_type() {
        let counting: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        let spread: Vec<String> = (0..30).map(|i| (i * 7 % 11).to_string()).collect();
        let names: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
        assert_eq!(types("row", &counting), ColumnType::Identifier);
        assert_eq!(types("n", &spread), ColumnType::Numeric);
        assert_eq!(
            types("code", &repeat(&["1", "2", "3"], 30)),
            ColumnType::IntegerCodes
        );
        assert_eq!(
            types("flag", &repeat(&["0", "1"], 30)),
            ColumnType::NumericBoolean
        );
        assert_eq!(
            types("flag", &repeat(&["yes", "No"], 30)),
            ColumnType::WordBoolean
        );
        assert_eq!(types("c", &repeat(&["red", "blue"], 30)), ColumnType::Text);
        assert_eq!(types("who", &names), ColumnType::Identifier);
        assert_eq!(types("k", &repeat(&["7"], 30)), ColumnType::Constant);
        assert_eq!(types("e", &repeat(&["NA", ""], 30)), ColumnType::Empty);
    }

    #[test]
    fn missing_cells_are_counted_and_explained() {
        let cells = repeat(&["1.5", "", "2.5", "3.5"], 40);
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        let inferred = column("x", &cells);
        assert_eq!(inferred.column_type, ColumnType::Numeric);
        assert_eq!(inferred.missing, 10);
        assert_eq!(inferred.distinct, 3);
        assert!(
            inferred.reason.contains("10 missing"),
            "{}",
            inferred.reason
        );
        let mut sparse = vec!["NA"; 99];
        sparse.push("4");
        assert_eq!(column("s", &sparse).column_type, ColumnType::MostlyMissing);
    }

    #[test]
    fn few_distinct_integers_are_classes() {
        assert!(numbers_are_classes(&[0.0, 1.0, 2.0, 1.0]));
        assert!(!numbers_are_classes(&[0.5, 1.0]));
        let many: Vec<f64> = (0..=MAX_AUTO_CLASSES).map(|i| i as f64).collect();
        assert!(!numbers_are_classes(&many));
    }
}
