//! The real stack for the agent's end-to-end tests: one throwaway
//! PostgreSQL cluster per test binary with a migrated template, a fresh
//! database per test, the project's Spin components (spin.toml) served by
//! the Wasmtime host on a loopback port, and the `local-agent` binary run as
//! a separate process, the way a user runs it.

#![allow(dead_code)] // each test binary uses its own subset

pub mod anki_desktop;
pub mod migration;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use app_server::AppServer;
use serde_json::Value;
use throwaway_pg::Cluster;

pub fn repo_root() -> PathBuf {
    app_server::repo_root()
}

/// One multi-threaded runtime per test binary: it drives the HTTP server
/// and the PostgreSQL connections while the tests themselves stay
/// synchronous (the agent is a blocking program).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    &RT
}

fn cluster() -> &'static Cluster {
    static CLUSTER: LazyLock<Cluster> =
        LazyLock::new(|| Cluster::start().expect("starting the throwaway PostgreSQL cluster"));
    &CLUSTER
}

/// Holds the tests of one binary to one at a time. The feed hands out only
/// transactions older than the oldest one still running, cluster-wide: a
/// test's writes stay invisible to its pull while another test of the same
/// cluster holds a transaction open, so tests that pull and then assert on
/// what arrived must not overlap.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it poisons it; the next may go on.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A migrated database of its own; returns its URL.
/// Creates database `name` in `cluster` with migrations/ applied.
fn create_migrated(cluster: &Cluster, name: &str) {
    rt().block_on(async {
        cluster
            .create_database(name, None)
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        let migrations = schema_migrate::Migrations::from_dir(repo_root().join("migrations"))
            .expect("migrations/");
        let mut client = schema_migrate::connect(&cluster.url(name))
            .await
            .unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
        schema_migrate::apply(&mut client, &migrations)
            .await
            .unwrap_or_else(|e| panic!("migrating {name}: {e}"));
    })
}

pub fn fresh_database() -> String {
    static TEMPLATE: OnceLock<()> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let cluster = cluster();
    TEMPLATE.get_or_init(|| create_migrated(cluster, "agent_template"));
    let name = format!("agent_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    rt().block_on(cluster.create_database(&name, Some("agent_template")))
        .expect("cloning the template");
    cluster.url(&name)
}

/// The test project's credentials, one set per test binary.
fn project() -> &'static dev_keys::Credentials {
    static PROJECT: OnceLock<dev_keys::Credentials> = OnceLock::new();
    PROJECT.get_or_init(|| dev_keys::Credentials::generate("agent-tests").expect("an ES256 key"))
}

/// The API served over one fresh database.
pub struct Stack {
    pub api_url: String,
    pub db_url: String,
    app: Option<AppServer>,
    pub pg: tokio_postgres::Client,
    own_cluster: Option<Cluster>,
}

