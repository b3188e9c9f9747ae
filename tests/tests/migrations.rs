//! The migration command against a real PostgreSQL: fresh databases get the
//! whole schema, re-runs change nothing, edited or broken files are refused.

use integration_tests::db;
use schema_migrate::{Error, Migrations};

/// Everything about the public schema that a migration can change, as text,
/// so that "re-running changes nothing" is a comparison of two snapshots.
async fn schema_snapshot(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
                    || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
                    || ' generated=' || coalesce(generation_expression, '')
               FROM information_schema.columns WHERE table_schema = 'public'
             UNION ALL
             SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
             UNION ALL
             SELECT 'trigger ' || tgrelid::regclass || ' ' || pg_get_triggerdef(oid)
               FROM pg_trigger WHERE NOT tgisinternal
             UNION ALL
             SELECT 'function ' || p.oid::regprocedure || ' ' || md5(prosrc)
               FROM pg_proc p WHERE pronamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'rls ' || relname || ' ' || relrowsecurity
               FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
             UNION ALL
             SELECT 'ledger ' || version || ' ' || name || ' ' || checksum FROM applied_migrations
             ORDER BY 1",
            &[],
        )
        .await
        .expect("reading the catalog");
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn a_fresh_database_gets_the_whole_schema_and_a_rerun_changes_nothing() {
    let url = db::empty_database().await;
    let mut client = db::connect(&url).await;
    let migrations = db::migrations();

    let first = schema_migrate::apply(&mut client, &migrations)
        .await
        .unwrap();
    let all: Vec<String> = migrations.iter().map(|m| m.file_name()).collect();
    assert_eq!(first.applied, all);
    assert_eq!(first.already_applied, 0);

    let snapshot = schema_snapshot(&client).await;
    for expected in [
        "column learning_content.tags jsonb",
        "column fragment_assets.asset_sha256 text",
        "index CREATE INDEX idx_learning_content_tags ON public.learning_content USING gin (tags)",
        "index CREATE INDEX idx_rankings_score ON public.rankings USING btree (rank_score DESC)",
        "constraint fragment_assets fragment_assets_asset_type_check",
        "constraint content_fragments content_fragments_learning_content_id_fkey FOREIGN KEY (learning_content_id) REFERENCES learning_content(id) ON DELETE CASCADE",
        "trigger rankings CREATE TRIGGER rankings_log_delete AFTER DELETE",
        "rls learning_content true",
    ] {
        assert!(
            snapshot.iter().any(|line| line.starts_with(expected)),
            "missing from the schema: {expected}\n{snapshot:#?}"
        );
    }
    let ledger: Vec<String> = client
        .query(
            "SELECT version || '_' || name || '.sql' FROM applied_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ledger, all);

    let second = schema_migrate::apply(&mut client, &migrations)
        .await
        .unwrap();
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert_eq!(second.already_applied, all.len());
    assert_eq!(schema_snapshot(&client).await, snapshot);
    assert!(
        schema_migrate::pending(&client, &migrations)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A copy of migrations/ that a test may edit.
fn scratch_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(db::migrations_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[tokio::test]
async fn an_edited_applied_file_is_refused_by_name() {
    let url = db::fresh_database().await;
    let mut client = db::connect(&url).await;
    let dir = scratch_copy();
    let victim = db::migrations().iter().next().unwrap().file_name();
    let path = dir.path().join(&victim);
    let mut sql = std::fs::read_to_string(&path).unwrap();
    sql.push_str("\n-- an innocent-looking edit\n");
    std::fs::write(&path, sql).unwrap();
    // A new file too: it must not run while the set is inconsistent.
    std::fs::write(
        dir.path().join("29991231235959_later.sql"),
        "CREATE TABLE must_not_exist (id int);",
    )
    .unwrap();
    let edited = Migrations::from_dir(dir.path()).unwrap();

    let err = schema_migrate::apply(&mut client, &edited)
        .await
        .unwrap_err();
    match &err {
        Error::ChecksumChanged { file, .. } => assert_eq!(file, &victim),
        other => panic!("expected ChecksumChanged, got {other:?}"),
    }
    assert!(err.to_string().contains(&victim), "{err}");
    let exists: bool = client
        .query_one("SELECT to_regclass('must_not_exist') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
}

#[tokio::test]
async fn a_failing_file_is_rolled_back_and_not_recorded() {
    let url = db::fresh_database().await;
    let mut client = db::connect(&url).await;
    let dir = scratch_copy();
    std::fs::write(
        dir.path().join("29991231235959_broken.sql"),
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("29991231235960_after.sql"),
        "CREATE TABLE after_broken (id int);",
    )
    .unwrap();
    let set = Migrations::from_dir(dir.path()).unwrap();

    let err = schema_migrate::apply(&mut client, &set).await.unwrap_err();
    match &err {
        Error::Failed { file, reason } => {
            assert_eq!(file, "29991231235959_broken.sql");
            assert!(reason.contains("no_such_table"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let row = client
        .query_one(
            "SELECT to_regclass('half_done') IS NULL, to_regclass('after_broken') IS NULL,
                    (SELECT count(*) FROM applied_migrations WHERE version >= '29991231235959')",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the failed file's first statement must be rolled back"
    );
    assert!(row.get::<_, bool>(1), "no file after a failure may run");
    assert_eq!(row.get::<_, i64>(2), 0);
}

#[tokio::test]
async fn concurrent_runs_apply_each_file_once() {
    let url = db::empty_database().await;
    let migrations = db::migrations();
    let runs = (0..4).map(|_| {
        let url = url.clone();
        let migrations = migrations.clone();
        tokio::spawn(async move {
            let mut client = db::connect(&url).await;
            schema_migrate::apply(&mut client, &migrations)
                .await
                .unwrap()
        })
    });
    let mut applied = 0;
    for run in runs {
        applied += run.await.unwrap().applied.len();
    }
    assert_eq!(applied, migrations.len());
}
