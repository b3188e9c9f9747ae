//! `spin:postgres/postgres@4.0.0` backed by real, pooled connections.
//!
//! As in Spin: `open` first checks the address against the component's
//! `allowed_outbound_hosts`, then takes a connection from a pool kept per
//! component and address (deadpool, up to 64 connections, reset on each
//! checkout so that no session state leaks between requests), with TLS
//! unless the address says `sslmode=disable`. Each `query`/`execute`
//! streams rows and refuses a result above 128 MiB. Error variants and
//! their texts follow Spin 4.0; see [`query`] for the one surprising case.
//!
//! One difference from Spin, invisible to components: Spin prepares a new
//! named statement for every call (a round trip and a parse and plan on
//! the server each time); this host prepares each distinct SQL text once
//! per pooled connection and reuses it, which the session reset on
//! checkout leaves in place. A statement the server no longer accepts
//! (deallocated, or a table's columns changed under it) is prepared again.

// The WIT error type carries the server's structured error; boxing it would
// only move the allocation.
#![allow(clippy::result_large_err)]

pub mod convert;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::TryStreamExt;
use tokio_postgres::config::SslMode;
use wasmtime::component::Resource;

use crate::bindings::spin::postgres::postgres::{
    self as pg, Column, DbError, Error, ParameterValue, QueryError, RowSet,
};
use crate::outbound::AllowedHosts;

/// Connections kept per address, as Spin does.
pub const POOL_SIZE: usize = 64;
/// Addresses for which pools are kept; the least recently used goes first.
pub const POOL_CACHE_CAPACITY: usize = 16;
/// Prepared statements kept per pooled connection. Statements whose text
/// varies (an `IN` list of one placeholder per id) would otherwise pile up
/// on the server; past this many the connection's cache starts over.
pub const MAX_CACHED_STATEMENTS: usize = 256;
/// The largest result one query may return, counted as Spin counts it.
pub const MAX_RESULT_BYTES: usize = 128 << 20;

/// What the host does with a `query` that matches no row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmptyResults {
    /// Answer it with no rows, as Spin 3.x and Spin after 4.0.2 do.
    #[default]
    Answer,
    /// Fail it with an error naming the statement, and log it. Spin 4.0.0
    /// to 4.0.2 never answer such a query: they describe the columns when
    /// the first row arrives (spinframework/spin#3671), so the component
    /// waits forever. Serving with this makes that hang a loud failure.
    Refuse,
}

/// Pools of one component, keyed by address.
#[derive(Default)]
pub struct Pools {
    inner: Mutex<PoolCache>,
}

#[derive(Default)]
struct PoolCache {
    pools: HashMap<String, (Pool, u64)>,
    clock: u64,
}

impl Pools {
    fn get_or_create(&self, address: &str) -> Result<Pool, String> {
        let mut cache = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        cache.clock += 1;
        let now = cache.clock;
        if let Some((pool, used)) = cache.pools.get_mut(address) {
            *used = now;
            return Ok(pool.clone());
        }
        let pool = create_pool(address)?;
        if cache.pools.len() >= POOL_CACHE_CAPACITY
            && let Some(oldest) = cache
                .pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            cache.pools.remove(&oldest);
        }
        cache.pools.insert(address.to_owned(), (pool.clone(), now));
        Ok(pool)
    }
}

fn create_pool(address: &str) -> Result<Pool, String> {
    let config: tokio_postgres::Config = address
        .parse()
        .map_err(|e| format!("parsing Postgres connection string: {e:?}"))?;
    // `Clean` resets the session on every checkout (CLOSE ALL, RESET ALL,
    // DISCARD TEMP, ...), which is what keeps requests from seeing each
    // other's session state.
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Clean,
    };
    let manager = if config.get_ssl_mode() == SslMode::Disable {
        Manager::from_config(config, tokio_postgres::NoTls, manager_config)
    } else {
        let connector = native_tls::TlsConnector::new()
            .map_err(|e| format!("building TLS connector: {e:?}"))?;
        Manager::from_config(
            config,
            postgres_native_tls::MakeTlsConnector::new(connector),
            manager_config,
        )
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .map_err(|e| format!("building Postgres connection pool: {e:?}"))
}

/// What a component instance needs to serve `spin:postgres`.
pub struct PostgresState {
    pools: Arc<Pools>,
    allowed: Arc<AllowedHosts>,
    empty_results: EmptyResults,
    connections: HashMap<u32, deadpool_postgres::Object>,
    next_rep: u32,
}

