//! Conversions from what the legacy SQLite file holds to what PostgreSQL
//! (through the import API) accepts. Each rule either converts exactly or
//! refuses with a [`Refusal`]: nothing is truncated, rounded away or guessed.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::report::Reason;

/// Why one value cannot go as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// Optional repairs, each off by default and named on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    /// `'4,5'` is read as `4.50` (a decimal comma, as a Thai or European
    /// keyboard wrote it). Without it such a score is a reject.
    pub decimal_comma: bool,
}

/// A JSON column (TEXT in SQLite) to the JSON value sent for JSONB.
///
/// Rule: SQL NULL, `''` (also only whitespace) and the text `null` all become
/// SQL NULL (the legacy application wrote all three for "no value"); text that
/// parses as JSON is kept as that JSON value (PostgreSQL normalises key order
/// and whitespace, the value is the same); anything else is refused.
pub fn json_column(value: &Sql) -> Result<Option<Value>, Refusal> {
    let text = match value {
        Sql::Null => return Ok(None),
        Sql::Text(t) => t.as_str(),
        Sql::Integer(i) => return Ok(Some(Value::from(*i))),
        Sql::Real(r) => {
            return serde_json::Number::from_f64(*r)
                .map(|n| Some(Value::Number(n)))
                .ok_or_else(|| refuse(Reason::InvalidJson, format!("{r} is not a JSON number")));
        }
        Sql::Blob(_) => return Err(refuse(Reason::InvalidJson, "a BLOB, not JSON text")),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(refuse(
            Reason::InvalidJson,
            format!("{e}: {}", preview(text)),
        )),
    }
}

/// A DATETIME column (TEXT) to an RFC 3339 instant in UTC with microseconds,
/// the form the API returns (`2025-03-01T12:34:56.123456Z`).
///
/// Rule: NULL → null; `YYYY-MM-DD HH:MM:SS[.ffffff]` and the same with `T`
/// but no offset are naive and mean UTC (as SQLAlchemy wrote them); ISO 8601
/// with `Z` or an offset is that instant. More than 6 fractional digits
/// (PostgreSQL would round) or anything else is refused.
pub fn datetime(value: &Sql) -> Result<Option<String>, Refusal> {
    let text = match value {
        Sql::Null => return Ok(None),
        Sql::Text(t) => t.trim(),
        other => {
            return Err(refuse(
                Reason::InvalidDatetime,
                format!("{other:?} is not datetime text"),
            ));
        }
    };
    if let Some(frac) = text.split('.').nth(1) {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        if digits > 6 {
            return Err(refuse(
                Reason::InvalidDatetime,
                format!("{text}: more than microsecond precision"),
            ));
        }
    }
    let instant = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&Utc)
    } else if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z") {
        t.with_timezone(&Utc)
    } else if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        t.and_utc()
    } else if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        t.and_utc()
    } else {
        return Err(refuse(
            Reason::InvalidDatetime,
            format!("{} is not a datetime this tool reads", preview(text)),
        ));
    };
    Ok(Some(instant.to_rfc3339_opts(SecondsFormat::Micros, true)))
}

/// How far a REAL may be from a hundredth and still count as that
/// hundredth: binary floats cannot hold 4.07 exactly (it is
/// 4.07000000000000028...), but anything further off than this was not a
/// two-decimal number.
pub const HUNDREDTH_TOLERANCE: f64 = 1e-9;

/// A `NUMERIC(3,2)` score (REAL, INTEGER or TEXT in SQLite) to the exact
/// two-decimal string the API takes (`"4.50"`).
///
/// Rule: NULL → null; INTEGER n → `n.00`; REAL within
/// [`HUNDREDTH_TOLERANCE`] of a hundredth → that hundredth, further off (e.g.
/// 4.567) → refused as too precise, never rounded; TEXT must be a plain
/// decimal with at most two significant decimals (`4.5`, `4.50`, `4.500`);
/// `4,5` only with [`Repairs::decimal_comma`]; anything else is not a number.
/// The result must lie in 0.00..=5.00.
pub fn score(value: &Sql, repairs: Repairs) -> Result<Option<String>, Refusal> {
    let hundredths: i64 = match value {
        Sql::Null => return Ok(None),
        Sql::Integer(i) => i
            .checked_mul(100)
            .ok_or_else(|| out_of_range(&i.to_string()))?,
        Sql::Real(r) => {
            if !r.is_finite() {
                return Err(refuse(Reason::ScoreNotANumber, r.to_string()));
            }
            let scaled = (r * 100.0).round();
            if (r - scaled / 100.0).abs() > HUNDREDTH_TOLERANCE {
                return Err(refuse(
                    Reason::ScoreTooPrecise,
                    format!("{r} has more than two decimals"),
                ));
            }
            if scaled.abs() > 1e12 {
                return Err(out_of_range(&r.to_string()));
            }
            scaled as i64
        }
        Sql::Text(t) => text_score(t, repairs)?,
        Sql::Blob(_) => return Err(refuse(Reason::ScoreNotANumber, "a BLOB")),
    };
    if !(0..=500).contains(&hundredths) {
        return Err(out_of_range(&format_hundredths(hundredths)));
    }
    Ok(Some(format_hundredths(hundredths)))
}

