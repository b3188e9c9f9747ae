//! The four resources: each a table of the content model (its fields come
//! from `content-model`) served under a path, with the filters of its list
//! endpoint; and how a field is read from and written to PostgreSQL and
//! validated. CRUD, the feed, the import and the OpenAPI document are all
//! derived from here.

use serde_json::{Map, Value};
use spin_sdk::pg4::{ParameterValue, RowSet};

pub use content_model::{ASSET_TYPES, Access, Field, Kind};

use crate::problem::Problem;
use crate::value;

/// A list filter, a query parameter.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    /// `column = value` on an integer column.
    IntEq(&'static str),
    /// `column = value` on a text column.
    TextEq(&'static str),
    /// `column @> '["value"]'`: a tag in a JSONB array (GIN-indexed).
    JsonTag(&'static str),
    /// A case-insensitive substring of any of the columns.
    Substring(&'static [&'static str]),
}

#[derive(Debug)]
pub struct Resource {
    /// The path segment: `/api/<path>`.
    pub path: &'static str,
    /// The route patterns of the collection and of one row.
    pub collection_route: &'static str,
    pub item_route: &'static str,
    pub table: &'static str,
    /// The OpenAPI schema name.
    pub schema_name: &'static str,
    pub fields: &'static [Field],
    /// Query parameters of the list endpoint and what they filter.
    pub filters: &'static [(&'static str, Filter)],
    /// Whether `POST /api/<path>` takes a JSON body (assets take bytes).
    pub json_create: bool,
}

pub static CONTENT: Resource = Resource {
    path: "content",
    collection_route: "/api/content",
    item_route: "/api/content/:id",
    table: content_model::LEARNING_CONTENT.name,
    schema_name: "Content",
    fields: content_model::LEARNING_CONTENT.fields,
    filters: &[
        ("content_type", Filter::TextEq("content_type")),
        ("language", Filter::TextEq("language")),
        ("tag", Filter::JsonTag("tags")),
        (
            "q",
            Filter::Substring(&["title", "native_text", "translation"]),
        ),
    ],
    json_create: true,
};

pub static FRAGMENTS: Resource = Resource {
    path: "fragments",
    collection_route: "/api/fragments",
    item_route: "/api/fragments/:id",
    table: content_model::CONTENT_FRAGMENTS.name,
    schema_name: "Fragment",
    fields: content_model::CONTENT_FRAGMENTS.fields,
    filters: &[
        ("learning_content_id", Filter::IntEq("learning_content_id")),
        ("fragment_type", Filter::TextEq("fragment_type")),
    ],
    json_create: true,
};

pub static ASSETS: Resource = Resource {
    path: "assets",
    collection_route: "/api/assets",
    item_route: "/api/assets/:id",
    table: content_model::FRAGMENT_ASSETS.name,
    schema_name: "Asset",
    fields: content_model::FRAGMENT_ASSETS.fields,
    filters: &[
        ("fragment_id", Filter::IntEq("fragment_id")),
        ("asset_type", Filter::TextEq("asset_type")),
    ],
    json_create: false,
};

pub static RANKINGS: Resource = Resource {
    path: "rankings",
    collection_route: "/api/rankings",
    item_route: "/api/rankings/:id",
    table: content_model::RANKINGS.name,
    schema_name: "Ranking",
    fields: content_model::RANKINGS.fields,
    filters: &[
        ("fragment_id", Filter::IntEq("fragment_id")),
        ("asset_id", Filter::IntEq("asset_id")),
        ("assessed_by", Filter::TextEq("assessed_by")),
    ],
    json_create: true,
};

/// The four resources in parent-before-child order.
pub static ALL: [&Resource; 4] = [&CONTENT, &FRAGMENTS, &ASSETS, &RANKINGS];

impl Resource {
    pub fn by_table(table: &str) -> Option<&'static Resource> {
        ALL.iter().copied().find(|r| r.table == table)
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The select list (aliased `t`), ending with the row's ETag as `_etag`.
    pub fn select_list(&self) -> String {
        self.select_fields(&self.etag_expr())
    }