impl PostgresState {
    pub fn new(pools: Arc<Pools>, allowed: Arc<AllowedHosts>, empty_results: EmptyResults) -> Self {
        Self {
            pools,
            allowed,
            empty_results,
            connections: HashMap::new(),
            next_rep: 0,
        }
    }

    fn client(&self, rep: u32) -> Result<&deadpool_postgres::Object, Error> {
        self.connections
            .get(&rep)
            .ok_or_else(|| Error::ConnectionFailed("no connection found".into()))
    }
}

/// Spin's text for a failed statement keeps the driver's debug form, with
/// structured fields when the server reported the error.
fn query_failed(e: tokio_postgres::Error) -> Error {
    let as_text = format!("{e:?}");
    Error::QueryFailed(match e.as_db_error() {
        None => QueryError::Text(as_text),
        Some(db) => QueryError::DbError(DbError {
            as_text,
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras: extras(db),
        }),
    })
}

fn extras(db: &tokio_postgres::error::DbError) -> Vec<(String, String)> {
    let fields: [(&str, Option<String>); 10] = [
        ("column", db.column().map(str::to_owned)),
        ("constraint", db.constraint().map(str::to_owned)),
        ("routine", db.routine().map(str::to_owned)),
        ("hint", db.hint().map(str::to_owned)),
        ("table", db.table().map(str::to_owned)),
        ("datatype", db.datatype().map(str::to_owned)),
        ("schema", db.schema().map(str::to_owned)),
        ("file", db.file().map(str::to_owned)),
        ("line", db.line().map(|l| l.to_string())),
        ("where_", db.where_().map(str::to_owned)),
    ];
    fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect()
}

/// An error and its causes in the layout `anyhow` prints with `{:?}`, which
/// is what Spin puts in its error texts.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let causes: Vec<String> = std::iter::successors(e.source(), |c| c.source())
        .map(ToString::to_string)
        .collect();
    match causes.as_slice() {
        [] => {}
        [one] => text.push_str(&format!("\n\nCaused by:\n    {one}")),
        many => {
            text.push_str("\n\nCaused by:");
            for (i, c) in many.iter().enumerate() {
                text.push_str(&format!("\n    {i}: {c}"));
            }
        }
    }
    text
}

fn columns(row: &tokio_postgres::Row) -> Vec<Column> {
    row.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            data_type: convert::data_type(c.type_()),
        })
        .collect()
}

/// Whether a cached statement failed because the server no longer holds it
/// as prepared: 26000, it was deallocated (`DISCARD ALL`, `DEALLOCATE`);
/// 0A000, "cached plan must not change result type" (the table changed).
/// Both are raised before the statement runs.
fn stale_statement(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_SQL_STATEMENT_NAME || *c == SqlState::FEATURE_NOT_SUPPORTED
    })
}

/// After a call with a cached statement failed with `e`: when the server
/// no longer accepts the connection's cached statements, forgets them all
/// and prepares `sql` afresh for one more try. Inside a transaction the
/// failure has aborted it and the retry fails too; callers then report the
/// first error.
async fn refreshed(
    client: &ClientWrapper,
    sql: &str,
    e: &tokio_postgres::Error,
) -> Option<tokio_postgres::Statement> {
    if !stale_statement(e) {
        return None;
    }
    client.statement_cache.clear();
    prepared(client, sql).await.ok()
}

/// The connection's prepared statement for `sql`.
async fn prepared(
    client: &ClientWrapper,
    sql: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    if client.statement_cache.size() >= MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
    client.prepare_cached(sql).await
}

