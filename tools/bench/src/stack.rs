//! The system under test: a throwaway PostgreSQL with a migrated template,
//! and the project's spin.toml served on loopback by [`app_server`], the
//! harness every suite uses, with the bundled host or a real Spin.
//!
//! The bundled host runs on a tokio runtime of its own (two worker threads,
//! as `spin-host` would have on this machine), so that the load generator,
//! which runs on the caller's thread, does not share its scheduler.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use app_server::{AppServer, Host};
use throwaway_pg::Cluster;

const TEMPLATE: &str = "bench_template";

/// How long a benchmark's token lives: longer than any run.
const TOKEN_SECS: u64 = 24 * 3600;

pub struct Stack {
    pub cluster: Cluster,
    // An Option only so that Drop can shut it down from async code.
    host_rt: Option<tokio::runtime::Runtime>,
    credentials: dev_keys::Credentials,
    bin_dir: PathBuf,
}

impl Stack {
    pub async fn start(root: &Path) -> Result<Stack> {
        let binaries = throwaway_pg::Binaries::locate()?;
        let bin_dir = binaries.dir().to_owned();
        let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(binaries))
            .await?
            .context("starting PostgreSQL (is it installed? `apt-get install postgresql`)")?;
        cluster.create_database(TEMPLATE, None).await?;
        let migrations = schema_migrate::Migrations::from_dir(root.join("migrations"))?;
        let mut client = schema_migrate::connect(&cluster.url(TEMPLATE)).await?;
        schema_migrate::apply(&mut client, &migrations)
            .await
            .context("migrating the template database")?;
        drop(client);
        let host_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("spin-host")
            .enable_all()
            .build()?;
        Ok(Stack {
            cluster,
            host_rt: Some(host_rt),
            credentials: dev_keys::Credentials::generate("bench")?,
            bin_dir,
        })
    }

    fn host_rt(&self) -> &tokio::runtime::Runtime {
        self.host_rt
            .as_ref()
            .expect("the host runtime lives as long as the stack")
    }

    /// A fresh migrated database; returns its URL.
    pub async fn database(&self, name: &str) -> Result<String> {
        self.cluster.create_database(name, Some(TEMPLATE)).await?;
        Ok(self.cluster.url(name))
    }

    /// An empty database without the schema (for pgloader, which makes its own).
    pub async fn empty_database(&self, name: &str) -> Result<String> {
        self.cluster.create_database(name, None).await?;
        Ok(self.cluster.url(name))
    }

    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        Ok(self.cluster.connect(db).await?)
    }

    /// Serves spin.toml with `host` over the database at `db_url`, with
    /// the credentials a Supabase project has now.
    pub async fn serve(&self, host: &Host, db_url: &str) -> Result<AppServer> {
        let mut variables = BTreeMap::from([
            ("db_url".to_owned(), db_url.to_owned()),
            (
                "db_host".to_owned(),
                format!("127.0.0.1:{}", self.cluster.port()),
            ),
        ]);
        variables.extend(
            self.credentials
                .app_variables()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        let name = host_name(host);
        let host = host.clone();
        self.on_host_rt(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Ok(AppServer::project(&host, listener, &variables).await?)
        })
        .await
        .with_context(|| format!("serving spin.toml with the {name}"))
    }

    /// Serves `manifest` (text, sources absolute) with `host`: the floor a
    /// trivial component sets under the same host.
    pub async fn serve_manifest(&self, host: &Host, manifest: String) -> Result<AppServer> {
        let name = host_name(host);
        let host = host.clone();
        self.on_host_rt(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let runtime = app_server::runtime();
            Ok(AppServer::manifest(&host, runtime, listener, &manifest, &BTreeMap::new()).await?)
        })
        .await
        .with_context(|| format!("serving a manifest with the {name}"))
    }

    /// Runs `work` on the host's runtime: the bundled host's server tasks
    /// are spawned where it runs.
    async fn on_host_rt<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.host_rt().spawn(work).await?
    }

    /// A token for `role`, signed with the project's ES256 key.
    pub fn token(&self, role: &str) -> Result<String> {
        Ok(self.credentials.token(role, TOKEN_SECS)?)
    }

    /// The project's publishable API key: what a client without a signed-in
    /// user sends instead of a token.
    pub fn publishable_key(&self) -> &str {
        &self.credentials.api.publishable
    }

    /// Where the PostgreSQL client programs (pgbench) are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

/// "bundled host" or "Spin": how an error names the host.
fn host_name(host: &Host) -> &'static str {
    match host {
        Host::Bundled => "bundled host",
        Host::Spin(_) => "Spin",
    }
}

/// One host serving an app, as the rows that depend on the host take it.
pub struct Serving {
    pub host: Host,
    /// How the result table names the host, e.g. `Spin 4.0.2`.
    pub label: String,
    /// A short word for database names, unique per host.
    pub tag: &'static str,
    pub app: AppServer,
}

impl Serving {
    pub fn addr(&self) -> SocketAddr {
        self.app.addr
    }
}

/// The label of `host`: a real Spin's own version line.
pub fn label(host: &Host) -> String {
    match host {
        Host::Bundled => "bundled host".to_owned(),
        Host::Spin(bin) => std::process::Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                let version = text.split_whitespace().nth(1)?.to_owned();
                Some(format!("Spin {version}"))
            })
            .unwrap_or_else(|| "Spin".to_owned()),
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(rt) = self.host_rt.take() {
            rt.shutdown_background();
        }
    }
}
