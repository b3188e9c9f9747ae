//! The migrated schema in a real PostgreSQL: the seed's constraints,
//! cascades and indexes, the triggers, and the change log behind the feed.

use integration_tests::db;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

async fn fresh() -> Client {
    db::connect(&db::fresh_database().await).await
}

/// Inserts a content with one fragment, one audio asset and one ranking;
/// returns their ids.
async fn content_tree(client: &Client) -> (i32, i32, i32, i32) {
    let row = client
        .query_one(
            "WITH c AS (
                 INSERT INTO learning_content (title, content_type, native_text, translation, ipa, tags)
                 VALUES ('สวัสดี', 'phrase', 'สวัสดีครับ', 'hello', 'sa.wat.diː kʰráp', '[\"greeting\"]')
                 RETURNING id),
             f AS (
                 INSERT INTO content_fragments (native_text, body_text, fragment_type, learning_content_id)
                 SELECT 'สวัสดี', 'hello', 'word', id FROM c RETURNING id),
             a AS (
                 INSERT INTO fragment_assets (fragment_id, asset_type, asset_data)
                 SELECT id, 'audio', '\\x494433'::bytea FROM f RETURNING id, fragment_id),
             r AS (
                 INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
                 SELECT fragment_id, id, 4.50, 'assessor' FROM a RETURNING id)
             SELECT (SELECT id FROM c), (SELECT id FROM f), (SELECT id FROM a), (SELECT id FROM r)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn sqlstate(err: &tokio_postgres::Error) -> (SqlState, String) {
    let db = err.as_db_error().expect("a database error");
    (
        db.code().clone(),
        db.constraint().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn asset_type_outside_audio_image_video_is_refused() {
    let client = fresh().await;
    let (_, fragment, _, _) = content_tree(&client).await;
    for ok in ["audio", "image", "video"] {
        client
            .execute(
                "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data) VALUES ($1, $2, '\\x00')",
                &[&fragment, &ok],
            )
            .await
            .unwrap_or_else(|err| panic!("{ok} must be accepted: {err}"));
    }
    for bad in ["text", "Audio", ""] {
        let err = client
            .execute(
                "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data) VALUES ($1, $2, '\\x00')",
                &[&fragment, &bad],
            )
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&err),
            (
                SqlState::CHECK_VIOLATION,
                "fragment_assets_asset_type_check".into()
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn rank_score_must_lie_within_0_and_5_with_two_decimals() {
    let client = fresh().await;
    let (_, fragment, asset, _) = content_tree(&client).await;
    let insert = "INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
                  VALUES ($1, $2, $3::text::numeric, 'a') RETURNING rank_score::text";
    for (given, stored) in [
        ("0", "0.00"),
        ("4.99", "4.99"),
        ("5.00", "5.00"),
        ("2.5", "2.50"),
    ] {
        let row = client
            .query_one(insert, &[&fragment, &asset, &given])
            .await
            .unwrap_or_else(|err| panic!("{given} must be accepted: {err}"));
        assert_eq!(row.get::<_, String>(0), stored);
    }
    for bad in ["5.01", "-0.01", "10"] {
        let err = client
            .query_one(insert, &[&fragment, &asset, &bad])
            .await
            .unwrap_err();
        let code = err.as_db_error().unwrap().code().clone();
        // 10 does not even fit numeric(3,2); the others trip the CHECK.
        assert!(
            code == SqlState::CHECK_VIOLATION || code == SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            "{bad}: {code:?}"
        );
    }
    let default: String = client
        .query_one(
            "INSERT INTO rankings (assessed_by) VALUES ('a') RETURNING rank_score::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "0.00");
}

#[tokio::test]
async fn deleting_content_removes_its_fragments_assets_and_rankings() {
    let client = fresh().await;
    let (content, fragment, asset, ranking) = content_tree(&client).await;
    let other = content_tree(&client).await;
    client
        .execute("DELETE FROM learning_content WHERE id = $1", &[&content])
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM content_fragments WHERE id = $1),
                    (SELECT count(*) FROM fragment_assets WHERE id = $2),
                    (SELECT count(*) FROM rankings WHERE id = $3),
                    (SELECT count(*) FROM rankings WHERE id = $4)",
            &[&fragment, &asset, &ranking, &other.3],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (0, 0, 0)
    );
    assert_eq!(
        row.get::<_, i64>(3),
        1,
        "another content's tree is untouched"
    );
}

#[tokio::test]
async fn a_fragment_of_missing_content_is_refused() {
    let client = fresh().await;
    let err = client
        .execute(
            "INSERT INTO content_fragments (native_text, body_text, fragment_type, learning_content_id)
             VALUES ('x', 'y', 'word', 999999)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        (
            SqlState::FOREIGN_KEY_VIOLATION,
            "content_fragments_learning_content_id_fkey".into()
        )
    );
}

#[tokio::test]
async fn jsonb_tags_are_queried_by_containment_through_the_gin_index() {
    let client = fresh().await;
    client
        .batch_execute(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa, tags, content_metadata)
             SELECT 'c' || i, 'phrase', 'ข้าว', 'rice', 'kʰâːw',
                    jsonb_build_array('tag' || (i % 500), CASE WHEN i = 42 THEN 'rare' ELSE 'common' END),
                    jsonb_build_object('level', i % 7, 'source', 'test')
             FROM generate_series(1, 5000) i;
             ANALYZE learning_content;",
        )
        .await
        .unwrap();
    let found: Vec<String> = client
        .query(
            "SELECT title FROM learning_content WHERE tags @> '[\"rare\"]'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(found, ["c42"]);
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT title FROM learning_content WHERE tags @> '[\"rare\"]'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plan.iter()
            .any(|line| line.contains("idx_learning_content_tags")),
        "containment must use the GIN index:\n{}",
        plan.join("\n")
    );
    let metadata: i64 = client
        .query_one(
            "SELECT count(*) FROM learning_content WHERE content_metadata @> '{\"level\": 3}'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(metadata, (1..=5000).filter(|i| i % 7 == 3).count() as i64);
}

#[tokio::test]
async fn asset_size_and_sha256_are_kept_with_the_bytes() {
    let client = fresh().await;
    let (_, fragment, _, _) = content_tree(&client).await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let row = client
        .query_one(
            "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data) VALUES ($1, 'audio', $2)
             RETURNING id, asset_size, asset_sha256",
            &[&fragment, &bytes],
        )
        .await
        .unwrap();
    let id: i32 = row.get(0);
    assert_eq!(row.get::<_, i64>(1), bytes.len() as i64);
    assert_eq!(row.get::<_, String>(2), hex::encode(Sha256::digest(&bytes)));
    let empty: Vec<u8> = Vec::new();
    let row = client
        .query_one(
            "UPDATE fragment_assets SET asset_data = $2 WHERE id = $1 RETURNING asset_size, asset_sha256",
            &[&id, &empty],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, String>(1), hex::encode(Sha256::digest(b"")));
}

#[tokio::test]
async fn updated_at_follows_updates_unless_the_writer_sets_it() {
    let client = fresh().await;
    let (content, _, _, _) = content_tree(&client).await;
    client
        .execute(
            "UPDATE learning_content SET updated_at = '2020-01-01T00:00:00Z' WHERE id = $1",
            &[&content],
        )
        .await
        .unwrap();
    let kept: String = client
        .query_one(
            "SELECT (updated_at AT TIME ZONE 'UTC')::text FROM learning_content WHERE id = $1",
            &[&content],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "2020-01-01 00:00:00");
    let bumped: bool = client
        .query_one(
            "UPDATE learning_content SET title = 'new' WHERE id = $1
             RETURNING updated_at > '2020-01-01T00:00:00Z' AND updated_at <= now()",
            &[&content],
        )
        .await
        .unwrap()
        .get(0);
    assert!(bumped);
}

#[tokio::test]
async fn truncate_is_refused_because_the_feed_would_miss_it() {
    let client = fresh().await;
    content_tree(&client).await;
    let err = client.batch_execute("TRUNCATE rankings").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(db.hint().unwrap().contains("DELETE FROM rankings"));
    let left: i64 = client
        .query_one("SELECT count(*) FROM rankings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

/// The log rows a transaction wrote, as (table, row id, op).
async fn log_of(client: &Client, xid: &str) -> Vec<(String, i32, String)> {
    client
        .query(
            "SELECT table_name, row_id, op FROM change_log WHERE xid = $1::text::xid8 ORDER BY id",
            &[&xid],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Runs `sql` in one transaction and returns that transaction's xid8.
async fn in_transaction(client: &mut Client, sql: &str) -> String {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(sql).await.unwrap();
    let xid: String = tx
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    xid
}

#[tokio::test]
async fn every_write_to_the_four_tables_is_logged_with_its_transaction() {
    let mut client = fresh().await;
    let xid = in_transaction(
        &mut client,
        "INSERT INTO learning_content (id, title, content_type, native_text, translation, ipa)
         VALUES (1001, 't', 'phrase', 'น้ำ', 'water', 'náːm');
         INSERT INTO content_fragments (id, native_text, body_text, fragment_type, learning_content_id)
         VALUES (2001, 'น้ำ', 'water', 'word', 1001);
         INSERT INTO fragment_assets (id, fragment_id, asset_type, asset_data) VALUES (3001, 2001, 'audio', '\\x01');
         INSERT INTO rankings (id, fragment_id, asset_id, rank_score, assessed_by) VALUES (4001, 2001, 3001, 3, 'a');",
    )
    .await;
    let insert = |t: &str, id| (t.to_owned(), id, "insert".to_owned());
    assert_eq!(
        log_of(&client, &xid).await,
        [
            insert("learning_content", 1001),
            insert("content_fragments", 2001),
            insert("fragment_assets", 3001),
            insert("rankings", 4001),
        ]
    );

    let xid = in_transaction(
        &mut client,
        "UPDATE learning_content SET title = 'u' WHERE id = 1001;
         UPDATE content_fragments SET extra = 'x' WHERE id = 2001;
         UPDATE fragment_assets SET asset_metadata = '{\"voice\": \"th-TH\"}' WHERE id = 3001;
         UPDATE rankings SET rank_score = 4.25 WHERE id = 4001;",
    )
    .await;
    let update = |t: &str, id| (t.to_owned(), id, "update".to_owned());
    assert_eq!(
        log_of(&client, &xid).await,
        [
            update("learning_content", 1001),
            update("content_fragments", 2001),
            update("fragment_assets", 3001),
            update("rankings", 4001),
        ]
    );

    // One DELETE cascades: each table logs its own tombstone.
    let xid = in_transaction(&mut client, "DELETE FROM learning_content WHERE id = 1001").await;
    let mut logged = log_of(&client, &xid).await;
    logged.sort();
    let delete = |t: &str, id| (t.to_owned(), id, "delete".to_owned());
    let mut expected = vec![
        delete("learning_content", 1001),
        delete("content_fragments", 2001),
        delete("fragment_assets", 3001),
        delete("rankings", 4001),
    ];
    expected.sort();
    assert_eq!(logged, expected);
}

#[tokio::test]
async fn a_rolled_back_transaction_logs_nothing() {
    let mut client = fresh().await;
    let before: i64 = client
        .query_one("SELECT count(*) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
         VALUES ('t', 'phrase', 'ไฟ', 'fire', 'faj');
         UPDATE learning_content SET title = 'u';
         DELETE FROM learning_content;",
    )
    .await
    .unwrap();
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        inside >= before + 3,
        "the writes were logged inside the transaction"
    );
    tx.rollback().await.unwrap();
    let after: i64 = client
        .query_one("SELECT count(*) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before);
}

#[tokio::test]
async fn changing_a_primary_key_logs_a_tombstone_for_the_old_id() {
    let mut client = fresh().await;
    // Without fragments: their foreign key does not follow an id change.
    let content: i32 = client
        .query_one(
            "INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
             VALUES ('t', 'phrase', 'ลม', 'wind', 'lom') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let xid = in_transaction(
        &mut client,
        &format!("UPDATE learning_content SET id = 777777 WHERE id = {content}"),
    )
    .await;
    assert_eq!(
        log_of(&client, &xid).await,
        [
            ("learning_content".to_owned(), content, "delete".to_owned()),
            ("learning_content".to_owned(), 777777, "update".to_owned()),
        ]
    );
}

/// What the feed hands out: finished transactions only, in (xid, id) order.
async fn visible_rows(client: &Client) -> Vec<i32> {
    client
        .query(
            "SELECT row_id FROM change_log
             WHERE table_name = 'learning_content'
               AND xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY xid, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_transaction_still_open_holds_back_later_ones_until_it_commits() {
    let (_cluster, url) = db::private_cluster().await;
    let mut slow = db::connect(&url).await;
    let fast = db::connect(&url).await;
    let reader = db::connect(&url).await;
    let insert = |id: i32| {
        format!(
            "INSERT INTO learning_content (id, title, content_type, native_text, translation, ipa)
             VALUES ({id}, 't', 'phrase', 'ดิน', 'earth', 'din')"
        )
    };

    let slow_tx = slow.transaction().await.unwrap();
    slow_tx.batch_execute(&insert(1)).await.unwrap();
    fast.batch_execute(&insert(2)).await.unwrap();
    // Row 2 is committed but its xid is newer than the open transaction's:
    // handing it out now would let a cursor move past row 1 for good.
    assert_eq!(visible_rows(&reader).await, Vec::<i32>::new());

    slow_tx.commit().await.unwrap();
    assert_eq!(visible_rows(&reader).await, [1, 2]);
}

#[tokio::test]
async fn pruning_moves_the_horizon_past_what_it_removed() {
    let (_cluster, url) = db::private_cluster().await;
    let client = db::connect(&url).await;
    content_tree(&client).await;
    client
        .batch_execute("UPDATE change_log SET changed_at = now() - interval '40 days'")
        .await
        .unwrap();
    content_tree(&client).await;
    let total: i64 = client
        .query_one("SELECT count(*) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);
    let removed: i64 = client
        .query_one("SELECT prune_change_log(interval '30 days')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        removed, 4,
        "the first tree's four inserts are older than 30 days"
    );
    let row = client
        .query_one(
            "SELECT count(*),
                    bool_and((c.xid, c.id) > (h.xid, h.id)),
                    (SELECT pruned_at IS NOT NULL FROM change_log_horizon)
             FROM change_log c, change_log_horizon h",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), total - removed);
    assert!(
        row.get::<_, bool>(1),
        "everything left lies past the horizon"
    );
    assert!(row.get::<_, bool>(2));
    let again: i64 = client
        .query_one("SELECT prune_change_log(interval '30 days')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0);
}

/// Supabase's database advisor, lint 0011 `function_search_path_mutable`,
/// as its documentation states the rule: a function outside Supabase's own
/// and extensions' schemas, not created by an extension, whose settings do
/// not fix `search_path`. Such a function resolves names through the
/// caller's path. Answers `schema.name` of each function the advisor would
/// report.
async fn functions_with_mutable_search_path(
    client: &impl tokio_postgres::GenericClient,
) -> Vec<String> {
    client
        .query(
            "SELECT n.nspname || '.' || p.proname
               FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname <> ALL (ARRAY[
                        '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_config',
                        '_timescaledb_internal', 'auth', 'cron', 'extensions', 'graphql',
                        'graphql_public', 'information_schema', 'net', 'pgmq', 'pgroonga',
                        'pgsodium', 'pgsodium_masks', 'pgtle', 'pgbouncer', 'pg_catalog',
                        'realtime', 'repack', 'storage', 'supabase_functions',
                        'supabase_migrations', 'tiger', 'topology', 'vault'])
                AND NOT EXISTS (SELECT FROM pg_depend d
                                 WHERE d.objid = p.oid AND d.deptype = 'e')
                AND NOT EXISTS (SELECT FROM unnest(coalesce(p.proconfig, '{}')) AS setting
                                 WHERE setting LIKE 'search_path=%')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn no_function_of_the_schema_has_a_mutable_search_path() {
    let mut client = fresh().await;
    assert_eq!(
        functions_with_mutable_search_path(&client).await,
        Vec::<String>::new(),
        "Supabase's advisor (lint 0011) would warn about these: give each \
         `SET search_path = ''` and schema-qualified names"
    );
    // The rule does catch a function without its own path.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("CREATE FUNCTION public.unpinned() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        .await
        .unwrap();
    assert_eq!(
        functions_with_mutable_search_path(&tx).await,
        ["public.unpinned"]
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_triggers_write_the_schemas_own_log_whatever_the_callers_search_path() {
    let client = fresh().await;
    // A caller whose path puts a look-alike log table first.
    client
        .batch_execute(
            "CREATE SCHEMA decoy;
             CREATE TABLE decoy.change_log (LIKE public.change_log INCLUDING ALL);
             SET search_path = decoy, public",
        )
        .await
        .unwrap();
    let before: i64 = client
        .query_one("SELECT count(*) FROM public.change_log", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(
            "INSERT INTO public.learning_content (title, content_type, native_text, translation, ipa)
             VALUES ('หนึ่ง', 'word', 'หนึ่ง', 'one', 'nɯ̀ŋ')",
        )
        .await
        .unwrap();
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM public.change_log), (SELECT count(*) FROM decoy.change_log)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), before + 1);
    assert_eq!(counts.get::<_, i64>(1), 0);
}
