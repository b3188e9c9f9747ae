use super::*;

#[test]
fn a_snapshot_then_log_pages_mirror_upserts_and_tombstones() {
    let mut store = Store::open_in_memory().unwrap();
    let p1 = page(
        vec![content(1, "a"), content(2, "b")],
        "c1",
        true,
        "snapshot",
    );
    let p2 = page(
        vec![fragment(1, 1), asset(1), ranking(1, "4.50")],
        "c2",
        false,
        "snapshot",
    );
    let a1 = apply(&mut store, None, true, &p1).unwrap();
    assert_eq!(a1.upserts, 2);
    assert!(!a1.snapshot_completed);
    assert_eq!(store.sync_state().unwrap().phase, SyncPhase::Snapshot);
    let a2 = apply(&mut store, Some("c1"), false, &p2).unwrap();
    assert!(a2.snapshot_completed);
    let state = store.sync_state().unwrap();
    assert_eq!(state.phase, SyncPhase::Log);
    assert_eq!(state.cursor.as_deref(), Some("c2"));
    assert!(state.caught_up_at.is_some());

    let (tags, meta, score, hundredths): (String, String, String, i64) = store
        .conn()
        .query_row(
            "SELECT c.tags, c.content_metadata, r.rank_score, r.rank_hundredths
             FROM learning_content c, rankings r WHERE c.id = 1 AND r.id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(tags, r#"["greeting"]"#);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&meta).unwrap(),
        json!({"a": null, "b": 1.5})
    );
    assert_eq!((score.as_str(), hundredths), ("4.50", 450));

    let p3 = page(
        vec![
            content(2, "b2"),
            delete("learning_content", 1),
            ranking(1, "3"),
        ],
        "c3",
        false,
        "log",
    );
    let a3 = apply(&mut store, Some("c2"), false, &p3).unwrap();
    assert_eq!((a3.upserts, a3.deletes, a3.swept), (2, 1, 0));
    // The content counts as a text to embed, the ranking does not.
    assert_eq!(a3.text_upserts, 1);
    assert_eq!(ids(&store, "learning_content"), vec![2]);
    let title: String = store
        .conn()
        .query_row("SELECT title FROM learning_content WHERE id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(title, "b2");
}

#[test]
fn a_new_snapshot_sweeps_rows_it_did_not_deliver() {
    let mut store = Store::open_in_memory().unwrap();
    let first = page(
        vec![
            content(1, "a"),
            content(2, "b"),
            fragment(1, 1),
            fragment(2, 2),
        ],
        "c1",
        false,
        "snapshot",
    );
    apply(&mut store, None, true, &first).unwrap();
    // A re-snapshot (after a 410) in which content 2 and fragment 2 are
    // gone; it ends with a log page.
    let again = page(
        vec![content(1, "a"), fragment(1, 1)],
        "s1",
        true,
        "snapshot",
    );
    let a = apply(&mut store, Some("c1"), true, &again).unwrap();
    assert_eq!(a.swept, 0);
    // Still in the snapshot: nothing is swept yet.
    assert_eq!(ids(&store, "learning_content"), vec![1, 2]);
    let end = page(vec![], "l1", false, "log");
    let a = apply(&mut store, Some("s1"), false, &end).unwrap();
    assert_eq!(a.swept, 2);
    assert!(a.snapshot_completed);
    assert_eq!(ids(&store, "learning_content"), vec![1]);
    assert_eq!(ids(&store, "content_fragments"), vec![1]);
    assert_eq!(store.sync_state().unwrap().snapshot_gen, 2);
}

#[test]
fn a_page_is_all_or_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    apply(
        &mut store,
        None,
        true,
        &page(vec![content(1, "a")], "c1", false, "snapshot"),
    )
    .unwrap();
    let mut broken = fragment(9, 1);
    broken["row"]["native_text"] = json!(42);
    let bad = page(vec![content(2, "b"), broken], "c2", false, "log");
    let err = apply(&mut store, Some("c1"), false, &bad).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadRow {
                table: "content_fragments",
                id: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(ids(&store, "learning_content"), vec![1]);
    assert_eq!(store.sync_state().unwrap().cursor.as_deref(), Some("c1"));
}

#[test]
fn a_page_from_a_stale_cursor_is_refused() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(vec![content(1, "a")], "c1", false, "snapshot");
    apply(&mut store, None, true, &p).unwrap();
    let err = apply(&mut store, None, false, &p).unwrap_err();
    assert!(matches!(err, StoreError::CursorMoved), "{err}");
}

#[test]
fn unknown_tables_are_skipped_not_fatal() {
    let mut store = Store::open_in_memory().unwrap();
    let p = page(
        vec![
            json!({"table": "decks", "op": "upsert", "id": 1, "row": {}}),
            content(1, "a"),
        ],
        "c1",
        false,
        "snapshot",
    );
    let a = apply(&mut store, None, true, &p).unwrap();
    assert_eq!((a.upserts, a.skipped), (1, 1));
}

#[test]
fn a_column_the_model_gained_is_added_and_the_next_pull_reads_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    {
        let mut store = Store::open(&path).unwrap();
        let p = page(vec![fragment(1, 1)], "c1", false, "log");
        apply(&mut store, None, true, &p).unwrap();
        // A file written before `extra` was part of the model.
        store
            .conn()
            .execute_batch("ALTER TABLE content_fragments DROP COLUMN extra")
            .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    let columns: Vec<String> = store
        .conn()
        .prepare("SELECT name FROM pragma_table_info('content_fragments')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(columns.contains(&"extra".to_owned()), "{columns:?}");
    assert_eq!(ids(&store, "content_fragments"), vec![1]);
    let state = store.sync_state().unwrap();
    assert_eq!(
        state.cursor, None,
        "the mirror must be read again to fill the column"
    );

    let mut with_extra = fragment(1, 1);
    with_extra["row"]["extra"] = json!("a note");
    let p = page(vec![with_extra], "c2", false, "log");
    apply(&mut store, None, true, &p).unwrap();
    let extra: String = store
        .conn()
        .query_row(
            "SELECT extra FROM content_fragments WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(extra, "a note");

    // Opening an up-to-date file again changes nothing.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.sync_state().unwrap().cursor.as_deref(), Some("c2"));
}

#[test]
fn rows_are_checked_against_the_model() {
    let mut store = Store::open_in_memory().unwrap();
    let mut missing = content(1, "a");
    missing["row"].as_object_mut().unwrap().remove("ipa");
    let mut null = content(2, "b");
    null["row"]["title"] = json!(null);
    let mut score = ranking(3, "4.5");
    score["row"]["rank_score"] = json!("four");
    for (change, field) in [(missing, "ipa"), (null, "title"), (score, "rank_score")] {
        let err = apply(
            &mut store,
            None,
            true,
            &page(vec![change], "c1", false, "snapshot"),
        )
        .unwrap_err();
        match err {
            StoreError::BadRow { reason, .. } => assert!(reason.contains(field), "{reason}"),
            other => panic!("{other}"),
        }
    }
    // A member the model does not know (a newer server) is ignored; a
    // nullable member may be absent.
    let mut newer = content(4, "d");
    newer["row"]["audio_voice"] = json!("th-TH-Premwadee");
    newer["row"].as_object_mut().unwrap().remove("tags");
    let a = apply(
        &mut store,
        None,
        true,
        &page(vec![newer, ranking(5, "4.35")], "c1", false, "snapshot"),
    )
    .unwrap();
    assert_eq!(a.upserts, 2);
    let (text, hundredths): (String, i64) = store
        .conn()
        .query_row(
            "SELECT rank_score, rank_hundredths FROM rankings WHERE id = 5",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((text.as_str(), hundredths), ("4.35", 435));
}