    /// The same without computing the ETag (`_etag` is NULL), for pages of
    /// rows, which carry none: the md5 of every row was most of the
    /// database's time for a page (EXPLAIN ANALYZE of 1,000 content rows:
    /// 4.4 ms with it, 1.6 ms without).
    pub fn select_list_without_etag(&self) -> String {
        self.select_fields("NULL::text")
    }

    fn select_fields(&self, etag: &str) -> String {
        let mut parts: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{} AS {}", read_expr(f), f.name))
            .collect();
        parts.push(format!("{etag} AS _etag"));
        parts.join(", ")
    }

    /// Every field's column, for a subquery that the select list reads from.
    pub fn columns(&self) -> String {
        let columns: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("t.{}", f.column))
            .collect();
        columns.join(", ")
    }

    /// About what a row weighs in a query result: its texts' lengths
    /// (which PostgreSQL knows without decompressing them), its JSON as
    /// text, and a constant for the fixed-size fields.
    pub fn size_expr(&self) -> String {
        let mut terms = vec![(16 * self.fields.len()).to_string()];
        for field in self.fields {
            match field.kind {
                Kind::Text(_) | Kind::Enum(_) => {
                    terms.push(format!("coalesce(octet_length(t.{}), 0)", field.column));
                }
                Kind::Json => {
                    terms.push(format!(
                        "coalesce(octet_length(t.{}::text), 0)",
                        field.column
                    ));
                }
                Kind::Id | Kind::Int | Kind::BigInt | Kind::Score | Kind::Timestamp => {}
            }
        }
        terms.join(" + ")
    }

    /// The row's JSON representation, the one [`Resource::row_json`]
    /// builds, as text made by PostgreSQL from the columns of `t`. Pages
    /// of the feed pass it through: one text a page crosses the host
    /// instead of every value of every row. Concatenation of each member's
    /// `to_json` is about twice as fast as `json_build_object` here, which
    /// goes through a generic variadic call per row.
    pub fn json_expr(&self) -> String {
        let members: Vec<String> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let key = format!("{}\"{}\":", if i == 0 { '{' } else { ',' }, field.name);
                let value = match field.kind {
                    Kind::Json => format!("t.{}::text", field.column),
                    _ => format!("to_json({})::text", read_expr(field)),
                };
                format!("'{key}' || coalesce({value}, 'null')")
            })
            .collect();
        format!("{} || '}}'", members.join(" || "))
    }

    /// A digest of every field: changes whenever the representation does,
    /// and can be compared inside an UPDATE for If-Match without a race.
    pub fn etag_expr(&self) -> String {
        format!("md5(ROW({})::text)", self.columns())
    }

    /// One result row as its JSON representation, with its ETag.
    pub fn row_json(&self, rows: &RowSet, index: usize) -> Result<(Value, String), Problem> {
        let row = &rows.rows[index];
        let mut object = Map::new();
        for field in self.fields {
            let cell = &row[value::column(rows, field.name)];
            let json = match field.kind {
                Kind::Id | Kind::Int | Kind::BigInt => {
                    value::int(cell, field.name)?.map_or(Value::Null, Value::from)
                }
                Kind::Json => value::json(cell, field.name)?,
                Kind::Text(_) | Kind::Enum(_) | Kind::Score | Kind::Timestamp => {
                    value::text(cell, field.name)?.map_or(Value::Null, Value::from)
                }
            };
            object.insert(field.name.to_owned(), json);
        }
        let etag = value::text(&row[value::column(rows, "_etag")], "_etag")?.unwrap_or_default();
        Ok((Value::Object(object), etag))
    }

    /// Validates a JSON object for a write. `mode` says which fields may
    /// appear and which must. Returns the columns with their SQL
    /// placeholders' casts and bound values, in field order.
    pub fn input(&self, body: &Map<String, Value>, mode: Mode) -> Result<Vec<Assignment>, Problem> {
        for name in body.keys() {
            match self.field(name) {
                None => {
                    return Err(Problem::invalid(
                        name.as_str(),
                        "is not a field of this resource",
                    ));
                }
                Some(f) if !mode.accepts(f.access) => {
                    return Err(Problem::invalid(name.as_str(), "is read-only"));
                }
                Some(_) => {}
            }
        }
        let mut assignments = Vec::new();
        for field in self.fields {
            match body.get(field.name) {
                None if mode.requires(field) => {
                    return Err(Problem::invalid(field.name, "is required"));
                }
                None => {}
                Some(value) => assignments.push(Assignment {
                    column: field.column,
                    cast: cast(field.kind),
                    value: bind(field, value)?,
                }),
            }
        }
        Ok(assignments)
    }
}

