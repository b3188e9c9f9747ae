//! `pgbench` with a custom script, as the baseline for the API rows.
//!
//! Always `-M prepared`: each statement is parsed once per connection and
//! then only bound and executed, one round trip per statement, which is
//! the fastest a native client can talk to PostgreSQL and so the honest
//! ceiling to compare the API with. `-j 1` gives it one client thread, as
//! our load generator has.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::procs;

pub struct Pgbench<'a> {
    pub bin_dir: &'a Path,
    pub port: u16,
    pub db: &'a str,
}

pub struct PgbenchRun {
    /// Transactions per second, without the connection set-up.
    pub tps: f64,
    /// Latency of each transaction, in milliseconds.
    pub latencies_ms: Vec<f64>,
}

impl Pgbench<'_> {
    /// Runs `script` on `clients` connections, `transactions` in all
    /// (rounded up to a multiple of `clients`).
    pub fn run(
        &self,
        script: &str,
        clients: usize,
        transactions: usize,
        limit: Duration,
    ) -> Result<PgbenchRun> {
        let dir = tempfile::tempdir()?;
        let script_path = dir.path().join("script.sql");
        let (script, literals) = colons_to_variables(script);
        std::fs::write(&script_path, script)?;
        let per_client = transactions.div_ceil(clients);
        let out = procs::run(
            Command::new(self.bin_dir.join("pgbench"))
                .args(["-n", "-M", "prepared", "-j", "1", "-l"])
                .arg(format!("--log-prefix={}", dir.path().join("log").display()))
                .args(["-h", "127.0.0.1", "-U", throwaway_pg::SUPERUSER])
                .arg(format!("--port={}", self.port))
                .arg(format!("--client={clients}"))
                .arg(format!("--transactions={per_client}"))
                .args(literals.iter().map(|(k, v)| format!("--define={k}={v}")))
                .arg(format!("--file={}", script_path.display()))
                .arg(self.db),
            limit,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| format!("no tps in pgbench's output: {text}"))?;
        // Per-transaction log: `client_id transaction_no time_us script_no epoch us`.
        let mut latencies_ms = Vec::with_capacity(per_client * clients);
        for entry in std::fs::read_dir(dir.path())? {
            let path = entry?.path();
            let is_log = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("log."));
            if !is_log {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|f| f.parse::<f64>().ok())
                {
                    latencies_ms.push(us / 1e3);
                }
            }
        }
        Ok(PgbenchRun { tps, latencies_ms })
    }
}

/// pgbench takes every `:name` of a script for a variable, even inside a
/// string literal, which would break the API's `'…HH24:MI:SS…'` formats.
/// Such literals become variables defined on the command line: in prepared
/// mode they are bound as text parameters, which PostgreSQL resolves to the
/// same function and plan.
fn colons_to_variables(script: &str) -> (String, Vec<(String, String)>) {
    let mut out = String::with_capacity(script.len());
    let mut literals = Vec::new();
    let mut rest = script;
    while let Some(start) = rest.find('\'') {
        out.push_str(&rest[..start]);
        let body = &rest[start + 1..];
        // The closing quote: one not doubled.
        let mut end = 0;
        let bytes = body.as_bytes();
        while end < bytes.len() {
            if bytes[end] == b'\'' {
                if bytes.get(end + 1) == Some(&b'\'') {
                    end += 2;
                    continue;
                }
                break;
            }
            end += 1;
        }
        let literal = &body[..end.min(body.len())];
        let has_variable = literal
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b':' && (w[1].is_ascii_alphanumeric() || w[1] == b'_'));
        if has_variable {
            let name = format!("lit{}", literals.len());
            out.push(':');
            out.push_str(&name);
            literals.push((name, literal.replace("''", "'")));
        } else {
            out.push('\'');
            out.push_str(literal);
            out.push('\'');
        }
        rest = body.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    (out, literals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_with_colons_become_variables() {
        let (sql, vars) = colons_to_variables(
            "SELECT to_char(t.x, 'HH24:MI:SS'), 'it''s', '{\"a\": 1}' FROM t WHERE id = :id;",
        );
        assert_eq!(
            sql,
            "SELECT to_char(t.x, :lit0), 'it''s', '{\"a\": 1}' FROM t WHERE id = :id;"
        );
        assert_eq!(vars, vec![("lit0".to_owned(), "HH24:MI:SS".to_owned())]);
    }
}
