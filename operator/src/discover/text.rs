//! The readable form of a discovery: one block per table, then targets, joins and skipped files.

use std::fmt::Write as _;

use flywheel_core::discover::{Discovery, TableProfile, table_name};

/// Columns padded to their widest cell, two spaces apart.
fn aligned(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out
}

/// "120 rows" or "1000000 rows, 50000 sampled (the first)".
pub fn rows_note(table: &TableProfile) -> String {
    if table.sampled {
        format!(
            "{} rows, profiled on a sample of the first {}",
            table.rows, table.sample_rows
        )
    } else {
        format!("{} rows", table.rows)
    }
}

pub fn render(discovery: &Discovery) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} tables, {} skipped (at most {} rows profiled per table)",
        discovery.root,
        discovery.tables.len(),
        discovery.skipped.len(),
        discovery.sample_limit
    );
    for table in &discovery.tables {
        let _ = writeln!(
            out,
            "\n{} ({}, {}, {} columns)",
            table.location,
            table.format,
            rows_note(table),
            table.columns.len()
        );
        let mut rows = vec![
            ["column", "type", "missing", "distinct", "key"]
                .map(String::from)
                .to_vec(),
        ];
        for column in &table.columns {
            rows.push(vec![
                column.name.clone(),
                column.column_type.kind().to_string(),
                format!("{:.1}%", column.missing_rate * 100.0),
                column.distinct.to_string(),
                if column.candidate_key { "key" } else { "" }.to_string(),
            ]);
        }
        out.push_str(&aligned(&rows));
    }
    out.push_str("\nProposed targets (score: points from the rules in docs/discover.md)\n");
    if discovery.targets.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![
            ["table", "target", "task", "score", "why"]
                .map(String::from)
                .to_vec(),
        ];
        for target in &discovery.targets {
            let task = match target.classes {
                Some(classes) => format!("{} ({classes} classes)", target.task.as_str()),
                None => target.task.as_str().to_string(),
            };
            rows.push(vec![
                table_name(&target.table),
                target.column.clone(),
                task,
                target.score.to_string(),
                target.why.join("; "),
            ]);
        }
        out.push_str(&aligned(&rows));
    }
    out.push_str("\nJoins (share of the column's distinct values found in the key)\n");
    if discovery.joins.is_empty() {
        out.push_str("  none\n");
    }
    for join in &discovery.joins {
        let _ = writeln!(
            out,
            "  {}.{} -> {}.{}  overlap {:.1}% ({} of {})",
            table_name(&join.from_table),
            join.from_column,
            table_name(&join.to_table),
            join.to_column,
            join.overlap * 100.0,
            join.matched,
            join.distinct
        );
    }
    if !discovery.skipped.is_empty() {
        out.push_str("\nSkipped\n");
        for skipped in &discovery.skipped {
            let _ = writeln!(out, "  {}: {}", skipped.location, skipped.reason);
        }
    }
    out
}