fn out_of_range(shown: &str) -> Refusal {
    refuse(
        Reason::ScoreOutOfRange,
        format!("{shown} is outside 0.00..5.00"),
    )
}

fn text_score(text: &str, repairs: Repairs) -> Result<i64, Refusal> {
    let t = text.trim();
    let not_a_number = || refuse(Reason::ScoreNotANumber, format!("'{}'", preview(text)));
    let t = if t.contains(',') {
        if !repairs.decimal_comma || t.matches(',').count() != 1 || t.contains('.') {
            return Err(not_a_number());
        }
        t.replace(',', ".")
    } else {
        t.to_owned()
    };
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || (digits.contains('.') && frac.is_empty())
    {
        return Err(not_a_number());
    }
    let significant = frac.trim_end_matches('0');
    if significant.len() > 2 {
        return Err(refuse(
            Reason::ScoreTooPrecise,
            format!("'{t}' has more than two decimals"),
        ));
    }
    if whole.len() > 6 {
        return Err(out_of_range(&t));
    }
    let whole: i64 = whole.parse().map_err(|_| not_a_number())?;
    let frac: i64 = format!("{significant:0<2}")
        .parse()
        .map_err(|_| not_a_number())?;
    let v = whole * 100 + frac;
    Ok(if negative { -v } else { v })
}

fn format_hundredths(h: i64) -> String {
    let sign = if h < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", h.abs() / 100, h.abs() % 100)
}

/// A text column limited to `max` characters (PostgreSQL's varchar(n)
/// counts characters, not bytes). Never truncated: longer is refused.
pub fn bounded_text(text: &str, max: usize) -> Result<(), Refusal> {
    let n = text.chars().count();
    if n > max {
        return Err(refuse(
            Reason::TooLong,
            format!("{n} characters, at most {max}"),
        ));
    }
    Ok(())
}

/// The Content-Type an asset is sent with, from what its legacy metadata
/// says: an explicit media type (`mime_type`, `mimetype`, `mimeType`, `mime`,
/// `content_type`, `contentType`), else a format or extension (`format`,
/// `extension`, `ext`), else the extension of a file name (`filename`,
/// `file_name`, `file`, `path`, `name`, `url`), else
/// application/octet-stream. `asset_type` decides formats that can be
/// audio or video (webm).
pub fn media_type(metadata: Option<&Value>, asset_type: &str) -> String {
    let get = |k: &str| metadata.and_then(|m| m.get(k)).and_then(Value::as_str);
    let explicit = [
        "mime_type",
        "mimetype",
        "mimeType",
        "mime",
        "content_type",
        "contentType",
    ]
    .into_iter()
    .filter_map(get)
    .map(str::trim)
    .find(|t| is_media_type(t));
    if let Some(t) = explicit {
        return t.to_ascii_lowercase();
    }
    let format = ["format", "extension", "ext"]
        .into_iter()
        .filter_map(get)
        .map(|f| f.trim().trim_start_matches('.').to_ascii_lowercase())
        .find(|f| !f.is_empty());
    let from_name = || {
        ["filename", "file_name", "file", "path", "name", "url"]
            .into_iter()
            .filter_map(get)
            .filter_map(|n| {
                let n = n.split(['?', '#']).next().unwrap_or(n);
                let file = n.rsplit(['/', '\\']).next().unwrap_or(n);
                file.rsplit_once('.')
                    .map(|(_, ext)| ext.to_ascii_lowercase())
            })
            .next()
    };
    format
        .or_else(from_name)
        .and_then(|f| by_format(&f, asset_type))
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// `type/subtype` in the characters RFC 6838 allows (parameters such as
/// `; codecs=…` are kept).
fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    matches!(essence.split_once('/'), Some((t, sub)) if token(t) && token(sub))
}