fn connect(db_url: &str) -> tokio_postgres::Client {
    rt().block_on(async {
        let (client, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    })
}

impl Stack {
    /// The API over a fresh database of the shared cluster.
    pub fn start() -> Stack {
        Stack::serve(fresh_database(), cluster().port(), None)
    }

    /// The API over a cluster of its own, which the test may stop and
    /// restart (a database outage).
    pub fn start_isolated() -> Stack {
        let cluster = Cluster::start().expect("starting a private PostgreSQL cluster");
        create_migrated(&cluster, "app");
        let (url, port) = (cluster.url("app"), cluster.port());
        Stack::serve(url, port, Some(cluster))
    }

    fn serve(db_url: String, port: u16, own_cluster: Option<Cluster>) -> Stack {
        let db_host = format!("127.0.0.1:{port}");
        let mut variables = vec![("db_url", db_url.clone()), ("db_host", db_host)];
        variables.extend(project().app_variables());
        let variables: Vec<(&str, &str)> =
            variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let app = rt()
            .block_on(AppServer::start(&variables))
            .expect("serving spin.toml");
        Stack {
            api_url: app.url(),
            pg: connect(&db_url),
            db_url,
            app: Some(app),
            own_cluster,
        }
    }

    /// Stops the PostgreSQL server of an isolated stack.
    pub fn stop_database(&mut self) {
        self.own_cluster
            .as_mut()
            .expect("an isolated stack")
            .stop()
            .expect("stopping PostgreSQL");
    }

    /// Starts it again (same port) and reconnects the test's client.
    pub fn restart_database(&mut self) {
        self.own_cluster
            .as_mut()
            .expect("an isolated stack")
            .restart()
            .expect("restarting PostgreSQL");
        self.pg = connect(&self.db_url);
    }

    /// A valid token for `role` (anon, authenticated, service_role),
    /// signed with the project's ES256 key.
    pub fn token(&self, role: &str) -> String {
        project().token(role, 3600).expect("signing a token")
    }

    /// The project's API keys (`sb_secret_…`, `sb_publishable_…`).
    pub fn api_keys(&self) -> &'static dev_keys::ApiKeys {
        &project().api
    }

    /// Runs SQL on the server's database directly.
    pub fn sql(&self, sql: &str) {
        rt().block_on(self.pg.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        rt().block_on(self.pg.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// A JSON request to the API as an authenticated user; returns the
    /// status and the parsed body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.api_url);
        let auth = format!("Bearer {}", self.token("authenticated"));
        let result = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            ("PATCH", Some(b)) => agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            other => panic!("unsupported call {other:?}"),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a row through the API; returns its id.
    pub fn create(&self, path: &str, body: Value) -> i64 {
        let (status, row) = self.call("POST", path, Some(body.clone()));
        assert_eq!(status, 201, "POST {path} {body}: {row}");
        row["id"].as_i64().expect("an id")
    }

    /// Uploads asset bytes through the API; returns the asset's id.
    pub fn upload(&self, fragment_id: i64, bytes: &[u8]) -> i64 {
        let (status, body) = self.try_upload(fragment_id, bytes);
        assert_eq!(status, 201, "upload: {body}");
        body["id"].as_i64().unwrap()
    }

    /// Uploads asset bytes; returns the status and body, whatever they are
    /// (the fragment may have been deleted by a concurrent writer).
    pub fn try_upload(&self, fragment_id: i64, bytes: &[u8]) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(format!(
                "{}/api/assets?fragment_id={fragment_id}&asset_type=audio&created_by=tts",
                self.api_url
            ))
            .header(
                "Authorization",
                format!("Bearer {}", self.token("authenticated")),
            )
            .header("Content-Type", "audio/mpeg")
            .send(bytes)
            .expect("uploading an asset");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A bundled host is stopped from inside the runtime that drives it.
        let _guard = rt().enter();
        drop(self.app.take());
    }
}

/// A store file and config path of the test's own, and the binary.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub api_url: String,
    pub token: String,
}

impl Agent {
    pub fn new(stack: &Stack) -> Agent {
        Agent {
            dir: tempfile::tempdir().expect("a temporary directory"),
            api_url: stack.api_url.clone(),
            token: stack.token("anon"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("agent.db")
    }

    /// The command with the test's store, no config file and none of the
    /// caller's THAI_AGENT_* variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = agent_command();
        command
            .arg("--db")
            .arg(self.db())
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(["--api-url", &self.api_url, "--token", &self.token])
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running local-agent")
    }

    /// Runs with `--json`, asserts success and returns the parsed output.
    pub fn run_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "local-agent {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "local-agent {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn mirror(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db()).expect("opening the agent's store")
    }

    /// Starts the command in the background, its output in files of the
    /// agent's directory.
    pub fn start(&self, args: &[&str]) -> Background {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let stdout = self.dir.path().join(format!("run-{n}.out"));
        let stderr = self.dir.path().join(format!("run-{n}.err"));
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&stdout).expect("a file for stdout"))
            .stderr(std::fs::File::create(&stderr).expect("a file for stderr"))
            .spawn()
            .expect("starting local-agent");
        Background {
            child,
            stdout,
            stderr,
        }
    }

    /// [`Agent::run_json`], failing the test if the run takes longer than
    /// `limit` (a hang).
    pub fn run_json_within(&self, args: &[&str], limit: Duration) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.start(&all).finish(limit);
        assert!(
            out.status.success(),
            "local-agent {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "local-agent {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// A `local-agent` run in the background.
pub struct Background {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("polling the child").is_none()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL (std's kill on Unix: no destructor, no rollback handler
    /// runs), then what it left; its status tells whether it had ended
    /// before.
    pub fn kill(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reaping local-agent");
        Output {
            status,
            stdout: std::fs::read(&self.stdout).expect("its stdout"),
            stderr: std::fs::read(&self.stderr).expect("its stderr"),
        }
    }

    /// Waits for the end; past `limit` kills the process and fails.
    pub fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                break status;
            }
            if Instant::now() > deadline {
                let stderr = self.kill().stderr;
                panic!(
                    "local-agent was still running after {limit:?}: {}",
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: std::fs::read(&self.stdout).expect("its stdout"),
            stderr: std::fs::read(&self.stderr).expect("its stderr"),
        }
    }
}

/// The binary, with the environment cleaned of THAI_AGENT_* settings.
pub fn agent_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_local-agent"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("THAI_AGENT_") {
            command.env_remove(key);
        }
    }
    command
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Json,
    Time,
}

