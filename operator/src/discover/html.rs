//! The discovery as HTML: a section for the study report, and a page of its own for
//! `flywheel discover --html`.

use std::fmt::Write as _;

use flywheel_core::discover::{Discovery, table_name};

use super::text::rows_note;
use crate::local::html::escape;

/// The discovery section: tables with their columns, proposed targets, joins, skipped files.
pub fn section(discovery: &Discovery) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<h2>Data discovery</h2><p class=\"muted\"><code>{}</code>: {} tables, {} skipped; at \
         most {} rows profiled per table.</p>",
        escape(&discovery.root),
        discovery.tables.len(),
        discovery.skipped.len(),
        discovery.sample_limit
    );
    html.push_str("<h3>Proposed targets</h3>");
    if discovery.targets.is_empty() {
        html.push_str("<p>none</p>");
    } else {
        html.push_str(
            "<table><tr><th>table</th><th>target</th><th>task</th><th>score</th><th>why</th></tr>",
        );
        for target in &discovery.targets {
            let classes = target
                .classes
                .map_or_else(String::new, |c| format!(" ({c} classes)"));
            let _ = write!(
                html,
                "<tr><td>{}</td><td><b>{}</b></td><td>{}{classes}</td><td>{}</td><td>{}</td></tr>",
                escape(&table_name(&target.table)),
                escape(&target.column),
                target.task.as_str(),
                target.score,
                escape(&target.why.join("; "))
            );
        }
        html.push_str("</table>");
    }
    html.push_str("<h3>Joins</h3>");
    if discovery.joins.is_empty() {
        html.push_str("<p>none</p>");
    } else {
        html.push_str("<table><tr><th>column</th><th>key</th><th>overlap</th></tr>");
        for join in &discovery.joins {
            let _ = write!(
                html,
                "<tr><td>{}.{}</td><td>{}.{}</td><td>{:.1}% ({} of {})</td></tr>",
                escape(&table_name(&join.from_table)),
                escape(&join.from_column),
                escape(&table_name(&join.to_table)),
                escape(&join.to_column),
                join.overlap * 100.0,
                join.matched,
                join.distinct
            );
        }
        html.push_str("</table>");
    }
    for table in &discovery.tables {
        let _ = write!(
            html,
            "<h3><code>{}</code></h3><p class=\"muted\">{}, {}</p><table><tr><th>column</th>\
             <th>type</th><th>missing</th><th>distinct</th><th>key</th><th>why</th></tr>",
            escape(&table.location),
            escape(&table.format),
            rows_note(table)
        );
        for column in &table.columns {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&column.name),
                column.column_type.kind(),
                column.missing_rate * 100.0,
                column.distinct,
                if column.candidate_key { "key" } else { "" },
                escape(&column.reason)
            );
        }
        html.push_str("</table>");
    }
    if !discovery.skipped.is_empty() {
        html.push_str("<h3>Skipped</h3><ul>");
        for skipped in &discovery.skipped {
            let _ = write!(
                html,
                "<li><code>{}</code>: {}</li>",
                escape(&skipped.location),
                escape(&skipped.reason)
            );
        }
        html.push_str("</ul>");
    }
    html
}

/// A self-contained page holding [`section`].
pub fn page(discovery: &Discovery) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Flywheel \
         discovery {}</title><style>body{{font-family:system-ui,sans-serif;margin:2em auto;\
         max-width:960px;color:#222}}table{{border-collapse:collapse;font-size:13px}}td,th{{\
         border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}.muted{{color:#777}}\
         </style></head><body>{}</body></html>\n",
        escape(&discovery.root),
        section(discovery)
    )
}
