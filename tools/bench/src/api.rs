//! Rows 1–4: the HTTP API next to PostgreSQL driven directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api_core::crud::{Params, insert_sql};
use api_core::schema::{CONTENT, FRAGMENTS, Mode, Resource};
use bytes::Bytes;
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::Sizes;
use crate::load::{Run, drive};
use crate::pgbench::{Pgbench, PgbenchRun};
use crate::report::{Row, Target};
use crate::stack::{Serving, Stack};
use crate::stats::{Figure, Latencies, median};

/// No single run may take longer; a stuck run fails the benchmark.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// `rows` rows over the four tables (1 content : 3 fragments : 1.5 assets
/// : 1.5 rankings), written straight into the database; returns the
/// number of contents (ids 1..=n).
pub async fn seed(client: &tokio_postgres::Client, rows: usize) -> Result<i64> {
    let contents = (rows / 7).max(1);
    client
        .batch_execute(&format!(
            "INSERT INTO learning_content (title, content_type, language, native_text, translation, ipa,
                                           difficulty_level, tags, content_metadata)
             SELECT 'บทที่ ' || g, (ARRAY['phrase', 'dialogue', 'word'])[1 + g % 3], 'thai',
                    'สวัสดีครับ ' || g || ' ขอบคุณมาก', 'hello ' || g, 'sa.wàt.diː kʰráp',
                    1 + g % 5, jsonb_build_array('tag' || g % 7), jsonb_build_object('n', g, 'voice', 'th-TH')
             FROM generate_series(1, {contents}) g;
             INSERT INTO content_fragments (learning_content_id, native_text, body_text, fragment_type)
             SELECT c.id, 'ประโยค ' || c.id || '-' || k, 'sentence ' || k, 'sentence'
             FROM learning_content c, generate_series(1, 3) k;
             INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, content_type, created_by)
             SELECT f.id, 'audio', convert_to('audio bytes of ' || f.id, 'UTF8'), 'audio/mpeg', 'tts'
             FROM content_fragments f WHERE f.id % 2 = 0;
             INSERT INTO rankings (fragment_id, asset_id, rank_score, assessed_by)
             SELECT a.fragment_id, a.id, ((a.id % 501) / 100.0)::numeric(3, 2), 'nok'
             FROM fragment_assets a;
             ANALYZE;"
        ))
        .await
        .context("seeding the database")?;
    Ok(contents as i64)
}

/// A statement with its `$n` placeholders replaced by the literals of
/// `params`, for a pgbench script.
fn inline(sql: &str, params: &[ParameterValue]) -> Result<String> {
    let mut sql = sql.to_owned();
    // Highest first, so that `$1` never eats the start of `$12`.
    for (i, value) in params.iter().enumerate().rev() {
        let literal = match value {
            ParameterValue::Str(s) => format!("'{}'", s.replace('\'', "''")),
            ParameterValue::Int32(n) => n.to_string(),
            ParameterValue::Int64(n) => n.to_string(),
            ParameterValue::DbNull => "NULL".to_owned(),
            other => anyhow::bail!("no literal for {other:?}"),
        };
        sql = sql.replace(&format!("${}", i + 1), &literal);
    }
    Ok(sql)
}

/// The INSERT the API runs for `POST /api/<resource>` with `body`.
fn create_sql(resource: &Resource, body: &Value) -> Result<String> {
    let object = body.as_object().context("an object")?;
    let assignments = resource
        .input(object, Mode::Create)
        .map_err(|p| anyhow::anyhow!("invalid body: {}", p.status))?;
    let mut params = Params::default();
    let sql = format!(
        "{} RETURNING {}",
        insert_sql(resource.table, &assignments, &mut params, false),
        resource.select_list()
    );
    inline(&sql, &params.values)
}

fn content_body(n: usize) -> Value {
    json!({
        "title": format!("บทเรียน {n}"), "content_type": "phrase", "language": "thai",
        "native_text": "ไปตลาดน้ำกันไหม", "translation": "shall we go to the floating market?",
        "ipa": "paj ta.làːt náːm kan máj", "difficulty_level": 2,
        "tags": ["travel", "question"], "content_metadata": {"source": "bench"}
    })
}

fn fragment_body(content_id: i64, k: usize) -> Value {
    json!({
        "learning_content_id": content_id, "native_text": format!("ตลาดน้ำ {k}"),
        "body_text": format!("floating market {k}"), "ipa": "ta.làːt náːm", "fragment_type": "word"
    })
}