/// A table's fields as the content model declares them: the name in the
/// mirror (the JSON member), the server's column, and how to compare it.
fn columns(table: &str) -> Vec<(&'static str, &'static str, Kind)> {
    use content_model::Kind as Model;
    let table =
        content_model::Table::by_name(table).unwrap_or_else(|| panic!("unknown table {table}"));
    table
        .fields
        .iter()
        .map(|f| {
            let kind = match f.kind {
                Model::Id | Model::Int | Model::BigInt => Kind::Int,
                Model::Text(_) | Model::Enum(_) | Model::Score => Kind::Text,
                Model::Json => Kind::Json,
                Model::Timestamp => Kind::Time,
            };
            (f.name, f.column, kind)
        })
        .collect()
}

pub const TABLES: [&str; 4] = [
    "learning_content",
    "content_fragments",
    "fragment_assets",
    "rankings",
];

type Rows = BTreeMap<i64, Vec<Value>>;

fn server_rows(stack: &Stack, table: &str) -> Rows {
    let cols = columns(table);
    let select: Vec<String> = cols
        .iter()
        .map(|(_, expr, kind)| match kind {
            Kind::Int => format!("{expr}::bigint"),
            Kind::Text | Kind::Json => format!("{expr}::text"),
            Kind::Time => format!("(extract(epoch from {expr}) * 1000000)::bigint"),
        })
        .collect();
    let sql = format!("SELECT {} FROM {table}", select.join(", "));
    let rows = rt()
        .block_on(stack.pg.query(&sql, &[]))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|row| {
            let values: Vec<Value> = cols
                .iter()
                .enumerate()
                .map(|(i, (_, _, kind))| match kind {
                    Kind::Int | Kind::Time => row
                        .get::<_, Option<i64>>(i)
                        .map_or(Value::Null, Value::from),
                    Kind::Text => row
                        .get::<_, Option<String>>(i)
                        .map_or(Value::Null, Value::from),
                    Kind::Json => row.get::<_, Option<String>>(i).map_or(Value::Null, |t| {
                        serde_json::from_str(&t).expect("server JSON")
                    }),
                })
                .collect();
            (values[0].as_i64().unwrap(), values)
        })
        .collect()
}

fn mirror_rows(conn: &rusqlite::Connection, table: &str) -> Rows {
    let cols = columns(table);
    let names: Vec<&str> = cols.iter().map(|(n, _, _)| *n).collect();
    let sql = format!("SELECT {} FROM {table}", names.join(", "));
    let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    stmt.query_map([], |row| {
        let mut values = Vec::new();
        for (i, (_, _, kind)) in cols.iter().enumerate() {
            values.push(match kind {
                Kind::Int => row
                    .get::<_, Option<i64>>(i)?
                    .map_or(Value::Null, Value::from),
                Kind::Text => row
                    .get::<_, Option<String>>(i)?
                    .map_or(Value::Null, Value::from),
                Kind::Json => row.get::<_, Option<String>>(i)?.map_or(Value::Null, |t| {
                    serde_json::from_str(&t).expect("mirror JSON")
                }),
                Kind::Time => row.get::<_, Option<String>>(i)?.map_or(Value::Null, |t| {
                    let instant = chrono::DateTime::parse_from_rfc3339(&t)
                        .unwrap_or_else(|e| panic!("mirror timestamp {t:?}: {e}"));
                    Value::from(instant.timestamp_micros())
                }),
            });
        }
        Ok((values[0].as_i64().unwrap(), values))
    })
    .unwrap()
    .collect::<rusqlite::Result<Rows>>()
    .unwrap()
}

