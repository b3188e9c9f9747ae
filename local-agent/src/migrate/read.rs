//! Reads the legacy file and turns each row into what the import API takes,
//! or into reject lines. Parents are read before children, so a child of a
//! rejected row is rejected too (`parent_rejected`), and a child whose
//! parent the file does not hold is an `orphan`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use content_model::{CONTENT_FRAGMENTS, FRAGMENT_ASSETS, Kind, LEARNING_CONTENT, Table};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags, Result};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::convert::{self, Refusal, Repairs};
use super::report::{Reason, Rejects};

pub const CONTENT: &str = LEARNING_CONTENT.name;
pub const FRAGMENTS: &str = CONTENT_FRAGMENTS.name;
pub const ASSETS: &str = FRAGMENT_ASSETS.name;
pub const RANKINGS: &str = content_model::RANKINGS.name;

/// A row ready for `POST /api/import/<table>`, with its checksum.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub json: Value,
    pub checksum: String,
}

/// An asset ready for `PUT /api/import/assets/{id}`; its bytes are read
/// from the file when sent.
#[derive(Debug, Clone)]
pub struct Asset {
    pub id: i64,
    pub fragment_id: Option<i64>,
    pub asset_type: String,
    pub metadata: Option<Value>,
    pub created_at: Option<String>,
    pub created_by: Option<String>,
    pub content_type: String,
    pub size: u64,
    /// sha256 of the legacy bytes (hex).
    pub sha256: String,
}

impl Asset {
    /// What the verification compares with the server's row.
    pub fn projection(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.into());
        m.insert("fragment_id".into(), self.fragment_id.into());
        m.insert("asset_type".into(), self.asset_type.clone().into());
        m.insert(
            "asset_metadata".into(),
            self.metadata.clone().unwrap_or(Value::Null),
        );
        m.insert("created_by".into(), self.created_by.clone().into());
        m.insert("content_type".into(), self.content_type.clone().into());
        m.insert("size".into(), self.size.into());
        m.insert("sha256".into(), self.sha256.clone().into());
        // The asset import cannot carry a NULL created_at (the server then
        // stamps the import time): only a known one is compared.
        if let Some(c) = &self.created_at {
            m.insert("created_at".into(), c.clone().into());
        }
        Value::Object(m)
    }

    pub fn checksum(&self) -> String {
        checksum(&self.projection())
    }
}

/// Everything read from the legacy file.
#[derive(Debug, Default)]
pub struct Plan {
    pub content: Vec<Row>,
    pub fragments: Vec<Row>,
    pub assets: Vec<Asset>,
    pub rankings: Vec<Row>,
    pub rejects: Rejects,
    /// Rows per table in the file.
    pub source: BTreeMap<&'static str, usize>,
    /// Whether the file has anki_cards / vector_embeddings / vec_embeddings.
    pub has_cards: bool,
    pub has_vectors: bool,
    pub has_vec0: bool,
}

/// sha256 of a JSON value's canonical text.
pub fn checksum(value: &Value) -> String {
    hex::encode(Sha256::digest(convert::canonical(value).as_bytes()))
}

/// Why the file given to `migrate` cannot be read as a legacy file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyFileError {
    #[error(
        "there is no file {}: give the path of the old application's SQLite file \
         (anki_vector_db.db)", path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "{} is not an SQLite database (SQLite: {detail}); `local-agent migrate` reads the old \
         application's SQLite file (anki_vector_db.db, with the tables of \
         local-agent/legacy/schema.sql): check the path, and that the file is not an export \
         or a copy that was cut short", path.display()
    )]
    NotSqlite { path: PathBuf, detail: String },
    #[error(
        "{} is an SQLite database but not the old application's: it lacks the table(s) {}; \
         `local-agent migrate` reads anki_vector_db.db, with the tables of \
         local-agent/legacy/schema.sql", path.display(), missing.join(", ")
    )]
    NotLegacy {
        path: PathBuf,
        missing: Vec<&'static str>,
    },
    #[error("reading the legacy file {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Opens the legacy file read-only (sqlite-vec must be registered for its