fn refs(params: &[convert::SqlParam]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Runs a query the way Spin 4.0 does. Errors found while rows stream in
/// (which includes most execution errors, such as a unique violation in an
/// `INSERT ... RETURNING`) reach the component as `query-failed(text(..))`
/// whose text is the debug form of the structured error: only errors raised
/// before the first row (syntax, unknown column, bad parameter type) arrive
/// as `query-failed(db-error(..))`. Columns are described from the first
/// row, so an empty result has no columns.
pub async fn query(
    client: &ClientWrapper,
    statement: &str,
    params: &[ParameterValue],
    max_result_bytes: usize,
) -> Result<RowSet, Error> {
    let params = params
        .iter()
        .map(convert::parameter)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadParameter(with_causes(&e)))?;
    let prepared = prepared(client, statement).await.map_err(query_failed)?;
    let stream = match client.query_raw(&prepared, refs(&params)).await {
        Err(e) => match refreshed(client, statement, &e).await {
            Some(fresh) => client.query_raw(&fresh, refs(&params)).await.map_err(|_| e),
            None => Err(e),
        },
        ok => ok,
    }
    .map_err(query_failed)?;
    let mut stream = std::pin::pin!(stream);
    let mut cols = None;
    let mut rows = Vec::new();
    let mut bytes = std::mem::size_of::<RowSet>();
    let streamed = |e: Error| Error::QueryFailed(QueryError::Text(format!("{e:?}")));
    loop {
        let row = match stream.try_next().await {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => return Err(streamed(query_failed(e))),
        };
        if cols.is_none() {
            cols = Some(columns(&row));
        }
        let values = (0..row.len())
            .map(|i| convert::value(&row, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| streamed(Error::QueryFailed(QueryError::Text(with_causes(&e)))))?;
        bytes += values.iter().map(convert::memory_size).sum::<usize>();
        if bytes > max_result_bytes {
            return Err(Error::QueryFailed(QueryError::Text(format!(
                "query result exceeds limit of {max_result_bytes} bytes"
            ))));
        }
        rows.push(values);
    }
    Ok(RowSet {
        columns: cols.unwrap_or_default(),
        rows,
    })
}

/// Runs a statement and returns the affected row count.
pub async fn execute(
    client: &ClientWrapper,
    statement: &str,
    params: &[ParameterValue],
) -> Result<u64, Error> {
    let params = params
        .iter()
        .map(convert::parameter)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::ValueConversionFailed(with_causes(&e)))?;
    let prepared = prepared(client, statement).await.map_err(query_failed)?;
    match client.execute(&prepared, &refs(&params)).await {
        Err(e) => match refreshed(client, statement, &e).await {
            Some(fresh) => client.execute(&fresh, &refs(&params)).await.map_err(|_| e),
            None => Err(e),
        },
        ok => ok,
    }
    .map_err(query_failed)
}

impl PostgresState {
    /// `connection.open`: the allow-list first, then a pooled connection.
    pub async fn open(&mut self, address: &str) -> Result<Resource<pg::Connection>, Error> {
        self.allowed
            .check_postgres(address)
            .map_err(|e| Error::ConnectionFailed(e.to_string()))?;
        let pool = self.pools.get_or_create(address).map_err(|e| {
            Error::ConnectionFailed(format!("establishing PostgreSQL connection pool: {e}"))
        })?;
        let client = pool
            .get()
            .await
            .map_err(|e| Error::ConnectionFailed(format!("{e:?}")))?;
        let rep = self.next_rep;
        self.next_rep = self
            .next_rep
            .checked_add(1)
            .ok_or_else(|| Error::ConnectionFailed("too many connections".into()))?;
        self.connections.insert(rep, client);
        Ok(Resource::new_own(rep))
    }

    /// `connection.query`.
    pub async fn query(
        &mut self,
        connection: &Resource<pg::Connection>,
        statement: &str,
        params: &[ParameterValue],
    ) -> Result<RowSet, Error> {
        let client = self.client(connection.rep())?;
        let rows = query(client, statement, params, MAX_RESULT_BYTES).await?;
        if rows.rows.is_empty() && self.empty_results == EmptyResults::Refuse {
            tracing::error!(
                "a query matched no row, which Spin 4.0.0 to 4.0.2 never answer: {statement}"
            );
            return Err(Error::QueryFailed(QueryError::Text(format!(
                "query matched no row, which Spin 4.0.0 to 4.0.2 never answer \
                 (spinframework/spin#3671); statement: {statement}"
            ))));
        }
        Ok(rows)
    }

    /// `connection.execute`.
    pub async fn execute(
        &mut self,
        connection: &Resource<pg::Connection>,
        statement: &str,
        params: &[ParameterValue],
    ) -> Result<u64, Error> {
        let client = self.client(connection.rep())?;
        execute(client, statement, params).await
    }

    /// The connection's resource was dropped: the pooled connection goes
    /// back to its pool.
    pub fn close(&mut self, connection: &Resource<pg::Connection>) {
        self.connections.remove(&connection.rep());
    }
}