/// Asserts that the agent's mirror holds exactly the server's rows, table
/// by table and field by field (JSON compared as JSON, times as instants,
/// scores as their exact text).
pub fn assert_mirror_equals_server(stack: &Stack, agent: &Agent) {
    assert_store_equals_server(stack, &agent.mirror());
}

/// [`assert_mirror_equals_server`] for a store opened by the test.
pub fn assert_store_equals_server(stack: &Stack, conn: &rusqlite::Connection) {
    for table in TABLES {
        let server = server_rows(stack, table);
        let mirror = mirror_rows(conn, table);
        let missing: Vec<_> = server.keys().filter(|k| !mirror.contains_key(k)).collect();
        let extra: Vec<_> = mirror.keys().filter(|k| !server.contains_key(k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{table}: missing from the mirror {missing:?}, not on the server {extra:?}"
        );
        for (id, row) in &server {
            assert_eq!(
                &mirror[id], row,
                "{table} row {id} differs (mirror, server)"
            );
        }
    }
}

pub fn mirror_total(agent: &Agent) -> i64 {
    let conn = agent.mirror();
    TABLES
        .iter()
        .map(|t| {
            conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0)
        })
        .sum()
}

/// `contents` contents with three fragments each, an audio asset on every
/// other fragment and a ranking per asset, written straight into the
/// database (the change log records them like any other write).
pub fn seed(stack: &Stack, contents: i64) {
    stack.sql(&format!(
        "INSERT INTO learning_content (title, content_type, language, native_text, translation, ipa,
                                       difficulty_level, tags, content_metadata)
         SELECT 'บทที่ ' || g, CASE WHEN g % 3 = 0 THEN 'story' ELSE 'phrase' END, 'thai',
                'สวัสดีครับ ' || g || ' ขอบคุณมาก', 'hello ' || g, 'sà.wàt.diː kʰráp',
                NULLIF(g % 5, 0), jsonb_build_array('tag' || (g % 7)),
                jsonb_build_object('n', g, 'score', 1.50, 'note', 'ไม่เป็นไร')
         FROM generate_series(1, {contents}) g;
         INSERT INTO content_fragments (learning_content_id, native_text, body_text, ipa, extra,
                                        fragment_type, fragment_metadata)
         SELECT c.id, 'ประโยค ' || c.id || '-' || k, 'sentence ' || k, NULL,
                CASE WHEN k = 2 THEN 'note' END, 'sentence', NULL
         FROM learning_content c, generate_series(1, 3) k;
         INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, asset_metadata,
                                      content_type, created_by)
         SELECT f.id, 'audio', convert_to('audio bytes of ' || f.id, 'UTF8'),
                jsonb_build_object('voice', 'th-TH'), 'audio/mpeg', 'tts'
         FROM content_fragments f WHERE f.id % 2 = 0;
         INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by, assessment_notes)
         SELECT a.fragment_id, a.id, ((a.id % 501) / 100.0)::numeric(3, 2), 'nok',
                CASE WHEN a.id % 3 = 0 THEN 'clear' END
         FROM fragment_assets a;"
    ));
}

/// Pulls until the mirror satisfies `sql` (one boolean): the feed holds
/// back changes while older transactions of the shared cluster (other
/// tests) are still open, so one pull right after a write may not see it.
pub fn pull_until(agent: &Agent, sql: &str) {
    for _ in 0..200 {
        agent.run_json(&["pull"]);
        if agent
            .mirror()
            .query_row(sql, [], |r| r.get::<_, bool>(0))
            .unwrap()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the mirror never satisfied {sql}");
}

/// A server that accepts connections but never answers (a host stuck on a
/// query, Anki busy on its main thread); returns its address. Connections
/// stay open until the test binary ends.
pub fn silent_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}