pub const FRAGMENTS_PER_CONTENT: usize = 5;

/// pgbench's script for row 1: the SELECT `GET /api/content/{id}` runs.
pub fn read_script(contents: i64) -> String {
    format!(
        "\\set id random(1, {contents})\nSELECT {} FROM {} AS t WHERE t.id = :id;\n",
        CONTENT.select_list(),
        CONTENT.table
    )
}

/// pgbench's script for row 4: the INSERTs of the six POSTs.
pub fn write_script() -> Result<String> {
    // A placeholder id that no content has, replaced by the one \gset took.
    const PARENT: i64 = 2_000_000_007;
    let mut script = format!("{} \\gset\n", create_sql(&CONTENT, &content_body(0))?);
    for k in 0..FRAGMENTS_PER_CONTENT {
        let sql = create_sql(&FRAGMENTS, &fragment_body(PARENT, k))?;
        script.push_str(&sql.replace(&PARENT.to_string(), ":id"));
        script.push_str(";\n");
    }
    Ok(script)
}

/// Our load runs beside pgbench's over the repetitions: rates and latencies.
struct AgainstPgbench {
    ours: Figure,
    base: Figure,
    ours_latency: Latencies,
    base_latency: Latencies,
}

impl AgainstPgbench {
    fn new(ours: Figure, base: Figure) -> Self {
        AgainstPgbench {
            ours,
            base,
            ours_latency: Latencies::default(),
            base_latency: Latencies::default(),
        }
    }

    /// Keeps repetition `rep` of both sides; repetition 0 is the warm-up.
    fn record(&mut self, rep: usize, run: &Run, pg: &PgbenchRun) {
        if rep == 0 {
            return;
        }
        self.ours.runs.push(run.per_second());
        self.ours_latency.add(&run.latencies_ms);
        self.base.runs.push(pg.tps);
        self.base_latency.add(&pg.latencies_ms);
    }

    fn finish(mut self) -> (Figure, Figure) {
        self.ours_latency.fill(&mut self.ours);
        self.base_latency.fill(&mut self.base);
        (self.ours, self.base)
    }
}

/// `n` reads of `GET /api/content/{id}` over `clients` connections, ids
/// spread over the `contents` seeded.
async fn read_run(
    addr: SocketAddr,
    token: &str,
    clients: usize,
    n: usize,
    contents: i64,
) -> Result<Run> {
    drive(addr, token, clients, n, RUN_LIMIT, async |conn, i| {
        let id = 1 + (i as i64 * 7919) % contents;
        Ok(conn.get(&format!("/api/content/{id}")).await?.len() as u64)
    })
    .await
}

/// Row 1: `GET /api/content/{id}` against pgbench running the SELECT the
/// API runs, at each concurrency.
pub async fn reads(
    stack: &Stack,
    on: &Serving,
    db: &str,
    contents: i64,
    sizes: &Sizes,
) -> Result<Vec<Row>> {
    let token = stack.token("anon")?;
    let pgbench = Pgbench {
        bin_dir: stack.bin_dir(),
        port: stack.cluster.port(),
        db,
    };
    let script = read_script(contents);
    let mut rows = Vec::new();
    for (key, clients) in [("1a", 8), ("1b", 32)] {
        let mut pair = AgainstPgbench::new(
            Figure::named("the content component, keep-alive HTTP/1.1"),
            Figure::named("pgbench -M prepared, same SELECT"),
        );
        for rep in 0..=sizes.reps {
            let run = read_run(on.addr(), &token, clients, sizes.reads, contents).await?;
            let pg = pgbench.run(&script, clients, sizes.reads, RUN_LIMIT)?;
            pair.record(rep, &run, &pg);
        }
        let (ours, base) = pair.finish();
        rows.push(Row::new(
            key,
            format!(
                "API reads `GET /api/content/{{id}}`, {clients} connections, {} requests",
                sizes.reads
            ),
            "req/s",
            true,
            ours,
            base,
            Some(Target::SpeedAtLeast(0.5)),
        ));
    }
    Ok(rows)
}

