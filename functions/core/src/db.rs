//! The one mapping from a database error to an HTTP problem.
//!
//! Hosts differ in how a server error reaches a component: an error raised
//! while rows stream in arrives from Spin 4.0 as `query-failed(text(..))`
//! holding the debug form of the structured error, while earlier errors (and
//! all of Spin 3.x's) arrive as `query-failed(db-error(..))`. [`sqlstate`]
//! reads the code from either, so callers branch on meaning, not on host.

use spin_sdk::pg4::{Connection, DbValue, ParameterValue, PgError, QueryError, RowSet};

use crate::Problem;

/// Seconds a client should wait before retrying when the database is down.
pub const RETRY_AFTER_SECS: u32 = 5;

/// What a database failure means for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbFailure {
    /// The database cannot be reached or refused the connection.
    Unavailable,
    /// The server reported an error with this SQLSTATE.
    Sql(String),
    /// The result passed the host's cap on one query result (128 MiB on
    /// Spin). Lists and asset bytes are read in pieces below it, so only a
    /// single row written around the API can get here.
    TooLarge,
    /// Anything else (a bad parameter, a conversion the host refused).
    Other,
}

/// The SQLSTATE of a server-reported error, from either form hosts use.
pub fn sqlstate(err: &PgError) -> Option<String> {
    match err {
        PgError::QueryFailed(QueryError::DbError(db)) => Some(db.code.clone()),
        PgError::QueryFailed(QueryError::Text(text)) => code_in_text(text),
        _ => None,
    }
}

fn code_in_text(text: &str) -> Option<String> {
    let start = text.find("code: \"")? + "code: \"".len();
    let code = text.get(start..start + 5)?;
    code.chars()
        .all(|c| c.is_ascii_alphanumeric())
        .then(|| code.to_owned())
}

/// Classifies a database error.
pub fn classify(err: &PgError) -> DbFailure {
    match err {
        PgError::ConnectionFailed(_) => DbFailure::Unavailable,
        _ => match sqlstate(err) {
            // Class 08: connection exception; 57P0x: the server is shutting
            // down or restarting; 53300: too many connections.
            Some(code) if code.starts_with("08") || code.starts_with("57P0") || code == "53300" => {
                DbFailure::Unavailable
            }
            Some(code) => DbFailure::Sql(code),
            None if is_connection_text(err) => DbFailure::Unavailable,
            None if is_size_cap_text(err) => DbFailure::TooLarge,
            None => DbFailure::Other,
        },
    }
}

/// A query on a pooled connection whose server went away fails with a
/// driver error rather than a SQLSTATE.
fn is_connection_text(err: &PgError) -> bool {
    match err {
        PgError::QueryFailed(QueryError::Text(t)) => {
            t.contains("connection closed") || t.contains("Closed") || t.contains("kind: Io")
        }
        _ => false,
    }
}

/// Spin's (and the bundled host's) words for a result over its cap.
fn is_size_cap_text(err: &PgError) -> bool {
    matches!(err, PgError::QueryFailed(QueryError::Text(t)) if t.contains("exceeds limit"))
}

/// A server-reported error's extra field (`constraint`, `column`, `table`),
/// from the structured form or from the debug text of the other form.
pub fn extra(err: &PgError, name: &str) -> Option<String> {
    match err {
        PgError::QueryFailed(QueryError::DbError(db)) => db
            .extras
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone()),
        // Spin 4.0 hands over the structured error's debug form: its
        // `extras: [("constraint", "..."), ...]` list, or the driver's own
        // `constraint: Some("...")` when the host had no structured error.
        PgError::QueryFailed(QueryError::Text(text)) => {
            [format!("(\"{name}\", \""), format!("{name}: Some(\"")]
                .iter()
                .find_map(|marker| {
                    let start = text.find(marker.as_str())? + marker.len();
                    let len = text[start..].find('"')?;
                    Some(text[start..start + len].to_owned())
                })
        }
        _ => None,
    }
}

fn detail_text(err: &PgError) -> String {
    match err {
        PgError::QueryFailed(QueryError::DbError(db)) => db.detail.clone().unwrap_or_default(),
        PgError::QueryFailed(QueryError::Text(text)) => text.clone(),
        _ => String::new(),
    }
}

/// The API field a constraint guards. Constraints follow PostgreSQL's
/// naming, `<table>_<column>_<check|fkey|key|pkey>`, so no table of names
/// has to be kept beside the schema.
fn constraint_field(err: &PgError) -> Option<String> {
    let constraint = extra(err, "constraint")?;
    let table = extra(err, "table").unwrap_or_default();
    let rest = constraint
        .strip_prefix(&format!("{table}_"))
        .unwrap_or(&constraint);
    if rest == "pkey" {
        return Some("id".to_owned());
    }
    ["_check", "_fkey", "_key"]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))
        .map(str::to_owned)
}

