//! The one mapping from a database error to an HTTP problem.
//!
//! Hosts differ in how a server error reaches a component: an error raised
//! while rows stream in arrives from Spin 4.0 as `query-failed(text(..))`
//! holding the debug form of the structured error, while earlier errors (and
//! all of Spin 3.x's) arrive as `query-failed(db-error(..))`. [`sqlstate`]
//! reads the code from either, so callers branch on meaning, not on host.

use spin_sdk::pg4::{PgError, QueryError};

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

/// The problem a client sees for a database error. Never carries SQL text
/// or connection details.
pub fn problem(err: &PgError) -> Problem {
    match classify(err) {
        DbFailure::Unavailable => Problem::unavailable(
            "the database is not answering; try again shortly",
            RETRY_AFTER_SECS,
        ),
        DbFailure::Sql(_) | DbFailure::Other => {
            Problem::new(500).detail("the database reported an unexpected error")
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
    fn connection_trouble_is_unavailable() {
        assert_eq!(
            classify(&PgError::ConnectionFailed("refused".into())),
            DbFailure::Unavailable
        );
        assert_eq!(classify(&db_error("57P01")), DbFailure::Unavailable);
        assert_eq!(classify(&db_error("08006")), DbFailure::Unavailable);
        let p = problem(&PgError::ConnectionFailed("postgres://secret@host".into()));
        assert_eq!(p.status, 503);
        assert!(!String::from_utf8(p.body()).unwrap().contains("secret"));
    }
}
