//! Concurrent writers against the change feed: eight writers — six through
//! the API, two with long transactions in SQL, some rolled back — create,
//! update and delete across the four tables while the agent pulls over and
//! over. After a last pull the mirror equals the server row by row.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::{Agent, Stack, assert_mirror_equals_server, rt};

const API_WRITERS: usize = 6;
const SQL_WRITERS: usize = 2;
const OPS_PER_WRITER: usize = 100;

/// Ids a writer may pick for updates, deletes and children. Rows may be
/// gone by the time they are used: 404 and 422 are expected outcomes then.
#[derive(Default)]
struct Known {
    contents: Mutex<Vec<i64>>,
    fragments: Mutex<Vec<i64>>,
    assets: Mutex<Vec<i64>>,
    rankings: Mutex<Vec<i64>>,
}

fn pick(rng: &mut fastrand::Rng, ids: &Mutex<Vec<i64>>) -> Option<i64> {
    let ids = ids.lock().unwrap();
    (!ids.is_empty()).then(|| ids[rng.usize(..ids.len())])
}

fn api_writer(stack: &Stack, known: &Known, seed: u64, ops: &AtomicUsize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for n in 0..OPS_PER_WRITER {
        let roll = rng.usize(..100);
        let (status, body, list): (u16, serde_json::Value, Option<&Mutex<Vec<i64>>>) = match roll {
            0..30 => {
                let (s, b) = stack.call("POST", "/api/content", Some(json!({
                    "title": format!("w{seed}-{n}"), "content_type": "phrase", "native_text": "น้ำตก",
                    "translation": "waterfall", "ipa": "náːm.tòk", "tags": ["w"]})));
                (s, b, Some(&known.contents))
            }
            30..50 => match pick(&mut rng, &known.contents) {
                Some(c) => {
                    let (s, b) = stack.call("POST", "/api/fragments", Some(json!({
                        "learning_content_id": c, "native_text": "ตก", "body_text": "fall", "fragment_type": "word"})));
                    (s, b, Some(&known.fragments))
                }
                None => continue,
            },
            50..60 => match pick(&mut rng, &known.fragments) {
                Some(f) => {
                    let (s, b) = stack.call("POST", "/api/rankings", Some(json!({
                        "fragment_id": f, "rank_score": format!("{}.{:02}", rng.u32(0..5), rng.u32(0..100)), "assessed_by": "w"})));
                    (s, b, Some(&known.rankings))
                }
                None => continue,
            },
            60..75 => {
                let (path, body) = if rng.bool() {
                    (
                        pick(&mut rng, &known.contents).map(|id| format!("/api/content/{id}")),
                        json!({"title": format!("edited {n}")}),
                    )
                } else {
                    (
                        pick(&mut rng, &known.fragments).map(|id| format!("/api/fragments/{id}")),
                        json!({"extra": format!("x{n}")}),
                    )
                };
                let Some(path) = path else { continue };
                let (s, b) = stack.call("PATCH", &path, Some(body));
                (s, b, None)
            }
            _ => {
                let target = match rng.usize(..4) {
                    0 => pick(&mut rng, &known.contents).map(|id| format!("/api/content/{id}")),
                    1 => pick(&mut rng, &known.fragments).map(|id| format!("/api/fragments/{id}")),
                    2 => pick(&mut rng, &known.assets).map(|id| format!("/api/assets/{id}")),
                    _ => pick(&mut rng, &known.rankings).map(|id| format!("/api/rankings/{id}")),
                };
                let Some(path) = target else { continue };
                let (s, b) = stack.call("DELETE", &path, None);
                (s, b, None)
            }
        };
        assert!(
            matches!(status, 200 | 201 | 204 | 404 | 422 | 503),
            "writer {seed}: unexpected {status}: {body}"
        );
        if status == 201
            && let (Some(list), Some(id)) = (list, body["id"].as_i64())
        {
            list.lock().unwrap().push(id);
        }
        if roll.is_multiple_of(10)
            && let Some(f) = pick(&mut rng, &known.fragments)
        {
            // Assets through the byte endpoint; a fragment deleted meanwhile is fine.
            let (s, body) = stack.try_upload(f, format!("audio {seed} {n}").as_bytes());
            assert!(matches!(s, 201 | 422 | 503), "upload: {s} {body}");
            if let Some(id) = body["id"].as_i64() {
                known.assets.lock().unwrap().push(id);
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

fn sql_writer(stack: &Stack, seed: u64, ops: &AtomicUsize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut client = rt().block_on(async {
        let (client, connection) = tokio_postgres::connect(&stack.db_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    });
    for n in 0..OPS_PER_WRITER {
        let commit = rng.usize(..5) != 0;
        let hold = Duration::from_millis(rng.u64(5..120));
        let result: Result<(), tokio_postgres::Error> = rt().block_on(async {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!(
                "WITH c AS (INSERT INTO learning_content (title, content_type, native_text, translation, ipa)
                            VALUES ('sql {seed}-{n}', 'story', 'ภูเขา', 'mountain', 'pʰuː.kʰǎw') RETURNING id)
                 INSERT INTO content_fragments (learning_content_id, native_text, body_text, fragment_type)
                 SELECT id, 'ภู', 'mount', 'word' FROM c;
                 UPDATE learning_content SET translation = 'mountain {n}'
                  WHERE id IN (SELECT id FROM learning_content ORDER BY random() LIMIT 2);"
            ))
            .await?;
            // A long transaction: others commit meanwhile with newer xids.
            tokio::time::sleep(hold).await;
            if rng.usize(..3) == 0 {
                tx.batch_execute(
                    "DELETE FROM rankings WHERE id IN (SELECT id FROM rankings ORDER BY random() LIMIT 1)",
                )
                .await?;
            }
            if commit { tx.commit().await } else { tx.rollback().await }
        });
        if let Err(e) = result {
            // Deadlocks and serialisation failures are outcomes of racing
            // writers, not bugs; anything else is.
            let code = e
                .as_db_error()
                .map(|d| d.code().code().to_owned())
                .unwrap_or_default();
            assert!(
                matches!(code.as_str(), "40P01" | "40001"),
                "sql writer {seed}: {e}"
            );
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn the_mirror_converges_under_concurrent_writers() {
    let seeds: Vec<u64> = match std::env::var("CONCURRENCY_SEEDS") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => {
            let base = fastrand::u64(..1_000_000);
            vec![base, base + 1, base + 2]
        }
    };
    let mut total_ops = 0;
    for seed in &seeds {
        println!("concurrency seed {seed} (rerun with CONCURRENCY_SEEDS={seed})");
        let stack = Stack::start();
        let agent = Agent::new(&stack);
        let known = Known::default();
        let ops = AtomicUsize::new(0);
        let writing = AtomicBool::new(true);
        let mut pulls = 0;
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..API_WRITERS)
                .map(|w| {
                    let (stack, known, ops) = (&stack, &known, &ops);
                    scope.spawn(move || api_writer(stack, known, seed * 100 + w as u64, ops))
                })
                .chain((0..SQL_WRITERS).map(|w| {
                    let (stack, ops) = (&stack, &ops);
                    scope.spawn(move || sql_writer(stack, seed * 100 + 50 + w as u64, ops))
                }))
                .collect();
            let puller = scope.spawn(|| {
                let mut n = 0;
                while writing.load(Ordering::Relaxed) {
                    let out = agent.run(&["pull"]);
                    assert!(
                        out.status.success(),
                        "pull failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    n += 1;
                }
                n
            });
            for w in writers {
                w.join().unwrap();
            }
            writing.store(false, Ordering::Relaxed);
            pulls = puller.join().unwrap();
        });
        let last = agent.run(&["pull"]);
        assert!(
            last.status.success(),
            "{}",
            String::from_utf8_lossy(&last.stderr)
        );
        assert_mirror_equals_server(&stack, &agent);
        let ops = ops.load(Ordering::Relaxed);
        println!(
            "seed {seed}: {ops} operations, {pulls} pulls while writing, mirror equals server"
        );
        total_ops += ops;
    }
    assert!(total_ops >= 2000, "only {total_ops} operations");
}