/// The problem a client sees for a database error: the one place where
/// SQLSTATEs become HTTP statuses. Never carries SQL text or connection
/// details; the full error goes to the component's log for operators.
pub fn problem(err: &PgError) -> Problem {
    let failure = classify(err);
    match failure {
        DbFailure::Unavailable => {
            // Why matters to the operator: down, refused, or a certificate
            // the host could not verify.
            log(err);
            Problem::unavailable(
                "the database is not answering; try again shortly",
                RETRY_AFTER_SECS,
            )
        }
        DbFailure::Sql(code) => match code.as_str() {
            "23505" => {
                let field = constraint_field(err).unwrap_or_else(|| "id".to_owned());
                Problem::new(409)
                    .kind("conflict")
                    .detail(format!("a row with this {field} exists already"))
                    .field(field, "already taken")
            }
            "23503" if detail_text(err).contains("is not present") => {
                let field = constraint_field(err).unwrap_or_else(|| "body".to_owned());
                Problem::invalid(field, "refers to a row that does not exist")
            }
            "23503" => Problem::new(409)
                .kind("conflict")
                .detail("other rows still refer to this one"),
            "23514" => {
                let field = constraint_field(err).unwrap_or_else(|| "body".to_owned());
                Problem::invalid(field, "is outside the allowed values")
            }
            "23502" => {
                let field = extra(err, "column").unwrap_or_else(|| "body".to_owned());
                Problem::invalid(field, "must not be null")
            }
            // Data exceptions: too long, malformed number/date/JSON, NUL bytes.
            code if code.starts_with("22") => Problem::new(422)
                .kind("validation")
                .detail("a value does not fit its column's type"),
            // Serialisation failures and deadlocks: the same request, retried, succeeds.
            "40001" | "40P01" | "55P03" | "57014" => {
                Problem::unavailable("the database was busy with conflicting work; try again", 1)
            }
            _ => {
                log(err);
                Problem::new(500).detail("the database reported an unexpected error")
            }
        },
        DbFailure::TooLarge => {
            log(err);
            // 507: the server cannot hold the representation; asking again
            // will not help, and the request itself was fine.
            Problem::new(507).kind("too-large").detail(
                "the answer would pass the size a component may read from the database in one query",
            )
        }
        DbFailure::Other => {
            log(err);
            Problem::new(500).detail("the database reported an unexpected error")
        }
    }
}

/// Component stderr is where Spin hosts collect logs.
pub fn log(err: &PgError) {
    eprintln!("database error: {err:?}");
}

/// `sql` wrapped so that its result always has at least one row.
///
/// Spin 4.0.0 to 4.0.2 describe a result's columns when its first row
/// arrives, so a query that matches no row never returns to the component
/// (spinframework/spin#3671, fixed after 4.0.2). Joining the statement's
/// rows, each tagged with a marker column, to a one-row relation gives one
/// row of NULLs (marker included) where the statement gave none, and the
/// statement's own rows otherwise. A data-modifying statement is allowed in
/// a top-level WITH, so the same form serves `UPDATE … RETURNING`. The join
/// has no clause a hash or merge join could use: PostgreSQL runs it as a
/// nested loop over the single outer row, which hands the inner rows on in
/// the statement's own order, and a plain SELECT is inlined rather than
/// materialised.
fn guarded(sql: &str) -> String {
    format!(
        "WITH q AS ({sql}) SELECT r.* FROM (SELECT) AS one LEFT JOIN (SELECT q.*, true FROM q) AS r ON true"
    )
}

/// The statement's own result from a [`guarded`] one: the marker column
/// dropped, and the row of NULLs that stands for no row removed.
pub fn unguarded(mut rows: RowSet) -> Result<RowSet, Problem> {
    let malformed = || {
        eprintln!("database error: a guarded result came back without its marker column");
        Problem::new(500).detail("the database reported an unexpected error")
    };
    rows.columns.pop().ok_or_else(malformed)?;
    for row in &mut rows.rows {
        if !matches!(row.pop().ok_or_else(malformed)?, DbValue::Boolean(true)) {
            // Only the stand-in row has a NULL marker, and it is alone.
            rows.rows.clear();
            break;
        }
    }
    Ok(rows)
}

/// A connection for one request; every error comes back as its [`Problem`].
pub struct Db {
    conn: Connection,
}

impl Db {
    pub fn open(url: &str) -> Result<Self, Problem> {
        Connection::open(url)
            .map(|conn| Db { conn })
            .map_err(|err| problem(&err))
    }

    /// Runs `sql` and returns its rows, guarded against Spin's zero-row
    /// hang (see [`guarded`]): every statement reaches the host in a form
    /// that yields at least one row.
    pub fn query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, Problem> {
        self.try_query(sql, params)
            .map_err(|err| problem(&err))
            .and_then(unguarded)
    }

    /// [`Db::query`] for the caller that branches on the database's own
    /// error before it becomes a problem.
    // PgError is the SDK's own error type, large by design (spin-sdk allows
    // the same lint in its pg4 module).
    #[allow(clippy::result_large_err)]
    pub fn try_query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, PgError> {
        self.conn.query(&guarded(sql), params)
    }

