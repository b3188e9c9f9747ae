//! A disposable PostgreSQL cluster for tests and local development.
//!
//! [`Cluster::start`] runs `initdb` and `postgres` from the server binaries
//! installed on the machine, in a fresh temporary directory, listening on a
//! free loopback port. Dropping the [`Cluster`] stops the server and deletes
//! the directory. A small watcher process does the same when the owning
//! process ends in any other way (a `static` that is never dropped, a panic
//! that aborts, `SIGKILL`), so no server and no directory outlive it.
//!
//! [`Cluster::keep`] is the same server kept in a folder of the caller's
//! across runs (a local development database): created when the folder has
//! none, stopped with a checkpoint, never deleted, and held by one process
//! at a time.
//!
//! `initdb` and `postgres` refuse to run as root; when the current user is
//! root, the cluster runs as the unprivileged `postgres` user instead.
//!
//! ```no_run
//! # async fn demo() -> Result<(), throwaway_pg::Error> {
//! let cluster = throwaway_pg::Cluster::start()?;
//! cluster.create_database("app", None).await?;
//! let url = cluster.url("app"); // postgres://postgres@127.0.0.1:PORT/app?sslmode=disable
//! # Ok(()) }
//! ```

mod binaries;
mod server;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};

pub use binaries::Binaries;

/// The superuser `initdb` creates; it authenticates by `trust` on loopback.
pub const SUPERUSER: &str = "postgres";