/// What a write may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Update,
    /// The bulk import: ids and timestamps too.
    Import,
}

impl Mode {
    fn accepts(self, access: Access) -> bool {
        match access {
            Access::ReadOnly => false,
            Access::Imported => self == Mode::Import,
            Access::Optional | Access::Required => true,
        }
    }

    fn requires(self, field: &Field) -> bool {
        match self {
            Mode::Create => field.access == Access::Required,
            // An import keeps ids, so it must name them.
            Mode::Import => field.access == Access::Required || field.kind == Kind::Id,
            Mode::Update => false,
        }
    }
}

/// One column to write.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub column: &'static str,
    /// Appended to the placeholder: `$3::text::jsonb`.
    pub cast: &'static str,
    pub value: ParameterValue,
}

fn read_expr(field: &Field) -> String {
    let column = format!("t.{}", field.column);
    match field.kind {
        Kind::Id | Kind::Int | Kind::BigInt | Kind::Text(_) | Kind::Enum(_) => column,
        // Text, so that every host hands over the exact digits and JSON.
        Kind::Json | Kind::Score => format!("{column}::text"),
        // Spin cannot read timestamptz at all; RFC 3339 text in UTC instead.
        Kind::Timestamp => {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        }
    }
}

fn cast(kind: Kind) -> &'static str {
    match kind {
        Kind::Id | Kind::Int => "::integer",
        Kind::BigInt => "::bigint",
        Kind::Text(_) | Kind::Enum(_) => "::text",
        // Bound as text and converted by the server: no host conversion in between.
        Kind::Json => "::text::jsonb",
        Kind::Score => "::text::numeric",
        Kind::Timestamp => "::text::timestamptz",
    }
}

/// Checks one value against its field and turns it into a parameter.
fn bind(field: &Field, value: &Value) -> Result<ParameterValue, Problem> {
    let name = field.name;
    if value.is_null() {
        if field.nullable {
            return Ok(ParameterValue::DbNull);
        }
        return Err(Problem::invalid(name, "must not be null"));
    }
    match field.kind {
        Kind::Id | Kind::Int => {
            let n = value
                .as_i64()
                .filter(|_| value.is_i64() || value.is_u64())
                .ok_or_else(|| Problem::invalid(name, "must be an integer"))?;
            let min = if field.kind == Kind::Id {
                1
            } else {
                i64::from(i32::MIN)
            };
            let n = i32::try_from(n)
                .ok()
                .filter(|n| i64::from(*n) >= min)
                .ok_or_else(|| {
                    Problem::invalid(
                        name,
                        format!("must be an integer from {min} to {}", i32::MAX),
                    )
                })?;
            Ok(ParameterValue::Int32(n))
        }
        Kind::BigInt => value
            .as_i64()
            .map(ParameterValue::Int64)
            .ok_or_else(|| Problem::invalid(name, "must be an integer")),
        Kind::Text(max) => {
            let text = value
                .as_str()
                .ok_or_else(|| Problem::invalid(name, "must be a string"))?;
            check_text(name, text, max)?;
            Ok(ParameterValue::Str(text.to_owned()))
        }
        Kind::Enum(allowed) => {
            let text = value
                .as_str()
                .ok_or_else(|| Problem::invalid(name, "must be a string"))?;
            if !allowed.contains(&text) {
                return Err(Problem::invalid(
                    name,
                    format!("must be one of {}", allowed.join(", ")),
                ));
            }
            Ok(ParameterValue::Str(text.to_owned()))
        }
        Kind::Json => {
            if has_nul(value) {
                return Err(Problem::invalid(
                    name,
                    "contains a NUL character, which PostgreSQL cannot store",
                ));
            }
            Ok(ParameterValue::Str(value.to_string()))
        }
        Kind::Score => Ok(ParameterValue::Str(score(name, value)?)),
        Kind::Timestamp => {
            let text = value
                .as_str()
                .ok_or_else(|| Problem::invalid(name, "must be an RFC 3339 date-time string"))?;
            if !is_rfc3339(text) {
                return Err(Problem::invalid(
                    name,
                    "must be an RFC 3339 date-time with an offset, e.g. 2025-03-01T12:34:56.123456Z",
                ));
            }
            Ok(ParameterValue::Str(text.to_owned()))
        }
    }
}