    pub fn execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, Problem> {
        self.conn.execute(sql, params).map_err(|err| problem(&err))
    }

    /// Runs `work` in a transaction: committed when it returns `Ok`, rolled
    /// back otherwise. Hosts reset pooled sessions, but an explicit ROLLBACK
    /// keeps a failed request from leaving anything half-done even then.
    pub fn transaction<T>(
        &self,
        work: impl FnOnce(&Db) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        self.execute("BEGIN", &[])?;
        match work(self) {
            Ok(value) => {
                self.execute("COMMIT", &[])?;
                Ok(value)
            }
            Err(problem) => {
                let _ = self.conn.execute("ROLLBACK", &[]);
                Err(problem)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spin_sdk::pg4::DbError;

    fn db_error(code: &str) -> PgError {
        PgError::QueryFailed(QueryError::DbError(DbError {
            as_text: String::new(),
            severity: "ERROR".into(),
            code: code.into(),
            message: String::new(),
            detail: None,
            extras: vec![],
        }))
    }

    #[test]
    fn reads_sqlstate_from_both_forms() {
        assert_eq!(sqlstate(&db_error("23505")).as_deref(), Some("23505"));
        let text = PgError::QueryFailed(QueryError::Text(
            r#"QueryFailed(DbError(DbError { as_text: "x", severity: "ERROR", code: "23505", message: "dup" }))"#.into(),
        ));
        assert_eq!(sqlstate(&text).as_deref(), Some("23505"));
        assert_eq!(classify(&text), DbFailure::Sql("23505".into()));
    }

    #[test]
    fn reads_the_constraint_from_spin_4_text_errors() {
        let text = PgError::QueryFailed(QueryError::Text(
            r#"Error::QueryFailed(QueryError::DbError(DbError { as-text: "..", code: "23503", extras: [("constraint", "content_fragments_learning_content_id_fkey"), ("table", "content_fragments")] }))"#.into(),
        ));
        assert_eq!(
            constraint_field(&text).as_deref(),
            Some("learning_content_id")
        );
        let driver = PgError::QueryFailed(QueryError::Text(
            r#"Error { kind: Db, cause: Some(DbError { code: "23514", table: Some("rankings"), constraint: Some("rankings_rank_score_check") }) }"#.into(),
        ));
        assert_eq!(constraint_field(&driver).as_deref(), Some("rank_score"));
    }

    fn column(name: &str) -> spin_sdk::pg4::Column {
        spin_sdk::pg4::Column {
            name: name.into(),
            data_type: spin_sdk::pg4::DbDataType::Int32,
        }
    }

    #[test]
    fn every_statement_is_sent_guarded() {
        let sql = guarded("UPDATE t SET a = $1 WHERE id = $2 RETURNING id");
        assert!(sql.starts_with("WITH q AS (UPDATE t SET a = $1 WHERE id = $2 RETURNING id) "));
        assert!(sql.contains("LEFT JOIN (SELECT q.*, true FROM q) AS r ON true"));
    }

    #[test]
    fn the_stand_in_row_of_an_empty_result_is_dropped() {
        let empty = RowSet {
            columns: vec![column("id"), column("bool")],
            rows: vec![vec![DbValue::DbNull, DbValue::DbNull]],
        };
        let rows = unguarded(empty).unwrap();
        assert_eq!(rows.columns.len(), 1);
        assert!(rows.rows.is_empty());

        let two = RowSet {
            columns: vec![column("id"), column("bool")],
            rows: vec![
                vec![DbValue::DbNull, DbValue::Boolean(true)],
                vec![DbValue::Int32(7), DbValue::Boolean(true)],
            ],
        };
        let rows = unguarded(two).unwrap();
        assert_eq!(rows.columns.len(), 1);
        assert_eq!(
            format!("{:?}", rows.rows),
            "[[DbValue::DbNull], [DbValue::Int32(7)]]"
        );

        let unmarked = RowSet {
            columns: vec![],
            rows: vec![],
        };
        assert_eq!(unguarded(unmarked).unwrap_err().status, 500);
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        assert_eq!(
            classify(&PgError::ConnectionFailed("refused".into())),
            DbFailure::Unavailable
        );
        assert_eq!(classify(&db_error("57P01")), DbFailure::Unavailable);
        let capped = PgError::QueryFailed(QueryError::Text(
            "query result exceeds limit of 134217728 bytes".into(),
        ));
        assert_eq!(classify(&capped), DbFailure::TooLarge);
        assert_eq!(problem(&capped).status, 507);
        assert_eq!(classify(&db_error("08006")), DbFailure::Unavailable);
        let p = problem(&PgError::ConnectionFailed("postgres://secret@host".into()));
        assert_eq!(p.status, 503);
        assert!(!String::from_utf8(p.body()).unwrap().contains("secret"));
    }
}
