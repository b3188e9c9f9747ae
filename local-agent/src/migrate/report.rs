//! The reject report: one JSON line per refused value (table, id, column,
//! reason, detail). A row refused for several reasons has several lines;
//! nothing in it was sent, truncated or repaired.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// Why a value or row could not go. The names are the report's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Longer than the column's varchar(n), in characters.
    TooLong,
    /// JSON text that does not parse.
    InvalidJson,
    /// Datetime text in no format this tool reads.
    InvalidDatetime,
    /// A score outside 0.00..5.00.
    ScoreOutOfRange,
    /// A score that is not a number ('n/a', or '4,5' without the repair).
    ScoreNotANumber,
    /// A score with more than two decimals (never rounded).
    ScoreTooPrecise,
    /// A reference to a row the legacy file does not hold.
    Orphan,
    /// A reference to a row that was itself rejected.
    ParentRejected,
    /// An asset without bytes (the API refuses empty assets).
    EmptyBlob,
    /// An asset type other than audio, image, video.
    UnknownAssetType,
    /// Refused by the server although it passed the checks here.
    ServerRefused,
    /// The server stored other bytes than were sent.
    ChecksumMismatch,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLong => "too_long",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidDatetime => "invalid_datetime",
            Reason::ScoreOutOfRange => "score_out_of_range",
            Reason::ScoreNotANumber => "score_not_a_number",
            Reason::ScoreTooPrecise => "score_too_precise",
            Reason::Orphan => "orphan",
            Reason::ParentRejected => "parent_rejected",
            Reason::EmptyBlob => "empty_blob",
            Reason::UnknownAssetType => "unknown_asset_type",
            Reason::ServerRefused => "server_refused",
            Reason::ChecksumMismatch => "checksum_mismatch",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    pub table: &'static str,
    pub id: i64,
    pub column: String,
    pub reason: Reason,
    pub detail: String,
}

/// Every reject of a run.
#[derive(Debug, Default)]
pub struct Rejects {
    pub lines: Vec<Reject>,
    rows: BTreeSet<(&'static str, i64)>,
}

impl Rejects {
    pub fn add(
        &mut self,
        table: &'static str,
        id: i64,
        column: &str,
        reason: Reason,
        detail: String,
    ) {
        self.rows.insert((table, id));
        self.lines.push(Reject {
            table,
            id,
            column: column.to_owned(),
            reason,
            detail,
        });
    }

    pub fn contains(&self, table: &'static str, id: i64) -> bool {
        self.rows.contains(&(table, id))
    }

    /// Rejected rows of `table` (a row counts once whatever its reasons).
    pub fn rows_of(&self, table: &str) -> usize {
        self.rows.iter().filter(|(t, _)| *t == table).count()
    }

    pub fn total_rows(&self) -> usize {
        self.rows.len()
    }

    /// Lines per reason.
    pub fn by_reason(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for line in &self.lines {
            *m.entry(line.reason.as_str()).or_default() += 1;
        }
        m
    }

    /// Writes the report as JSON Lines, replacing the file (each run
    /// re-evaluates every row, so the report is always complete).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for line in &self.lines {
                serde_json::to_writer(&mut out, line)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_counts_once_however_many_reasons() {
        let mut r = Rejects::default();
        r.add(
            "learning_content",
            1,
            "title",
            Reason::TooLong,
            "201".into(),
        );
        r.add(
            "learning_content",
            1,
            "tags",
            Reason::InvalidJson,
            "x".into(),
        );
        r.add(
            "rankings",
            1,
            "rank_score",
            Reason::ScoreNotANumber,
            "n/a".into(),
        );
        assert_eq!(r.rows_of("learning_content"), 1);
        assert_eq!(r.total_rows(), 2);
        assert_eq!(r.by_reason()["too_long"], 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.jsonl");
        r.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["table"], "learning_content");
        assert_eq!(first["reason"], "too_long");
        assert_eq!(text.lines().count(), 3);
    }
}
