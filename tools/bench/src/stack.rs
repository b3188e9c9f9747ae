//! The system under test: a throwaway PostgreSQL with a migrated template,
//! and the project's components served by the Wasmtime host on loopback.
//!
//! The host runs on a runtime of its own (two worker threads, as
//! `spin-host` would have on this machine), so that the load generator,
//! which runs on the caller's thread, does not share its scheduler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use spin_host::manifest::Manifest;
use spin_host::runtime::Runtime;
use spin_host::variables::Sources;
use throwaway_pg::Cluster;

const TEMPLATE: &str = "bench_template";

pub struct Stack {
    pub cluster: Cluster,
    root: PathBuf,
    wasm_dir: PathBuf,
    runtime: Runtime,
    // An Option only so that Drop can shut it down from async code.
    host_rt: Option<tokio::runtime::Runtime>,
    secret: String,
    bin_dir: PathBuf,
}

/// One served application; dropping it stops the server.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Stack {
    pub async fn start(root: &Path, wasm_dir: &Path) -> Result<Stack> {
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
            root: root.to_owned(),
            wasm_dir: wasm_dir.to_owned(),
            runtime: Runtime::new()?,
            host_rt: Some(host_rt),
            secret: format!("bench-secret-{}", std::process::id()),
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

    /// Serves spin.toml over the database at `db_url` on a loopback port.
    pub fn serve(&self, db_url: &str) -> Result<Server> {
        let mut manifest = Manifest::from_file(&self.root.join("spin.toml"))?;
        for c in manifest.components.values_mut() {
            let file = c.source.file_name().context("a component file name")?;
            c.source = self.wasm_dir.join(file);
        }
        let explicit: HashMap<String, String> = [
            ("db_url", db_url.to_owned()),
            ("db_host", format!("127.0.0.1:{}", self.cluster.port())),
            ("jwt_secret", self.secret.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let sources = Sources {
            explicit,
            env: Some(Box::new(|_| None)),
        };
        let app = Arc::new(self.runtime.load(&manifest, &sources)?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            // Registered with the host's runtime, which will poll it.
            let _host = self.host_rt().enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        self.host_rt()
            .spawn(spin_host::trigger::serve(listener, app, async {
                let _ = stopped.await;
            }));
        Ok(Server {
            addr,
            stop: Some(stop),
        })
    }

    /// A Supabase-shaped token for `role`, valid for a day.
    pub fn token(&self, role: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"role": role, "sub": "bench", "exp": now + 86_400}),
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?)
    }

    /// Where the PostgreSQL client programs (pgbench) are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(rt) = self.host_rt.take() {
            rt.shutdown_background();
        }
    }
}