/// How long a server gets to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_isready) were not found on PATH, \
         in $PG_BINDIR or under /usr/lib/postgresql/*/bin; install them \
         (Debian/Ubuntu: `apt-get install postgresql`) or set PG_BINDIR to their directory"
    )]
    BinariesNotFound,
    #[error(
        "running as root, but initdb refuses root and there is no unprivileged `postgres` user \
         to run the cluster as; create one (`apt-get install postgresql` does) or run as a normal user"
    )]
    NoUnprivilegedUser,
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}): {output}")]
    Initdb { status: String, output: String },
    #[error(
        "the PostgreSQL server did not become ready: {reason}\n--- server log (tail) ---\n{log}"
    )]
    NotReady { reason: String, log: String },
    #[error(
        "the PostgreSQL data folder {0} is out of reach of the `postgres` user the server runs as \
         (this process runs as root): let it through the folders above (chmod o+x), or use a \
         folder it can reach"
    )]
    Unreachable(PathBuf),
    #[error("the server is not running")]
    NotRunning,
    #[error(
        "the PostgreSQL data folder {0} is in use by another process; stop that one first, or \
         use another folder"
    )]
    InUse(PathBuf),
    #[error("database request failed: {0}")]
    Sql(#[from] tokio_postgres::Error),
}

impl Error {
    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}

/// Where a cluster lives: a temporary directory deleted with it, or a
/// folder kept across runs (with the lock that makes it this process's).
enum Root {
    Temp(tempfile::TempDir),
    Kept { dir: PathBuf, _lock: fs::File },
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(dir) => dir.path(),
            Root::Kept { dir, .. } => dir,
        }
    }
}

/// A running (or stopped, see [`Cluster::stop`]) throwaway cluster.
pub struct Cluster {
    // Declared first so it is dropped last, after the server was stopped.
    root: Option<Root>,
    binaries: Binaries,
    run_as: Option<(Uid, Gid)>,
    port: u16,
    server: Option<Child>,
    watcher: Option<Watcher>,
    /// Whether the server serves TLS with the certificate in its data dir.
    tls: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("root", &self.root_dir())
            .field("port", &self.port)
            .field("running", &self.server.is_some())
            .finish()
    }
}

impl Cluster {
    /// Creates and starts a new cluster on a free loopback port.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Binaries::locate()?)
    }

    /// Like [`Cluster::start`], and serving TLS (beside plain connections)
    /// with `cert_pem`, the server's certificate chain, and `key_pem`, its
    /// private key: for tests of clients that verify a server signed by a
    /// CA of their own, as Supabase's databases are.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        Self::start_inner(Binaries::locate()?, Some((cert_pem, key_pem)))
    }

    /// Like [`Cluster::start`] with explicitly chosen server binaries.
    pub fn start_with(binaries: Binaries) -> Result<Self, Error> {
        Self::start_inner(binaries, None)
    }

    fn start_inner(binaries: Binaries, tls: Option<(&str, &str)>) -> Result<Self, Error> {
        let run_as = unprivileged_user()?;
        let root = tempfile::Builder::new()
            .prefix("throwaway-pg-")
            .tempdir()
            .map_err(Error::io("creating the cluster directory"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(root.path(), Some(uid.as_raw()), Some(gid.as_raw())).map_err(
                Error::io("handing the cluster directory to the postgres user"),
            )?;
        }
        // Started before the server so that no moment exists in which a
        // server runs that nobody would clean up.
        let watcher = Watcher::spawn(root.path(), false)?;
        let mut cluster = Cluster {
            root: Some(Root::Temp(root)),
            binaries,
            run_as,
            port: 0,
            server: None,
            watcher: Some(watcher),
            tls: tls.is_some(),
        };
        cluster.initdb()?;
        if let Some((cert, key)) = tls {
            cluster.install_tls_files(cert, key)?;
        }
        cluster.launch_on_free_port()?;
        Ok(cluster)
    }

    /// The cluster kept in `dir` (created there by `initdb` when `dir` holds
    /// none), started on loopback `port`. Dropping it stops the server with
    /// a fast shutdown, which writes a checkpoint: the data stays for the
    /// next run. If the process ends without the drop, a watcher stops the
    /// server the same way. Only one process at a time may hold `dir`:
    /// another gets [`Error::InUse`].
    /// With `fresh`, the data already in `dir` is deleted first (once the
    /// folder is held).
    pub fn keep(dir: &Path, port: u16, fresh: bool) -> Result<Self, Error> {
        let binaries = Binaries::locate()?;
        let run_as = unprivileged_user()?;
        fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(Error::io(format!("resolving {}", dir.display())))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("cluster.lock"))
            .map_err(Error::io("opening the folder's lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::InUse(dir)),
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io("locking the data folder")(e));
            }
        }
        if fresh && dir.join("data").exists() {
            fs::remove_dir_all(dir.join("data"))
                .map_err(Error::io("deleting the old data for a fresh start"))?;
        }
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(Error::io("handing the data folder to the postgres user"))?;
            let reachable = Command::new("test")
                .arg("-w")
                .arg(&dir)
                .uid(uid.as_raw())
                .gid(gid.as_raw())
                .status()
                .map_err(Error::io("checking the data folder's access"))?;
            if !reachable.success() {
                return Err(Error::Unreachable(dir));
            }
        }
        let watcher = Watcher::spawn(&dir, true)?;
        let fresh = !dir.join("data/PG_VERSION").exists();
        let mut cluster = Cluster {
            root: Some(Root::Kept { dir, _lock: lock }),
            binaries,
            run_as,
            port,
            server: None,
            watcher: Some(watcher),
            tls: false,
        };
        if fresh {
            cluster.initdb()?;
        }
        cluster.launch(port)?;
        Ok(cluster)
    }

    /// The loopback port the server listens on; stable across [`Cluster::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory that holds the data directory, the socket and the server log.
    pub fn root_dir(&self) -> &Path {
        self.root
            .as_ref()
            .expect("root is only taken on drop")
            .path()
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.root_dir().join("data")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root_dir().join("postgres.log")
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// A connection URL for `dbname` as the superuser, over TCP without TLS.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    /// Connects to `dbname`; the connection is driven by a task on the
    /// current Tokio runtime.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(dbname), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // The error, if any, surfaces on the client's next call.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates database `name`, as a copy of `template` when given.
    ///
    /// Copying a migrated template is how tests get a fresh schema in
    /// milliseconds instead of replaying every migration.
    pub async fn create_database(&self, name: &str, template: Option<&str>) -> Result<(), Error> {
        let client = self.connect("postgres").await?;
        let mut sql = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(template) = template {
            // FILE_COPY clones a small template faster than WAL_LOG (the
            // default since PostgreSQL 15), and durability is moot here.
            sql.push_str(&format!(
                " TEMPLATE {} STRATEGY FILE_COPY",
                quote_ident(template)
            ));
        }
        client.batch_execute(&sql).await?;
        Ok(())
    }

    /// Drops database `name`, disconnecting its sessions first.
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ))
            .await?;
        Ok(())
    }

    /// Stops the server (fast shutdown) and keeps the data, so that
    /// [`Cluster::restart`] can bring it back: how tests simulate an outage.
    pub fn stop(&mut self) -> Result<(), Error> {
        let mut server = self.server.take().ok_or(Error::NotRunning)?;
        server::shut_down(&mut server, nix::sys::signal::Signal::SIGINT)
    }

    /// Starts a stopped server again, on the same port.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.server.is_some() {
            self.stop()?;
        }
        self.launch(self.port)
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.root_dir()).env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    fn initdb(&self) -> Result<(), Error> {
        let output = self
            .command(&self.binaries.initdb())
            .arg("--pgdata")
            .arg(self.data_dir())
            .args([
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(format!(
                "running {}",
                self.binaries.initdb().display()
            )))?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(Error::Initdb {
                status: output.status.to_string(),
                output: text,
            });
        }
        Ok(())
    }

    /// Writes the certificate and key into the data directory, owned by
    /// the server's user and, for the key, readable by it alone (the
    /// server refuses a key others can read).
    fn install_tls_files(&self, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        for (name, text, mode) in [
            (TLS_CERT_FILE, cert_pem, 0o644),
            (TLS_KEY_FILE, key_pem, 0o600),
        ] {
            let path = self.data_dir().join(name);
            fs::write(&path, text).map_err(Error::io(format!("writing {name}")))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(Error::io(format!("restricting {name}")))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid.as_raw()), Some(gid.as_raw()))
                    .map_err(Error::io(format!("handing {name} to the postgres user")))?;
            }
        }
        Ok(())
    }

    fn launch_on_free_port(&mut self) -> Result<(), Error> {
        // Another process may take the port between our probe and the
        // server's bind; a few fresh ports make that race harmless.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            match self.launch(port) {
                Ok(()) => return Ok(()),
                Err(err @ Error::NotReady { .. }) => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    fn launch(&mut self, port: u16) -> Result<(), Error> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(Error::io("opening the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("opening the server log"))?;
        let mut command = self.command(&self.binaries.postgres());
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.socket_dir()))
            .args(server::SETTINGS.iter().flat_map(|s| ["-c", s]))
            .args(
                if self.is_kept() {
                    &[][..]
                } else {
                    server::THROWAWAY_SETTINGS
                }
                .iter()
                .flat_map(|s| ["-c", s]),
            )
            .args(
                self.tls_settings()
                    .iter()
                    .flat_map(|s| ["-c".to_owned(), s.clone()]),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for the test run must not
            // kill the server before the watcher can clean up behind it.
            .process_group(0);
        let mut child = command.spawn().map_err(Error::io(format!(
            "starting {}",
            self.binaries.postgres().display()
        )))?;
        self.port = port;
        match server::wait_ready(&mut child, &self.binaries, port, READY_TIMEOUT) {
            Ok(()) => {
                self.server = Some(child);
                Ok(())
            }
            Err(reason) => {
                let _ = server::shut_down(&mut child, nix::sys::signal::Signal::SIGQUIT);
                Err(Error::NotReady {
                    reason,
                    log: tail(&self.log_file(), 20),
                })
            }
        }
    }
}

impl Cluster {
    fn is_kept(&self) -> bool {
        matches!(self.root, Some(Root::Kept { .. }))
    }

    /// The folder of the server's Unix socket: none for a kept cluster,
    /// whose folder may be deeper than a socket path may be long (107
    /// bytes); clients use TCP.
    fn socket_dir(&self) -> String {
        if self.is_kept() {
            String::new()
        } else {
            self.root_dir().display().to_string()
        }
    }

    fn tls_settings(&self) -> Vec<String> {
        if !self.tls {
            return Vec::new();
        }
        vec![
            "ssl=on".to_owned(),
            format!("ssl_cert_file={TLS_CERT_FILE}"),
            format!("ssl_key_file={TLS_KEY_FILE}"),
        ]
    }
}

/// The server's certificate and key, in the data directory.
const TLS_CERT_FILE: &str = "server.crt";
const TLS_KEY_FILE: &str = "server.key";

impl Drop for Cluster {
    fn drop(&mut self) {
        let kept = self.is_kept();
        if let Some(mut server) = self.server.take() {
            // A throwaway cluster needs no checkpoint (immediate shutdown);
            // a kept one gets a fast shutdown, which writes one.
            let signal = if kept {
                nix::sys::signal::Signal::SIGINT
            } else {
                nix::sys::signal::Signal::SIGQUIT
            };
            let _ = server::shut_down(&mut server, signal);
        }
        if let Some(Root::Temp(root)) = self.root.take() {
            let _ = root.close();
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.dismiss();
        }
    }
}

/// A `sh` process that waits for its stdin to close, which happens when the
/// owning process ends however it ends, then stops the server and deletes
/// the cluster directory (a kept one: stops the server with a checkpoint and
/// keeps the folder). After an orderly [`Drop`] it finds nothing to do.
struct Watcher {
    child: Child,
    stdin: ChildStdin,
}

impl Watcher {
    const SCRIPT: &str = r#"
read -r _ignored
pidfile="$THROWAWAY_PG_ROOT/data/postmaster.pid"
if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    if [ -n "$THROWAWAY_PG_KEEP" ]; then kill -INT "$pid" 2>/dev/null; else kill -QUIT "$pid" 2>/dev/null; fi
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 300 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    kill -KILL "$pid" 2>/dev/null
fi
[ -n "$THROWAWAY_PG_KEEP" ] || rm -rf "$THROWAWAY_PG_ROOT"
"#;

    fn spawn(root: &Path, keep: bool) -> Result<Self, Error> {
        let mut command = Command::new("sh");
        if keep {
            command.env("THROWAWAY_PG_KEEP", "1");
        }
        let mut child = command
            .arg("-c")
            .arg(Self::SCRIPT)
            .env("THROWAWAY_PG_ROOT", root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(Error::io("starting the cluster watcher (sh)"))?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok(Watcher { child, stdin })
    }

    fn dismiss(mut self) {
        // A line (rather than only EOF) also wakes it if the fd was inherited
        // by a child process that still holds it open.
        let _ = self.stdin.write_all(b"\n");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

fn unprivileged_user() -> Result<Option<(Uid, Gid)>, Error> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(SUPERUSER) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some((user.uid, user.gid))),
        _ => Err(Error::NoUnprivilegedUser),
    }
}

fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(Error::io("finding a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("finding a free loopback port"))?
        .port();
    Ok(port)
}

/// Quotes an SQL identifier (`"` doubled), so any database name is safe.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = fs::File::open(path) else {
        return String::from("(no log)");
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn a_kept_cluster_keeps_its_rows_and_is_held_by_one_owner_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        // The folder must be traversable by the postgres user when root.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let folder = dir.path().join("pg");
        let port = free_port().unwrap();
        let cluster = Cluster::keep(&folder, port, false).unwrap();
        run(async {
            cluster.create_database("app", None).await.unwrap();
            let client = cluster.connect("app").await.unwrap();
            client
                .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
                .await
                .unwrap();
        });
        match Cluster::keep(&folder, free_port().unwrap(), true) {
            Err(Error::InUse(held)) => assert_eq!(held, folder.canonicalize().unwrap()),
            other => panic!("a second owner was not refused: {other:?}"),
        }
        drop(cluster);
        assert!(folder.join("data/PG_VERSION").exists(), "the data stays");
        let again = Cluster::keep(&folder, port, false).unwrap();
        let v: String = run(async {
            let client = again.connect("app").await.unwrap();
            client
                .query_one("SELECT v FROM t", &[])
                .await
                .unwrap()
                .get(0)
        });
        assert_eq!(v, "kept");
        drop(again);
        let fresh = Cluster::keep(&folder, port, true).unwrap();
        let databases: i64 = run(async {
            let client = fresh.connect("postgres").await.unwrap();
            let sql = "SELECT count(*) FROM pg_database WHERE datname = 'app'";
            client.query_one(sql, &[]).await.unwrap().get(0)
        });
        assert_eq!(databases, 0, "a fresh start is empty");
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