/// vec0 table to be readable; the store does that).
pub fn open(path: &Path) -> Result<Connection, LegacyFileError> {
    if !path.exists() {
        return Err(LegacyFileError::Missing {
            path: path.to_owned(),
        });
    }
    let sqlite = |source: rusqlite::Error| match source {
        // SQLite opens lazily: a file that is not a database fails at the
        // first read, with "file is not a database" (code 26).
        rusqlite::Error::SqliteFailure(e, detail)
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            LegacyFileError::NotSqlite {
                path: path.to_owned(),
                detail: detail.unwrap_or_else(|| e.to_string()),
            }
        }
        source => LegacyFileError::Sqlite {
            path: path.to_owned(),
            source,
        },
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    let mut missing = Vec::new();
    for table in [CONTENT, FRAGMENTS, ASSETS, RANKINGS] {
        if !has_table(&conn, table).map_err(sqlite)? {
            missing.push(table);
        }
    }
    if !missing.is_empty() {
        return Err(LegacyFileError::NotLegacy {
            path: path.to_owned(),
            missing,
        });
    }
    Ok(conn)
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// Raw rows of a query, each as (column name → SQLite value).
fn rows(conn: &Connection, sql: &str) -> Result<Vec<BTreeMap<String, Sql>>> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let out = stmt
        .query_map([], |r| {
            let mut m = BTreeMap::new();
            for (i, n) in names.iter().enumerate() {
                m.insert(n.clone(), r.get::<_, Sql>(i)?);
            }
            Ok(m)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

/// Collects one row's fields and refusals.
struct RowBuilder<'a> {
    table: &'static str,
    id: i64,
    raw: &'a BTreeMap<String, Sql>,
    json: Map<String, Value>,
    refused: Vec<(String, Refusal)>,
}

impl<'a> RowBuilder<'a> {
    fn new(table: &'static str, raw: &'a BTreeMap<String, Sql>) -> Self {
        let id = match raw.get("id") {
            Some(Sql::Integer(i)) => *i,
            _ => 0,
        };
        let mut json = Map::new();
        json.insert("id".into(), id.into());
        RowBuilder {
            table,
            id,
            raw,
            json,
            refused: Vec::new(),
        }
    }

    fn get(&self, col: &str) -> &Sql {
        self.raw.get(col).unwrap_or(&Sql::Null)
    }

    fn refuse(&mut self, col: &str, r: Refusal) {
        self.refused.push((col.to_owned(), r));
    }

    /// A text column, kept byte for byte; `max` in characters.
    fn text(&mut self, col: &str, max: Option<usize>) {
        let v = match self.get(col).clone() {
            Sql::Null => Value::Null,
            Sql::Text(t) => {
                if let Some(max) = max
                    && let Err(r) = convert::bounded_text(&t, max)
                {
                    self.refuse(col, r);
                }
                Value::String(t)
            }
            Sql::Integer(i) => Value::String(i.to_string()),
            Sql::Real(f) => Value::String(f.to_string()),
            Sql::Blob(b) => match String::from_utf8(b) {
                Ok(s) => Value::String(s),
                Err(_) => {
                    self.refuse(
                        col,
                        Refusal {
                            reason: Reason::ServerRefused,
                            detail: "a BLOB that is not UTF-8 text".into(),
                        },
                    );
                    Value::Null
                }
            },
        };
        self.json.insert(col.into(), v);
    }

    fn int(&mut self, col: &str) {
        let v = match self.get(col) {
            Sql::Integer(i) => Value::from(*i),
            _ => Value::Null,
        };
        self.json.insert(col.into(), v);
    }

    fn json_col(&mut self, col: &str) {
        match convert::json_column(self.get(col)) {
            Ok(v) => {
                self.json.insert(col.into(), v.unwrap_or(Value::Null));
            }
            Err(r) => self.refuse(col, r),
        }
    }

    fn time(&mut self, col: &str) {
        match convert::datetime(self.get(col)) {
            Ok(v) => {
                self.json
                    .insert(col.into(), v.map_or(Value::Null, Value::String));
            }
            Err(r) => self.refuse(col, r),
        }
    }

    /// A reference to `parent_table`: NULL is kept, a missing parent is an
    /// orphan, a rejected one makes this row rejected too.
    fn reference(
        &mut self,
        col: &str,
        parent_table: &'static str,
        known: &HashSet<i64>,
        rejects: &Rejects,
    ) {
        let v = match self.get(col) {
            Sql::Integer(i) => *i,
            _ => {
                self.json.insert(col.into(), Value::Null);
                return;
            }
        };
        self.json.insert(col.into(), v.into());
        if !known.contains(&v) {
            self.refuse(
                col,
                Refusal {
                    reason: Reason::Orphan,
                    detail: format!("{parent_table} {v} is not in the legacy file"),
                },
            );
        } else if rejects.contains(parent_table, v) {
            self.refuse(
                col,
                Refusal {
                    reason: Reason::ParentRejected,
                    detail: format!("{parent_table} {v} was rejected"),
                },
            );
        }
    }

    /// Every field of `table` a write may carry, converted by its kind.
    /// A column the legacy file lacks (one added since) is not sent, so
    /// the server's default applies.
    fn fields(&mut self, table: &Table, known: &Known, rejects: &Rejects, repairs: Repairs) {
        for field in table.fields {
            let name = field.name;
            if !field.writable() || field.kind == Kind::Id || !self.raw.contains_key(name) {
                continue;
            }
            if let Some(parent) = field.references {
                self.reference(name, parent, known.of(parent), rejects);
                continue;
            }
            match field.kind {
                Kind::Id => {}
                Kind::Int | Kind::BigInt => self.int(name),
                Kind::Text(max) => self.text(name, max),
                Kind::Enum(allowed) => self.one_of(name, allowed),
                Kind::Json => self.json_col(name),
                Kind::Timestamp => self.time(name),
                Kind::Score => self.score(name, repairs),
            }
        }
    }

    /// A text column restricted to `allowed` (asset_type).
    fn one_of(&mut self, col: &str, allowed: &[&str]) {
        self.text(col, None);
        let value = self.json[col].as_str().unwrap_or_default().to_owned();
        if !allowed.contains(&value.as_str()) {
            self.refuse(
                col,
                Refusal {
                    reason: Reason::UnknownAssetType,
                    detail: format!("'{value}' is none of {}", allowed.join(", ")),
                },
            );
        }
    }

    fn score(&mut self, col: &str, repairs: Repairs) {
        match convert::score(self.get(col), repairs) {
            Ok(s) => {
                self.json
                    .insert(col.into(), s.map_or(Value::Null, Value::String));
            }
            Err(r) => self.refuse(col, r),
        }
    }

    /// Records the refusals; the row if there were none.
    fn finish(self, rejects: &mut Rejects) -> Option<Row> {
        if self.refused.is_empty() {
            let json = Value::Object(self.json);
            return Some(Row {
                id: self.id,
                checksum: checksum(&json),
                json,
            });
        }
        for (col, r) in self.refused {
            rejects.add(self.table, self.id, &col, r.reason, r.detail);
        }
        None
    }
}

/// Reads and converts the four tables (asset bytes are hashed, not kept).
pub fn plan(conn: &Connection, repairs: Repairs) -> Result<Plan> {
    let mut plan = Plan {
        has_cards: has_table(conn, "anki_cards")?,
        has_vectors: has_table(conn, "vector_embeddings")?,
        has_vec0: has_table(conn, "vec_embeddings")?,
        ..Plan::default()
    };
    let mut known = Known::default();

    let raw = rows(conn, "SELECT * FROM learning_content ORDER BY id")?;
    plan.content = read_rows(&LEARNING_CONTENT, &raw, &mut known, &mut plan, repairs);
    let raw = rows(conn, "SELECT * FROM content_fragments ORDER BY id")?;
    plan.fragments = read_rows(&CONTENT_FRAGMENTS, &raw, &mut known, &mut plan, repairs);
    read_assets(conn, &mut known, &mut plan, repairs)?;
    let raw = rows(conn, "SELECT * FROM rankings ORDER BY id")?;
    plan.rankings = read_rows(
        &content_model::RANKINGS,
        &raw,
        &mut known,
        &mut plan,
        repairs,
    );
    Ok(plan)
}

/// The ids each table holds in the legacy file, for the references of the
/// tables read after it.
#[derive(Debug, Default)]
struct Known(BTreeMap<&'static str, HashSet<i64>>);

impl Known {
    /// A parent table's ids: the model lists parents before children, and
    /// they are read in that order.
    fn of(&self, table: &str) -> &HashSet<i64> {
        &self.0[table]
    }
}

/// Converts a table's rows field by field, as the content model declares
/// them; what a row may not carry is rejected.
fn read_rows(
    table: &'static Table,
    raw: &[BTreeMap<String, Sql>],
    known: &mut Known,
    plan: &mut Plan,
    repairs: Repairs,
) -> Vec<Row> {
    plan.source.insert(table.name, raw.len());
    known.0.insert(table.name, ids(raw));
    raw.iter()
        .filter_map(|r| {
            let mut b = RowBuilder::new(table.name, r);
            b.fields(table, known, &plan.rejects, repairs);
            b.finish(&mut plan.rejects)
        })
        .collect()
}

/// Assets: their fields as for any table, then each blob hashed on its own.
fn read_assets(
    conn: &Connection,
    known: &mut Known,
    plan: &mut Plan,
    repairs: Repairs,
) -> Result<()> {
    let table = &FRAGMENT_ASSETS;
    let present = legacy_columns(conn, table.name)?;
    let mut select: Vec<&str> = table
        .fields
        .iter()
        .filter(|f| f.writable() && present.contains(f.name))
        .map(|f| f.name)
        .collect();
    select.push("length(asset_data) AS _bytes");
    let raw = rows(
        conn,
        &format!(
            "SELECT {} FROM {} ORDER BY id",
            select.join(", "),
            table.name
        ),
    )?;
    plan.source.insert(table.name, raw.len());
    known.0.insert(table.name, ids(&raw));
    let mut blob = conn.prepare("SELECT asset_data FROM fragment_assets WHERE id = ?1")?;
    for r in &raw {
        let mut b = RowBuilder::new(table.name, r);
        b.fields(table, known, &plan.rejects, repairs);
        if !matches!(b.get("_bytes"), Sql::Integer(n) if *n > 0) {
            b.refuse(
                "asset_data",
                Refusal {
                    reason: Reason::EmptyBlob,
                    detail: "no bytes; the API refuses empty assets".into(),
                },
            );
        }
        let id = b.id;
        let member = |name: &str| b.json.get(name).cloned().unwrap_or(Value::Null);
        let fragment_id = member("fragment_id").as_i64();
        let asset_type = member("asset_type").as_str().unwrap_or_default().to_owned();
        let metadata = Some(member("asset_metadata")).filter(|v| !v.is_null());
        let created_at = member("created_at").as_str().map(str::to_owned);
        let created_by = member("created_by").as_str().map(str::to_owned);
        if b.finish(&mut plan.rejects).is_some() {
            let data: Vec<u8> = blob.query_row([id], |r| blob_bytes(r.get::<_, Sql>(0)?))?;
            plan.assets.push(Asset {
                id,
                fragment_id,
                content_type: convert::media_type(metadata.as_ref(), &asset_type),
                asset_type,
                metadata,
                created_at,
                created_by,
                size: data.len() as u64,
                sha256: hex::encode(Sha256::digest(&data)),
            });
        }
    }
    Ok(())
}

/// The columns a legacy table has.
fn legacy_columns(conn: &Connection, table: &str) -> Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

fn blob_bytes(value: Sql) -> rusqlite::Result<Vec<u8>> {
    Ok(match value {
        Sql::Blob(b) => b,
        Sql::Text(t) => t.into_bytes(),
        _ => Vec::new(),
    })
}

/// The bytes of one asset.
pub fn asset_bytes(conn: &Connection, id: i64) -> Result<Vec<u8>> {
    conn.query_row(
        "SELECT asset_data FROM fragment_assets WHERE id = ?1",
        [id],
        |r| blob_bytes(r.get::<_, Sql>(0)?),
    )
}

fn ids(raw: &[BTreeMap<String, Sql>]) -> HashSet<i64> {
    raw.iter()
        .filter_map(|r| match r.get("id") {
            Some(Sql::Integer(i)) => Some(*i),
            _ => None,
        })
        .collect()
}