fn check_text(name: &str, text: &str, max: Option<usize>) -> Result<(), Problem> {
    if text.contains('\0') {
        return Err(Problem::invalid(
            name,
            "contains a NUL character, which PostgreSQL cannot store",
        ));
    }
    if let Some(max) = max
        && text.chars().count() > max
    {
        return Err(Problem::invalid(
            name,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A score from a JSON number or string, exactly: digits with at most two
/// decimals, from 0 to 5. Returned normalised to two decimals ("4.50").
pub fn score(name: &str, value: &Value) -> Result<String, Problem> {
    let text = match value {
        // With arbitrary_precision, a number's text is the client's digits.
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(Problem::invalid(
                name,
                "must be a decimal from 0.00 to 5.00",
            ));
        }
    };
    parse_score(&text).ok_or_else(|| {
        Problem::invalid(
            name,
            "must be a decimal from 0.00 to 5.00 with at most two decimals",
        )
    })
}

fn parse_score(text: &str) -> Option<String> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 1
        || !digits(whole)
        || fraction.len() > 2
        || !digits(fraction)
    {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let hundredths =
        whole.parse::<u32>().ok()? * 100 + format!("{fraction:0<2}").parse::<u32>().ok()?;
    (hundredths <= 500).then(|| format!("{}.{:02}", hundredths / 100, hundredths % 100))
}

/// RFC 3339 date-time with a mandatory offset (`Z` or `±hh:mm`).
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let date = (0..4).all(digit)
        && at(4, b'-')
        && digit(5)
        && digit(6)
        && at(7, b'-')
        && digit(8)
        && digit(9);
    let time = (at(10, b'T') || at(10, b't') || at(10, b' '))
        && digit(11)
        && digit(12)
        && at(13, b':')
        && digit(14)
        && digit(15)
        && at(16, b':')
        && digit(17)
        && digit(18);
    if !date || !time {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while digit(i) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    let rest = &text[i..];
    rest == "Z" || rest == "z" || {
        let r = rest.as_bytes();
        r.len() == 6
            && (r[0] == b'+' || r[0] == b'-')
            && r[1].is_ascii_digit()
            && r[2].is_ascii_digit()
            && r[3] == b':'
            && r[4].is_ascii_digit()
            && r[5].is_ascii_digit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_exact_decimals_within_range() {
        for (given, stored) in [
            ("0", "0.00"),
            ("4.99", "4.99"),
            ("5.00", "5.00"),
            ("5", "5.00"),
            ("2.5", "2.50"),
            ("0.01", "0.01"),
        ] {
            assert_eq!(parse_score(given).as_deref(), Some(stored), "{given}");
        }
        for bad in [
            "5.01", "-0.01", "10", "4.999", "", ".5", "5.", "1e0", "04.5", "NaN", "4,5", " 4",
        ] {
            assert_eq!(parse_score(bad), None, "{bad}");
        }
        let v: Value = serde_json::from_str("4.50").unwrap();
        assert_eq!(score("rank_score", &v).unwrap(), "4.50");
        let v: Value = serde_json::from_str("4.999").unwrap();
        assert_eq!(score("rank_score", &v).unwrap_err().status, 422);
    }

    #[test]
    fn json_text_names_every_field_once_in_order() {
        for resource in ALL {
            let sql = resource.json_expr();
            let mut at = 0;
            for field in resource.fields {
                // The names go into SQL and JSON literals unescaped.
                assert!(
                    field
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{}",
                    field.name
                );
                let key = format!("\"{}\":", field.name);
                let found = sql[at..]
                    .find(&key)
                    .unwrap_or_else(|| panic!("{key} in {sql}"));
                at += found + key.len();
            }
            assert_eq!(sql.matches("coalesce(").count(), resource.fields.len());
        }
    }

    #[test]
    fn timestamps_need_an_offset() {
        for ok in [
            "2025-03-01T12:34:56Z",
            "2025-03-01T12:34:56.123456Z",
            "2025-03-01 12:34:56+07:00",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2025-03-01T12:34:56",
            "2025-03-01",
            "2025-03-01T12:34:56.Z",
            "yesterday",
            "2025-03-01T12:34:56+0700",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn create_requires_and_refuses_by_access() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let ok = body(serde_json::json!({
            "title": "สวัสดี", "content_type": "phrase", "native_text": "สวัสดีครับ",
            "translation": "hello", "ipa": "sa.wat.diː", "tags": ["greeting"], "difficulty_level": null
        }));
        let assigned = CONTENT.input(&ok, Mode::Create).unwrap();
        assert_eq!(assigned.len(), 7);
        let missing = body(serde_json::json!({"title": "x"}));
        assert_eq!(
            CONTENT.input(&missing, Mode::Create).unwrap_err().errors[0].field,
            "content_type"
        );
        let unknown = body(serde_json::json!({"titel": "x"}));
        assert_eq!(
            CONTENT.input(&unknown, Mode::Update).unwrap_err().errors[0].field,
            "titel"
        );
        let read_only = body(serde_json::json!({"id": 5}));
        assert_eq!(
            CONTENT.input(&read_only, Mode::Update).unwrap_err().status,
            422
        );
        // The import takes the id; it still wants the required fields.
        assert_eq!(
            CONTENT.input(&read_only, Mode::Import).unwrap_err().errors[0].field,
            "title"
        );
        let mut full = ok.clone();
        full.insert("id".into(), 5.into());
        full.insert("created_at".into(), "2025-03-01T12:34:56.123456Z".into());
        assert_eq!(CONTENT.input(&full, Mode::Import).unwrap().len(), 9);
        assert_eq!(
            CONTENT.input(&ok, Mode::Import).unwrap_err().errors[0].field,
            "id"
        );
        let long = body(serde_json::json!({"title": "ก".repeat(201)}));
        assert_eq!(
            CONTENT.input(&long, Mode::Update).unwrap_err().errors[0].field,
            "title"
        );
        let exactly = body(serde_json::json!({"title": "ก".repeat(200)}));
        assert!(CONTENT.input(&exactly, Mode::Update).is_ok());
        let null = body(serde_json::json!({"title": null}));
        assert_eq!(
            CONTENT.input(&null, Mode::Update).unwrap_err().errors[0].message,
            "must not be null"
        );
        let float = body(serde_json::json!({"difficulty_level": 1.5}));
        assert_eq!(CONTENT.input(&float, Mode::Update).unwrap_err().status, 422);
        let huge = body(serde_json::json!({"difficulty_level": 1_u64 << 40}));
        assert_eq!(CONTENT.input(&huge, Mode::Update).unwrap_err().status, 422);
        let nul = body(serde_json::json!({"tags": ["a\u{0}b"]}));
        assert_eq!(CONTENT.input(&nul, Mode::Update).unwrap_err().status, 422);
    }
}