/// Rows 1c and 1d: `GET /api/content/{id}` next to a trivial component
/// (the test probe's `/ping`) served by the same host at the same
/// concurrency. Every request gets a fresh instance, in Spin as in the
/// bundled host: the trivial component is the floor that model sets for
/// any handler, and the ratio is what our handler adds above it.
pub async fn floor(
    stack: &Stack,
    on: &Serving,
    probe: &Serving,
    contents: i64,
    sizes: &Sizes,
) -> Result<Vec<Row>> {
    let token = stack.token("anon")?;
    let mut rows = Vec::new();
    for (key, clients) in [("1c", 8), ("1d", 32)] {
        let (mut ours, mut base) = (
            Figure::named("the content component"),
            Figure::named("a trivial component answering `pong`"),
        );
        let (mut ours_latency, mut base_latency) = (Latencies::default(), Latencies::default());
        // The same reads authenticated by the publishable API key (one
        // SHA-256) instead of an ES256 token: what verifying the token costs.
        let mut with_key = Vec::new();
        for rep in 0..=sizes.reps {
            let run = read_run(on.addr(), &token, clients, sizes.reads, contents).await?;
            let keyed = read_run(
                on.addr(),
                stack.publishable_key(),
                clients,
                sizes.reads,
                contents,
            )
            .await?;
            let ping = drive(
                probe.addr(),
                &token,
                clients,
                sizes.reads,
                RUN_LIMIT,
                async |conn, _| {
                    let body = conn.get("/ping").await?;
                    anyhow::ensure!(&body[..] == b"pong", "the probe did not answer pong");
                    Ok(body.len() as u64)
                },
            )
            .await?;
            if rep > 0 {
                with_key.push(keyed.per_second());
                ours.runs.push(run.per_second());
                ours_latency.add(&run.latencies_ms);
                base.runs.push(ping.per_second());
                base_latency.add(&ping.latencies_ms);
            }
        }
        ours_latency.fill(&mut ours);
        base_latency.fill(&mut base);
        let base_median = base.median();
        let row = Row::new(
            key,
            format!(
                "API reads against the floor: `GET /api/content/{{id}}` vs a trivial component, {clients} connections, {} requests",
                sizes.reads
            ),
            "req/s",
            true,
            ours,
            base,
            Some(Target::SpeedAtLeast(0.8)),
        );
        let keyed = median(&with_key);
        rows.push(row.note(format!(
            "with the publishable API key instead of an ES256 token: {keyed:.0} req/s, {:.2}× the floor",
            keyed / base_median
        )));
    }
    Ok(rows)
}

