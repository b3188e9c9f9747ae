//! The wire format of `GET /api/changes`: pages of upserts and tombstones
//! over the four content tables, and the row shapes they carry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One page of the change feed.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Opaque; the only thing the agent does with it is send it back.
    pub next_cursor: String,
    pub has_more: bool,
    pub phase: Phase,
}

/// Whether a page belongs to the initial full snapshot or to the log that
/// follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Snapshot,
    Log,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Change {
    pub table: Table,
    pub op: Op,
    pub id: i64,
    /// The row as the API's GET returns it; absent on deletes.
    #[serde(default)]
    pub row: Option<Value>,
}

/// The mirrored tables. A table the server adds later arrives as
/// [`Table::Other`] and is skipped, so an older agent keeps syncing the
/// tables it knows instead of stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    LearningContent,
    ContentFragments,
    FragmentAssets,
    Rankings,
    #[serde(other)]
    Other,
}

impl Table {
    /// The four tables in parent-before-child order.
    pub const ALL: [Table; 4] = [
        Table::LearningContent,
        Table::ContentFragments,
        Table::FragmentAssets,
        Table::Rankings,
    ];

    /// The table's name, both on the wire and in the store.
    pub fn name(self) -> &'static str {
        match self {
            Table::LearningContent => "learning_content",
            Table::ContentFragments => "content_fragments",
            Table::FragmentAssets => "fragment_assets",
            Table::Rankings => "rankings",
            Table::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

/// `learning_content` as the API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentRow {
    pub id: i64,
    pub title: String,
    pub content_type: String,
    pub language: String,
    pub native_text: String,
    pub translation: String,
    pub ipa: String,
    pub difficulty_level: Option<i64>,
    pub tags: Option<Value>,
    pub content_metadata: Option<Value>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// `content_fragments` as the API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct FragmentRow {
    pub id: i64,
    pub learning_content_id: Option<i64>,
    pub native_text: String,
    pub body_text: String,
    pub ipa: Option<String>,
    pub extra: Option<String>,
    pub fragment_type: String,
    pub fragment_metadata: Option<Value>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// `fragment_assets` metadata as the API returns it (never the bytes).
#[derive(Debug, Clone, Deserialize)]
pub struct AssetRow {
    pub id: i64,
    pub fragment_id: Option<i64>,
    pub asset_type: String,
    pub asset_metadata: Option<Value>,
    pub content_type: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
}

/// `rankings` as the API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct RankingRow {
    pub id: i64,
    pub fragment_id: Option<i64>,
    pub asset_id: Option<i64>,
    pub rank_score: Option<Score>,
    pub assessed_by: String,
    pub assessment_notes: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A NUMERIC(3,2) score kept exactly: the text the server sent and its value
/// in hundredths. A float would turn "4.35" into 4.3499999…
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Score {
    pub text: String,
    pub hundredths: i64,
}

impl Score {
    /// Parses a plain decimal (`4`, `4.5`, `4.50`, `-0.25`) with at most
    /// two fractional digits.
    pub fn parse(text: &str) -> Option<Score> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((_, "")) => return None,
            Some(parts) => parts,
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || int.len() > 15
            || frac.len() > 2
            || !all_digits(int)
            || !all_digits(frac)
        {
            return None;
        }
        let mut hundredths: i64 = int.parse().ok()?;
        hundredths = hundredths * 100 + format!("{frac:0<2}").parse::<i64>().ok()?;
        Some(Score {
            text: text.to_owned(),
            hundredths: if negative { -hundredths } else { hundredths },
        })
    }
}

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        // The contract says a string; a bare JSON number is accepted too (as
        // its literal text) so that a server sending one is still mirrored
        // exactly instead of rejected.
        let text = match Value::deserialize(de)? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "rank_score must be a decimal string, got {other}"
                )));
            }
        };
        Score::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "rank_score {text:?} is not a decimal with at most two fractional digits"
            ))
        })
    }
}

/// The JSON text to store for a JSON column: SQL NULL for an absent value
/// or JSON null, the compact serialisation otherwise.
pub fn json_text(value: &Option<Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse_exactly() {
        assert_eq!(Score::parse("4.50").unwrap().hundredths, 450);
        assert_eq!(Score::parse("4.5").unwrap().hundredths, 450);
        assert_eq!(Score::parse("4.35").unwrap().hundredths, 435);
        assert_eq!(Score::parse("0").unwrap().hundredths, 0);
        assert_eq!(Score::parse("-0.25").unwrap().hundredths, -25);
        assert_eq!(Score::parse("4.50").unwrap().text, "4.50");
        for bad in ["", ".5", "4.505", "4,5", "1e2", "abc", "4.", "-"] {
            assert!(Score::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_page_parses_and_unknown_tables_are_kept_as_other() {
        let page: ChangePage = serde_json::from_value(serde_json::json!({
            "changes": [
                {"table": "rankings", "op": "upsert", "id": 3, "row": {
                    "id": 3, "fragment_id": 1, "asset_id": 2, "rank_score": "4.50",
                    "assessed_by": "nok", "assessment_notes": null,
                    "created_at": "2026-11-25T16:07:19.123456Z", "updated_at": null}},
                {"table": "content_fragments", "op": "delete", "id": 7},
                {"table": "decks", "op": "upsert", "id": 1, "row": {}}
            ],
            "next_cursor": "abc", "has_more": true, "phase": "snapshot"
        }))
        .unwrap();
        assert_eq!(page.changes.len(), 3);
        assert_eq!(page.changes[1].op, Op::Delete);
        assert!(page.changes[1].row.is_none());
        assert_eq!(page.changes[2].table, Table::Other);
        let ranking: RankingRow =
            serde_json::from_value(page.changes[0].row.clone().unwrap()).unwrap();
        assert_eq!(ranking.rank_score.unwrap().hundredths, 450);
    }
}
