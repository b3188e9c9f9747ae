//! What deployment relies on: the manifests parse and agree with spin.toml
//! and README.md, and the migrations apply on a database set up the way
//! Supabase sets one up (API roles present, a non-superuser owner).

use std::collections::BTreeSet;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The variables spin.toml declares.
fn declared_variables() -> BTreeSet<String> {
    let manifest: toml::Table = repo("spin.toml").parse().expect("spin.toml parses");
    manifest["variables"]
        .as_table()
        .expect("[variables]")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_spinapp_sets_every_variable_spin_toml_declares() {
    let docs = YamlLoader::load_from_str(&repo("deploy/spinapp.yaml"))
        .expect("deploy/spinapp.yaml parses");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Secret", "SpinApp", "HorizontalPodAutoscaler"]);
    let app = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("SpinApp"))
        .unwrap();
    assert_eq!(
        app["apiVersion"].as_str(),
        Some("core.spinkube.dev/v1alpha1")
    );
    let set: BTreeSet<String> = app["spec"]["variables"]
        .as_vec()
        .expect("spec.variables")
        .iter()
        .map(|v| v["name"].as_str().expect("a variable name").to_owned())
        .collect();
    assert_eq!(set, declared_variables());

    // Secrets come from the Secret, whose keys exist.
    let secret = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Secret"))
        .unwrap();
    for variable in app["spec"]["variables"].as_vec().unwrap() {
        if let Yaml::Hash(_) = variable["valueFrom"] {
            let key = variable["valueFrom"]["secretKeyRef"]["key"]
                .as_str()
                .unwrap();
            assert!(
                !secret["stringData"][key].is_badvalue(),
                "the Secret has no {key}"
            );
        }
    }
    for secret_variable in ["db_url", "jwt_secret", "api_secret_keys_sha256"] {
        let binding = app["spec"]["variables"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(secret_variable))
            .unwrap();
        assert!(
            binding["value"].is_badvalue(),
            "{secret_variable} must come from a Secret, not a literal"
        );
    }
    assert_eq!(
        app["spec"]["checks"]["readiness"]["httpGet"]["path"].as_str(),
        Some("/api/health")
    );
    let hpa = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("HorizontalPodAutoscaler"))
        .unwrap();
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("SpinApp")
    );

    let runtime: toml::Table = repo("deploy/runtime-config.toml.example")
        .parse()
        .expect("runtime config parses");
    assert_eq!(
        runtime["config_provider"][0]["type"].as_str(),
        Some("vault")
    );
}

#[test]
fn the_readme_documents_every_variable() {
    let readme = repo("README.md");
    for variable in declared_variables() {
        assert!(
            readme.contains(&format!("| `{variable}`")),
            "README.md's variable table lacks {variable}"
        );
    }
    assert!(
        readme.contains("SPIN_VARIABLE_DB_URL"),
        "README.md shows the environment form"
    );
}

#[tokio::test]
async fn migrations_apply_as_a_supabase_style_non_superuser_owner() {
    let cluster = integration_tests::db::cluster();
    let admin = cluster.connect("postgres").await.unwrap();
    // As on Supabase: the API roles exist, the database belongs to a role
    // that is not a superuser, and default privileges hand new tables to
    // the Data API roles.
    admin
        .batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
                     CREATE ROLE anon NOLOGIN NOINHERIT;
                     CREATE ROLE authenticated NOLOGIN NOINHERIT;
                     CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
                     CREATE ROLE app_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
                     GRANT anon, authenticated, service_role TO app_owner;
                 END IF;
             END $$;",
        )
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE supabase_like OWNER app_owner")
        .await
        .unwrap();
    let owner_url = format!(
        "postgres://app_owner@127.0.0.1:{}/supabase_like?sslmode=disable",
        cluster.port()
    );
    let owner = integration_tests::db::connect(&owner_url).await;
    owner
        .batch_execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;",
        )
        .await
        .unwrap();
    let is_superuser: bool = owner
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!is_superuser);

    let mut owner = owner;
    let report = schema_migrate::apply(&mut owner, &integration_tests::db::migrations())
        .await
        .expect("migrations apply as a non-superuser owner");
    assert_eq!(
        report.applied.len(),
        integration_tests::db::migrations().len()
    );

    owner
        .batch_execute(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
             VALUES ('t', 'phrase', 'ไข่', 'egg', 'kʰàj')",
        )
        .await
        .unwrap();
    // The Data API roles see nothing and write nothing: RLS without policies.
    owner.batch_execute("SET ROLE anon").await.unwrap();
    let visible: i64 = owner
        .query_one("SELECT count(*) FROM learning_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, 0);
    let refused = owner
        .batch_execute("INSERT INTO learning_content (title, content_type, native_text, translation, ipa) VALUES ('x','x','x','x','x')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().unwrap().code(),
        &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
    );
    owner.batch_execute("RESET ROLE").await.unwrap();
    let all: i64 = owner
        .query_one("SELECT count(*) FROM learning_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(all, 1, "the owner, as the functions connect, sees its rows");
}
