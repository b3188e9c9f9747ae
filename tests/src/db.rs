//! Databases for tests: one throwaway cluster per test binary, a migrated
//! template built once in it, and a fresh copy of that template per test.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use throwaway_pg::Cluster;
use tokio::sync::OnceCell;

const TEMPLATE: &str = "migrated_template";

/// The cluster shared by every test of this binary. It is never dropped;
/// its watcher stops it and deletes its directory when the process ends.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: LazyLock<Cluster> =
        LazyLock::new(|| Cluster::start().expect("starting the throwaway PostgreSQL cluster"));
    &CLUSTER
}

/// The repository's `migrations/` directory.
pub fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

/// The repository's migrations, read from disk.
pub fn migrations() -> schema_migrate::Migrations {
    schema_migrate::Migrations::from_dir(migrations_dir()).expect("reading migrations/")
}

/// A new database named `name`-ish with every migration applied; returns
/// its URL. Cheap: a file copy of a template migrated once per binary.
pub async fn fresh_database() -> String {
    static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();
    let cluster = cluster();
    TEMPLATE_READY
        .get_or_init(|| async {
            cluster
                .create_database(TEMPLATE, None)
                .await
                .expect("creating the template database");
            let mut client = schema_migrate::connect(&cluster.url(TEMPLATE))
                .await
                .expect("connecting to the template database");
            schema_migrate::apply(&mut client, &migrations())
                .await
                .expect("migrating the template database");
            // CREATE DATABASE ... TEMPLATE needs the template to have no
            // sessions; dropping the client ends ours.
            drop(client);
        })
        .await;
    let name = unique_name("test");
    cluster
        .create_database(&name, Some(TEMPLATE))
        .await
        .expect("cloning the migrated template");
    cluster.url(&name)
}

/// A new empty database (no migrations); returns its URL.
pub async fn empty_database() -> String {
    let name = unique_name("empty");
    cluster()
        .create_database(&name, None)
        .await
        .expect("creating an empty database");
    cluster().url(&name)
}

/// A cluster of its own with one migrated database (named `app`), for tests
/// that observe cluster-wide state: transaction ids and snapshots are shared
/// by every database of a cluster, so other tests' open transactions would
/// show through.
pub async fn private_cluster() -> (Cluster, String) {
    let cluster = Cluster::start().expect("starting a private PostgreSQL cluster");
    cluster
        .create_database("app", None)
        .await
        .expect("creating the database");
    let url = cluster.url("app");
    let mut client = connect(&url).await;
    schema_migrate::apply(&mut client, &migrations())
        .await
        .expect("migrating the database");
    (cluster, url)
}

/// Connects with the same code the migration command uses.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    schema_migrate::connect(url)
        .await
        .unwrap_or_else(|err| panic!("connecting to {url}: {err}"))
}

fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
