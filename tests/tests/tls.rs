//! TLS to a database whose certificate is signed by a CA of its own, as
//! Supabase's are (its `prod-ca-2021.crt` is in no system trust store): a
//! throwaway cluster serving TLS with a CA made for the test run.
//!
//! - `schema-migrate` takes the CA in the URL (`sslrootcert`) with
//!   `sslmode=verify-full`, and refuses the server without it.
//! - The app (the bundled host, or Spin under `SPIN_BIN`) verifies the server
//!   against OpenSSL's default trust store, which the process's
//!   `SSL_CERT_FILE` replaces: with it, `sslmode=require` connects; without
//!   it, health is 503 and the log names the failed verification. The host
//!   runs in a child process (this test binary again), whose environment is
//!   its own.

mod support;

use support::{ChildServer, send_to, serve_until_stdin_closes};

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "throwaway test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A migrated database on a cluster serving TLS; the CA file and a URL
/// without sslmode (the caller adds its own).
struct TlsDb {
    cluster: throwaway_pg::Cluster,
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    url: String,
}

async fn tls_db() -> TlsDb {
    let pki = pki();
    let (cert, key) = (pki.cert_pem.clone(), pki.key_pem.clone());
    let cluster =
        tokio::task::spawn_blocking(move || throwaway_pg::Cluster::start_with_tls(&cert, &key))
            .await
            .unwrap()
            .expect("starting PostgreSQL with TLS");
    cluster.create_database("tls", None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/tls", cluster.port());
    TlsDb {
        cluster,
        _dir: dir,
        ca_file,
        url,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_migrate_verifies_the_server_with_the_ca_it_is_given() {
    let db = tls_db().await;
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url,
        db.ca_file.display()
    );
    let mut client = schema_migrate::connect(&verified)
        .await
        .expect("connecting with the CA");
    let tls: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tls, "the connection is encrypted");
    schema_migrate::apply(&mut client, &integration_tests::db::migrations())
        .await
        .expect("migrating over TLS");

    let unverified = format!("{}?sslmode=verify-full", db.url);
    let err = schema_migrate::connect(&unverified)
        .await
        .expect_err("a server signed by an unknown CA is refused");
    let text = format!("{err} {err:?}");
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    drop(db.cluster);
}

const CHILD_DB: &str = "TLS_TESTS_CHILD_DB";
const CHILD_PORT: &str = "TLS_TESTS_CHILD_PORT";

/// The server half of [`the_app_trusts_the_ca_its_environment_names`]:
/// does nothing unless that test started it.
#[test]
#[ignore = "started by the_app_trusts_the_ca_its_environment_names in a child process"]
fn child_server() {
    let (Ok(db_url), Ok(port)) = (std::env::var(CHILD_DB), std::env::var(CHILD_PORT)) else {
        return;
    };
    let db_host = format!("127.0.0.1:{port}");
    serve_until_stdin_closes(&[
        ("db_url", &db_url),
        ("db_host", &db_host),
        ("jwt_secret", "x"),
    ]);
}

/// Serves the app in a child process with `ca_file` as its SSL_CERT_FILE
/// (or none), asks for health, and returns the status and what the child
/// and its host wrote.
async fn health_in_child(db: &TlsDb, ca_file: Option<&std::path::Path>) -> (u16, String) {
    // Without the CA: a file of no certificates, so that the machine's own
    // roots decide the case neither way.
    let ca_file = ca_file.map_or("/dev/null".to_owned(), |f| f.display().to_string());
    let db_url = format!("{}?sslmode=require", db.url);
    let child = ChildServer::spawn(
        "child_server",
        &[
            (CHILD_DB, &db_url),
            (CHILD_PORT, &db.cluster.port().to_string()),
            ("RUST_LOG", "info"),
            ("SSL_CERT_FILE", &ca_file),
            ("SSL_CERT_DIR", ""),
        ],
    );
    let reply = send_to(
        child.addr,
        http::Method::GET,
        "/api/health",
        &[],
        bytes::Bytes::new(),
    )
    .await;
    let mut log = child.finish();
    log.push_str(&reply.text());
    (reply.status, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_trusts_the_ca_its_environment_names() {
    let db = tls_db().await;
    let mut client = schema_migrate::connect(&format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url,
        db.ca_file.display()
    ))
    .await
    .unwrap();
    schema_migrate::apply(&mut client, &integration_tests::db::migrations())
        .await
        .unwrap();

    let (status, log) = health_in_child(&db, Some(&db.ca_file)).await;
    assert_eq!(status, 200, "with the CA in SSL_CERT_FILE: {log}");

    let (status, log) = health_in_child(&db, None).await;
    assert_eq!(status, 503, "without the CA: {log}");
    assert!(
        log.contains("certificate verify failed"),
        "the log says why the database was refused: {log}"
    );
}
