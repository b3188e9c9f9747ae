//! `GET /api/health`: whether the database answers and holds the schema the
//! functions need, however it was applied.
//!
//! The schema is judged by what the components read: every column of the
//! four resources as they select them, and the change log and its horizon.
//! A migration ledger is only reported, never required: the project's
//! `schema-migrate` keeps `public.applied_migrations`, the Supabase CLI
//! keeps `supabase_migrations.schema_migrations`, and `psql -f` keeps none.

use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::db::{self, Db};
use crate::doc::Doc;
use crate::schema::ALL;
use crate::{Problem, value};

/// The ledgers a migration tool may have left, in the order they are read.
const LEDGERS: [&str; 2] = [
    "public.applied_migrations",
    "supabase_migrations.schema_migrations",
];

/// One statement that reads no row but names every relation and column the
/// components use, so that PostgreSQL refuses it when any is missing.
fn probe_sql() -> String {
    let mut reads: Vec<String> = ALL
        .iter()
        .map(|r| format!("SELECT {} FROM {} AS t", r.select_list(), r.table))
        .collect();
    reads.push("SELECT xid, id, table_name, row_id, op FROM change_log".to_owned());
    reads.push("SELECT xid, id FROM change_log_horizon".to_owned());
    reads
        .iter()
        .map(|read| format!("SELECT true FROM ({read} LIMIT 0) AS probe"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The health document, or the problem that says why the service is not
/// healthy.
pub fn check(url: &str) -> Result<Value, Problem> {
    let db = Db::open(url)?;
    match db.try_query(&probe_sql(), &[]) {
        Ok(rows) => db::unguarded(rows).map(drop)?,
        // The functions would fail on this database: an undefined table,
        // column, schema or function. Which one goes to the log, not to a
        // public endpoint.
        Err(err)
            if matches!(
                db::sqlstate(&err).as_deref(),
                Some("42P01" | "42703" | "3F000" | "42883")
            ) =>
        {
            db::log(&err);
            return Err(Problem::unavailable(
                "the database answers but lacks tables or columns the API needs; apply migrations/",
                db::RETRY_AFTER_SECS,
            ));
        }
        Err(err) => return Err(db::problem(&err)),
    }
    Ok(json!({
        "status": "ok",
        "database": "ok",
        "schema": "ok",
        "schema_version": ledger_version(&db)?,
    }))
}

/// The newest version in the first ledger present, if any is.
fn ledger_version(db: &Db) -> Result<Option<String>, Problem> {
    for ledger in LEDGERS {
        let present = db.query(
            "SELECT to_regclass($1) IS NOT NULL",
            &[ParameterValue::Str(ledger.to_owned())],
        )?;
        if value::boolean(&present.rows[0][0], "present")? != Some(true) {
            continue;
        }
        let rows = db.query(&format!("SELECT max(version)::text FROM {ledger}"), &[])?;
        if let Some(version) = value::text(&rows.rows[0][0], "version")? {
            return Ok(Some(version));
        }
    }
    Ok(None)
}

/// `GET /api/health`, for the OpenAPI document.
pub fn doc(_: Option<&'static crate::schema::Resource>) -> Doc {
    Doc::new()
        .json(
            "200",
            "The database answers; schema_version is the latest migration.",
            json!({"type": "object"}),
        )
        .problem("503", "The database does not answer.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_names_every_resource_and_the_log() {
        let sql = probe_sql();
        for resource in ALL {
            assert!(sql.contains(&format!("FROM {} AS t", resource.table)));
        }
        assert!(sql.contains("FROM change_log LIMIT 0"));
        assert!(sql.contains("FROM change_log_horizon LIMIT 0"));
    }
}
