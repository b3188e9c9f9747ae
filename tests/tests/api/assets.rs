//! Assets: raw uploads, exact downloads, ranges, conditional GETs, limits.

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use http_body_util::BodyExt;

use crate::support::{Server, borrowed, send_to};
use crate::{App, MAX_ASSET_BYTES, app_variables, fields, problem, token};

/// Deterministic bytes that are not trivially compressible or repetitive.
fn audio_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

async fn upload(
    app: &App,
    fragment: i64,
    bytes: Vec<u8>,
    content_type: &str,
) -> crate::support::Reply {
    app.call(
        Some("authenticated"),
        "POST",
        &format!("/api/assets?fragment_id={fragment}&asset_type=audio&created_by=tts-engine"),
        &[("content-type", content_type)],
        Bytes::from(bytes),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_mebibytes_of_audio_come_back_byte_identical() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let bytes = audio_bytes(2 * 1024 * 1024);
    let sha = hex::encode(Sha256::digest(&bytes));
    let created = upload(&app, fragments[0], bytes.clone(), "audio/mpeg").await;
    assert_eq!(created.status, 201, "{}", created.text());
    let meta = created.json();
    let id = meta["id"].as_i64().unwrap();
    assert_eq!(meta["size"], bytes.len());
    assert_eq!(meta["sha256"], sha);
    assert_eq!(meta["content_type"], "audio/mpeg");
    assert_eq!(meta["created_by"], "tts-engine");
    assert_eq!(
        created.header("location"),
        Some(format!("/api/assets/{id}").as_str())
    );

    let data = app.get(&format!("/api/assets/{id}/data")).await;
    assert_eq!(data.status, 200);
    assert_eq!(data.header("content-type"), Some("audio/mpeg"));
    assert_eq!(
        data.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(data.header("etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(data.header("accept-ranges"), Some("bytes"));
    assert!(data.body == bytes, "the bytes differ");

    // Metadata never carries bytes; listings neither.
    let listed = app
        .get(&format!("/api/assets?fragment_id={}", fragments[0]))
        .await
        .json();
    assert_eq!(listed["items"][0]["sha256"], sha);
    assert!(!listed.to_string().contains("asset_data"));

    let head = app
        .call(
            Some("anon"),
            "HEAD",
            &format!("/api/assets/{id}/data"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(
        head.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(format!("\"{sha}\"").as_str()));

    let cached = app
        .call(
            Some("anon"),
            "GET",
            &format!("/api/assets/{id}/data"),
            &[("if-none-match", &format!("\"{sha}\""))],
            Bytes::new(),
        )
        .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
}

/// A cap on each instance's memory far below an asset's size, as Spin
/// deployments set (`spin up --max-instance-memory`), still serves the
/// asset whole: the component holds a slice of it at a time, never all.
#[tokio::test(flavor = "multi_thread")]
async fn an_asset_larger_than_an_instance_may_hold_is_served_whole() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let bytes = audio_bytes(48 << 20);
    let id = app.stored_asset(fragments[0], &bytes).await;

    const CAP: usize = 8 << 20;
    let capped = spin_host::runtime::Runtime::new()
        .unwrap()
        .with_max_instance_memory(CAP);
    let manifest = app_server::components::project_manifest_text_of(&["assets"]).unwrap();
    let mut variables = app_variables(&app.db_url, integration_tests::db::cluster().port());
    // Uploads past the cap, to show it is enforced.
    for (name, value) in &mut variables {
        if *name == "max_asset_bytes" {
            *value = (4 * CAP).to_string();
        }
    }
    let server = Server::start_text_on(&capped, &manifest, &borrowed(&variables)).await;
    let auth = format!("Bearer {}", token("anon"));
    let path = format!("/api/assets/{id}/data");
    let whole = send_to(
        server.addr,
        http::Method::GET,
        &path,
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert!(
        whole.body[..] == bytes[..],
        "the 48 MiB asset came back changed"
    );

    // The cap holds: an upload, which the component holds whole, of more
    // than the cap fails where one well below it is stored.
    let upload_path = format!("/api/assets?fragment_id={}&asset_type=audio", fragments[0]);
    let writer = format!("Bearer {}", token("authenticated"));
    let upload_headers = [
        ("authorization", writer.as_str()),
        ("content-type", "audio/wav"),
    ];
    let upload = |len: usize| {
        send_to(
            server.addr,
            http::Method::POST,
            &upload_path,
            &upload_headers,
            Bytes::from(audio_bytes(len)),
        )
    };
    let small = upload(1 << 20).await;
    assert_eq!(small.status, 201, "{}", small.text());
    assert_eq!(upload(2 * CAP).await.status, 500);
}

/// The bytes of an asset are sent as they are read, after the head. An
/// asset replaced while its body is on the way must not arrive as the old
/// one's start spliced onto the new one's end: the body ends short of its
/// Content-Length, which every client takes as a failed download.
#[tokio::test(flavor = "multi_thread")]
async fn an_asset_replaced_during_its_download_is_cut_short_not_spliced() {
    let app = App::start().await;
    let sql = app.sql().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    // Far more than the socket buffers and the host hold between a paused
    // reader and the component, so the replacement lands mid-body.
    let old = audio_bytes(48 << 20);
    let id = app.stored_asset(fragments[0], &old).await;

    let stream = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("/api/assets/{id}/data"))
        .header("host", app.server.addr.to_string())
        .header("authorization", format!("Bearer {}", token("anon")))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        old.len().to_string().as_str()
    );
    let mut body = response.into_body();
    let mut received = body
        .frame()
        .await
        .expect("a first slice")
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();

    sql.execute(
        "UPDATE fragment_assets SET asset_data = $2 WHERE id = $1",
        &[&id, &audio_bytes(1 << 20)],
    )
    .await
    .unwrap();
    let ended = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(err)) => break Some(err),
            None => break None,
        }
    };
    assert!(
        ended.is_some() && received.len() < old.len(),
        "the download ended {ended:?} after {} of {} bytes",
        received.len(),
        old.len()
    );
    assert!(
        received[..] == old[..received.len()],
        "what arrived is not the start of the asset whose head was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_are_served_as_rfc_9110_says() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let bytes = audio_bytes(100_000);
    let id = upload(&app, fragments[0], bytes.clone(), "audio/ogg")
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/assets/{id}/data");
    let len = bytes.len();
    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=50000-50009", 50_000, 50_009),
        ("bytes=99990-", 99_990, len - 1),
        ("bytes=-10", len - 10, len - 1),
        ("bytes=99999-200000", 99_999, len - 1),
    ] {
        let reply = app
            .call(
                Some("anon"),
                "GET",
                &path,
                &[("range", range)],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, 206, "{range}: {}", reply.text());
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes {first}-{last}/{len}").as_str()),
            "{range}"
        );
        assert_eq!(
            reply.header("content-length"),
            Some((last - first + 1).to_string().as_str())
        );
        assert!(reply.body == bytes[first..=last], "{range}: wrong bytes");
    }
    let unsatisfiable = app
        .call(
            Some("anon"),
            "GET",
            &path,
            &[("range", "bytes=100000-")],
            Bytes::new(),
        )
        .await;
    problem(&unsatisfiable, 416);
    assert_eq!(
        unsatisfiable.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // Several ranges or another unit: the whole asset, as RFC 9110 allows.
    for ignored in ["bytes=0-1,5-6", "pages=1-2", "bytes=garbage"] {
        let reply = app
            .call(
                Some("anon"),
                "GET",
                &path,
                &[("range", ignored)],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, 200, "{ignored}");
        assert_eq!(reply.body.len(), len);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_checked_before_anything_is_stored() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let f = fragments[0];
    problem(
        &upload(&app, f, vec![0; MAX_ASSET_BYTES + 1], "audio/mpeg").await,
        413,
    );
    let exactly = upload(&app, f, audio_bytes(MAX_ASSET_BYTES), "audio/mpeg").await;
    assert_eq!(exactly.status, 201, "the limit itself is allowed");
    let empty = upload(&app, f, Vec::new(), "audio/mpeg").await;
    assert_eq!(fields(&problem(&empty, 422)), ["body"]);
    problem(
        &upload(&app, f, vec![1, 2, 3], "not a media type").await,
        415,
    );
    let no_type = app
        .call(
            Some("authenticated"),
            "POST",
            &format!("/api/assets?fragment_id={f}&asset_type=audio"),
            &[],
            Bytes::from_static(b"x"),
        )
        .await;
    problem(&no_type, 415);
    let wrong_type = app
        .call(
            Some("authenticated"),
            "POST",
            &format!("/api/assets?fragment_id={f}&asset_type=text"),
            &[("content-type", "audio/mpeg")],
            Bytes::from_static(b"x"),
        )
        .await;
    assert_eq!(fields(&problem(&wrong_type, 422)), ["asset_type"]);
    let orphan = app
        .call(
            Some("authenticated"),
            "POST",
            "/api/assets?fragment_id=987654&asset_type=audio",
            &[("content-type", "audio/mpeg")],
            Bytes::from_static(b"x"),
        )
        .await;
    assert_eq!(fields(&problem(&orphan, 422)), ["fragment_id"]);
    let anon = app
        .call(
            Some("anon"),
            "POST",
            &format!("/api/assets?fragment_id={f}&asset_type=audio"),
            &[("content-type", "audio/mpeg")],
            Bytes::from_static(b"x"),
        )
        .await;
    problem(&anon, 403);
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM fragment_assets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "only the upload at the limit was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn asset_metadata_is_a_json_resource() {
    let app = App::start().await;
    let (_, fragments) = app.content_with_fragments(1).await;
    let id = upload(&app, fragments[0], audio_bytes(1000), "audio/wav")
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let patched = app
        .call(
            Some("authenticated"),
            "PATCH",
            &format!("/api/assets/{id}"),
            &[("content-type", "application/json")],
            Bytes::from(r#"{"asset_metadata": {"voice": "th-TH-Premwadee", "speed": 0.90}}"#),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        patched.json()["asset_metadata"]["speed"].to_string(),
        "0.90"
    );
    let read_only = app
        .write(
            "PATCH",
            &format!("/api/assets/{id}"),
            &json!({"sha256": "00"}),
        )
        .await;
    assert_eq!(fields(&problem(&read_only, 422)), ["sha256"]);
    // Uploads take their fields from the query, not from a JSON body.
    let json_create = app
        .write("POST", "/api/assets", &json!({"asset_type": "audio"}))
        .await;
    assert_eq!(fields(&problem(&json_create, 400)), ["asset_type"]);
    assert_eq!(
        app.call(
            Some("authenticated"),
            "DELETE",
            &format!("/api/assets/{id}"),
            &[],
            Bytes::new()
        )
        .await
        .status,
        204
    );
    problem(&app.get(&format!("/api/assets/{id}/data")).await, 404);
}
