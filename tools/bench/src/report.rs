//! The rows of the result table, their targets, and how they are printed.

use serde::Serialize;

use crate::stats::Figure;

/// What a row promises.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Our speed at least this fraction of the baseline's.
    SpeedAtLeast(f64),
    /// Our median below this many milliseconds.
    MedianBelowMs(f64),
}

#[derive(Debug, Serialize)]
pub struct Row {
    /// The numbering: "1", "1b", ...
    pub key: String,
    /// The host that served the API, for the rows that have one.
    pub host: Option<String>,
    pub benchmark: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub ours: Figure,
    pub baseline: Figure,
    /// Our speed as a multiple of the baseline's: ours ÷ baseline for rates,
    /// baseline ÷ ours for times. 0.5 means half as fast.
    pub speed: f64,
    pub target: Option<Target>,
    pub met: Option<bool>,
    /// Figures measured on the way that have no baseline of their own.
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(
        key: &str,
        benchmark: impl Into<String>,
        unit: &'static str,
        higher_is_better: bool,
        ours: Figure,
        baseline: Figure,
        target: Option<Target>,
    ) -> Row {
        let (o, b) = (ours.median(), baseline.median());
        let speed = if higher_is_better { o / b } else { b / o };
        let met = target.map(|t| match t {
            Target::SpeedAtLeast(min) => speed >= min,
            Target::MedianBelowMs(max) => o < max,
        });
        Row {
            key: key.to_owned(),
            host: None,
            benchmark: benchmark.into(),
            unit,
            higher_is_better,
            ours,
            baseline,
            speed,
            target,
            met,
            notes: Vec::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.notes.push(note.into());
        self
    }
}

fn number(x: f64) -> String {
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else if x >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{x:.digits$}");
    // Thousands separators for the integer part.
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 && c.is_ascii_digit() {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        grouped
    } else {
        format!("{grouped}.{frac}")
    }
}

fn cell(figure: &Figure, unit: &str) -> String {
    let mut text = format!("{} {unit}", number(figure.median()));
    if let (Some(p50), Some(p99)) = (figure.p50_ms, figure.p99_ms) {
        text.push_str(&format!(
            " (p50 {} ms, p99 {} ms)",
            number(p50),
            number(p99)
        ));
    }
    text
}

/// The table as Markdown, ready for BENCHMARKS.md.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| # | Benchmark | Host | Ours (median) | Baseline (median) | Speed vs baseline | Target | Met |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let target = match row.target {
            None => "—".to_owned(),
            Some(Target::SpeedAtLeast(min)) => format!("≥ {min:.2}×"),
            Some(Target::MedianBelowMs(max)) => format!("< {max} ms"),
        };
        let met = match row.met {
            None => "—",
            Some(true) => "yes",
            Some(false) => "**no**",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {}<br>{} | {}<br>{} | {:.2}× | {target} | {met} |\n",
            row.key,
            row.benchmark,
            row.host.as_deref().unwrap_or("—"),
            cell(&row.ours, row.unit),
            row.ours.name,
            cell(&row.baseline, row.unit),
            row.baseline.name,
            row.speed,
        ));
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            let on = r
                .host
                .as_ref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            r.notes.iter().map(move |n| format!("- {}{on}: {n}", r.key))
        })
        .collect();
    if !notes.is_empty() {
        out.push_str("\nAlso measured:\n\n");
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}