/// Rows 2 and 3: one 2 MiB asset down and up through the API, next to the
/// same bytes read and written with one prepared statement.
pub async fn assets(stack: &Stack, on: &Serving, db: &str, sizes: &Sizes) -> Result<Vec<Row>> {
    let token = stack.token("authenticated")?;
    let pg = stack.connect(db).await?;
    let mut rng = fastrand::Rng::with_seed(2);
    let mut data = vec![0u8; sizes.asset_bytes];
    rng.fill(&mut data);
    let data = Bytes::from(data);
    let fragment: i32 = pg
        .query_one("SELECT min(id) FROM content_fragments", &[])
        .await?
        .get(0);
    let upload_path =
        format!("/api/assets?fragment_id={fragment}&asset_type=audio&created_by=bench");
    let insert = pg
        .prepare(
            "INSERT INTO fragment_assets (fragment_id, asset_type, asset_data, content_type, created_by)
             VALUES ($1, 'audio', $2, 'audio/mpeg', 'bench') RETURNING id",
        )
        .await?;
    let select = pg
        .prepare("SELECT asset_data FROM fragment_assets WHERE id = $1")
        .await?;
    let asset: i32 = pg
        .query_one(&insert, &[&fragment, &&data[..]])
        .await?
        .get(0);

    let mut down = (
        Figure::named("GET /api/assets/{id}/data, 1 connection"),
        Figure::named("SELECT asset_data, prepared, tokio-postgres"),
    );
    let mut up = (
        Figure::named("POST /api/assets (raw body), 1 connection"),
        Figure::named("INSERT … asset_data, prepared, tokio-postgres"),
    );
    let download = async |credential: &str| {
        drive(
            on.addr(),
            credential,
            1,
            sizes.asset_runs,
            RUN_LIMIT,
            async |conn, _| {
                let body = conn.get(&format!("/api/assets/{asset}/data")).await?;
                anyhow::ensure!(body.len() == data.len(), "short download");
                Ok(body.len() as u64)
            },
        )
        .await
    };
    let mut down_keyed = Vec::new();
    for rep in 0..=sizes.reps {
        let get = download(&token).await?;
        // The same downloads with the publishable API key (one SHA-256)
        // instead of an ES256 token: what verifying the token costs here.
        let keyed = download(stack.publishable_key()).await?;
        let started = Instant::now();
        let mut read = 0;
        for _ in 0..sizes.asset_runs {
            let row = pg.query_one(&select, &[&asset]).await?;
            read += row.get::<_, &[u8]>(0).len();
        }
        let direct_down = read as f64 / 1e6 / started.elapsed().as_secs_f64();

        let post = drive(
            on.addr(),
            &token,
            1,
            sizes.asset_runs,
            RUN_LIMIT,
            async |conn, _| {
                conn.send(
                    http::Method::POST,
                    &upload_path,
                    Some("audio/mpeg"),
                    data.clone(),
                    201,
                )
                .await?;
                Ok(data.len() as u64)
            },
        )
        .await?;
        let started = Instant::now();
        for _ in 0..sizes.asset_runs {
            pg.query_one(&insert, &[&fragment, &&data[..]]).await?;
        }
        let direct_up =
            (data.len() * sizes.asset_runs) as f64 / 1e6 / started.elapsed().as_secs_f64();
        if rep > 0 {
            down_keyed.push(keyed.mb_per_second());
            down.0.runs.push(get.mb_per_second());
            down.1.runs.push(direct_down);
            up.0.runs.push(post.mb_per_second());
            up.1.runs.push(direct_up);
        }
        // Keep the table at one asset's worth so that every repetition
        // writes into the same state.
        pg.execute(
            "DELETE FROM fragment_assets WHERE created_by = 'bench' AND id <> $1",
            &[&asset],
        )
        .await?;
    }
    let mib = sizes.asset_bytes as f64 / (1 << 20) as f64;
    let direct = down.1.median();
    let keyed = median(&down_keyed);
    Ok(vec![
        Row::new(
            "2",
            format!("Asset download, {mib:.0} MiB × {}", sizes.asset_runs),
            "MB/s",
            true,
            down.0,
            down.1,
            Some(Target::SpeedAtLeast(0.6)),
        )
        .note(format!(
            "with the publishable API key instead of an ES256 token: {keyed:.0} MB/s, {:.2}× the direct SELECT",
            keyed / direct
        )),
        Row::new(
            "3",
            format!("Asset upload, {mib:.0} MiB × {}", sizes.asset_runs),
            "MB/s",
            true,
            up.0,
            up.1,
            None,
        ),
    ])
}

/// Row 4: a content with five fragments, created through the API (six
/// POSTs) and by pgbench running the same six INSERTs.
pub async fn writes(stack: &Stack, on: &Serving, db: &str, sizes: &Sizes) -> Result<Row> {
    let token = stack.token("authenticated")?;
    let pgbench = Pgbench {
        bin_dir: stack.bin_dir(),
        port: stack.cluster.port(),
        db,
    };
    let script = write_script()?;
    let clients = sizes.write_connections;
    let mut pair = AgainstPgbench::new(
        Figure::named(format!("6 POSTs per content, {clients} connections")),
        Figure::named(format!(
            "pgbench -M prepared, same 6 INSERTs, {clients} connections"
        )),
    );
    for rep in 0..=sizes.reps {
        let run = drive(
            on.addr(),
            &token,
            clients,
            sizes.writes,
            RUN_LIMIT,
            async |conn, i| {
                let body = conn.post_json("/api/content", &content_body(i)).await?;
                let created: Value = serde_json::from_slice(&body)?;
                let id = created["id"].as_i64().context("the new content's id")?;
                for k in 0..FRAGMENTS_PER_CONTENT {
                    conn.post_json("/api/fragments", &fragment_body(id, k))
                        .await?;
                }
                Ok(0)
            },
        )
        .await?;
        let pg = pgbench.run(&script, clients, sizes.writes, RUN_LIMIT)?;
        pair.record(rep, &run, &pg);
    }
    let (ours, base) = pair.finish();
    Ok(Row::new(
        "4",
        format!(
            "Writes: a content with {FRAGMENTS_PER_CONTENT} fragments, {} per run",
            sizes.writes
        ),
        "contents/s",
        true,
        ours,
        base,
        None,
    ))
}