fn by_format(format: &str, asset_type: &str) -> Option<&'static str> {
    Some(match format {
        "mp3" | "mpeg" | "mpga" => "audio/mpeg",
        "wav" | "wave" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" if asset_type == "audio" => "audio/webm",
        "webm" => "video/webm",
        _ => return None,
    })
}

/// A JSON value with object keys sorted, for checksums that do not depend
/// on key order or whitespace.
pub fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        // Numbers through f64 where they are not integers: JSONB turns
        // 1.50 into 1.5, and both must agree.
        Value::Number(n) if n.is_f64() => Value::from(n.as_f64().unwrap_or_default()).to_string(),
        other => other.to_string(),
    }
}

fn preview(text: &str) -> String {
    let short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Sql {
        Sql::Text(s.to_owned())
    }

    #[test]
    fn json_null_empty_and_null_text_become_null() {
        assert_eq!(json_column(&Sql::Null).unwrap(), None);
        assert_eq!(json_column(&text("")).unwrap(), None);
        assert_eq!(json_column(&text("  ")).unwrap(), None);
        assert_eq!(json_column(&text("null")).unwrap(), None);
    }

    #[test]
    fn valid_json_is_kept_and_invalid_json_refused() {
        assert_eq!(
            json_column(&text(r#"{"b": 1.50, "a": ["สวัสดี"]}"#)).unwrap(),
            // Kept as parsed: the digits too (serde_json's arbitrary_precision).
            Some(
                serde_json::from_str::<serde_json::Value>(r#"{"a": ["สวัสดี"], "b": 1.50}"#).unwrap()
            )
        );
        assert_eq!(
            json_column(&text("[]")).unwrap(),
            Some(serde_json::json!([]))
        );
        assert_eq!(
            json_column(&text("\"x\"")).unwrap(),
            Some(serde_json::json!("x"))
        );
        let err = json_column(&text("{'not': json,")).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidJson);
        assert_eq!(
            json_column(&text("tag1, tag2")).unwrap_err().reason,
            Reason::InvalidJson
        );
    }

    #[test]
    fn datetimes_in_every_legacy_format() {
        let ok = |s: &str| datetime(&text(s)).unwrap().unwrap();
        assert_eq!(
            ok("2025-03-01 12:34:56.123456"),
            "2025-03-01T12:34:56.123456Z"
        );
        assert_eq!(ok("2025-03-01 12:34:56"), "2025-03-01T12:34:56.000000Z");
        assert_eq!(ok("2025-03-01 12:34:56.5"), "2025-03-01T12:34:56.500000Z");
        assert_eq!(ok("2024-11-30T23:59:59Z"), "2024-11-30T23:59:59.000000Z");
        assert_eq!(
            ok("2024-07-04T08:15:00+07:00"),
            "2024-07-04T01:15:00.000000Z"
        );
        assert_eq!(ok("2024-07-04T08:15:00"), "2024-07-04T08:15:00.000000Z");
        assert_eq!(datetime(&Sql::Null).unwrap(), None);
        for bad in [
            "yesterday",
            "2025-13-01 00:00:00",
            "2025-03-01 12:34:56.1234567",
            "",
        ] {
            assert_eq!(
                datetime(&text(bad)).unwrap_err().reason,
                Reason::InvalidDatetime,
                "{bad}"
            );
        }
    }

    #[test]
    fn scores_become_exact_two_decimal_strings() {
        let none = Repairs::default();
        let ok = |v: Sql| score(&v, none).unwrap().unwrap();
        assert_eq!(ok(Sql::Real(4.5)), "4.50");
        assert_eq!(ok(Sql::Real(4.07)), "4.07");
        assert_eq!(ok(Sql::Real(0.1 + 0.2)), "0.30");
        assert_eq!(ok(Sql::Integer(5)), "5.00");
        assert_eq!(ok(Sql::Integer(0)), "0.00");
        assert_eq!(ok(text("4.5")), "4.50");
        assert_eq!(ok(text("4.500")), "4.50");
        assert_eq!(ok(text(" 3 ")), "3.00");
        assert_eq!(score(&Sql::Null, none).unwrap(), None);
        for (v, reason) in [
            (Sql::Real(7.5), Reason::ScoreOutOfRange),
            (Sql::Real(-1.0), Reason::ScoreOutOfRange),
            (Sql::Real(5.01), Reason::ScoreOutOfRange),
            (Sql::Integer(6), Reason::ScoreOutOfRange),
            (Sql::Real(4.567), Reason::ScoreTooPrecise),
            (text("4.567"), Reason::ScoreTooPrecise),
            (text("4,5"), Reason::ScoreNotANumber),
            (text("n/a"), Reason::ScoreNotANumber),
            (text("4."), Reason::ScoreNotANumber),
            (text(""), Reason::ScoreNotANumber),
            (Sql::Real(f64::NAN), Reason::ScoreNotANumber),
        ] {
            assert_eq!(score(&v, none).unwrap_err().reason, reason, "{v:?}");
        }
    }

    #[test]
    fn the_decimal_comma_repair_is_opt_in() {
        let repair = Repairs {
            decimal_comma: true,
        };
        assert_eq!(score(&text("4,5"), repair).unwrap().unwrap(), "4.50");
        assert_eq!(
            score(&text("n/a"), repair).unwrap_err().reason,
            Reason::ScoreNotANumber
        );
        assert_eq!(
            score(&text("1,234.5"), repair).unwrap_err().reason,
            Reason::ScoreNotANumber
        );
        assert_eq!(
            score(&text("7,5"), repair).unwrap_err().reason,
            Reason::ScoreOutOfRange
        );
    }

    #[test]
    fn lengths_count_characters_and_thai_is_untouched() {
        // 200 Thai characters with combining marks: 600 bytes, still fits.
        let thai = "ผู้".repeat(66) + "ก๊";
        assert_eq!(thai.chars().count(), 200);
        bounded_text(&thai, 200).unwrap();
        let long = thai.clone() + "ก";
        assert_eq!(
            bounded_text(&long, 200).unwrap_err().reason,
            Reason::TooLong
        );
        // JSON carrying Thai round-trips byte for byte.
        let v = json_column(&text(r#"{"t":"ผู้หญิง"}"#)).unwrap().unwrap();
        assert_eq!(v["t"].as_str().unwrap().as_bytes(), "ผู้หญิง".as_bytes());
    }

    #[test]
    fn media_types_from_what_legacy_metadata_carries() {
        use serde_json::json;
        let of = |meta: serde_json::Value| media_type(Some(&meta), "audio");
        assert_eq!(of(json!({"format": "mp3"})), "audio/mpeg");
        assert_eq!(of(json!({"mime_type": "audio/mpeg"})), "audio/mpeg");
        assert_eq!(of(json!({"mimeType": "Audio/OGG"})), "audio/ogg");
        assert_eq!(
            of(json!({"content_type": "audio/webm; codecs=opus"})),
            "audio/webm; codecs=opus"
        );
        // An explicit type wins over the format; one that is not a media
        // type does not.
        assert_eq!(
            of(json!({"mime_type": "audio/wav", "format": "mp3"})),
            "audio/wav"
        );
        assert_eq!(
            of(json!({"mime_type": "mp3 audio", "format": "mp3"})),
            "audio/mpeg"
        );
        assert_eq!(of(json!({"extension": ".WAV"})), "audio/wav");
        assert_eq!(of(json!({"filename": "tts/สวัสดี.m4a"})), "audio/mp4");
        assert_eq!(
            of(json!({"url": "https://cdn.example/a/b.ogg?v=2"})),
            "audio/ogg"
        );
        assert_eq!(of(json!({"format": "webm"})), "audio/webm");
        assert_eq!(
            media_type(Some(&json!({"format": "webm"})), "video"),
            "video/webm"
        );
        assert_eq!(
            of(json!({"voice": "th-TH", "format": "xyz"})),
            "application/octet-stream"
        );
        assert_eq!(of(json!({"format": 3})), "application/octet-stream");
        assert_eq!(media_type(None, "audio"), "application/octet-stream");
    }

    #[test]
    fn canonical_json_ignores_key_order_and_number_spelling() {
        assert_eq!(
            canonical(&serde_json::json!({"b": 1.50, "a": [1, {"d": 2, "c": "x"}]})),
            canonical(&serde_json::from_str(r#"{"a":[1,{"c":"x","d":2}],"b":1.5}"#).unwrap())
        );
    }
}
