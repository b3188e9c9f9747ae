//! Asset bytes: upload as the raw request body, download with ETag,
//! conditional GET and single byte ranges. Metadata is the plain resource.

use serde_json::json;
use spin_sdk::http::Response;
use spin_sdk::pg4::ParameterValue;

use crate::crud::{self, Params};
use crate::db::Db;
use crate::doc::{self, Doc};
use crate::problem::Problem;
use crate::request::{self, Query};
use crate::respond;
use crate::router::{Ctx, Handled};
use crate::schema::{ASSET_TYPES, ASSETS, Assignment, Mode, Resource};
use crate::send::Streamed;
use crate::value;

/// `POST /api/assets?fragment_id=&asset_type=&created_by=`: the body is the
/// asset; its Content-Type is kept. Empty bodies are refused: an asset
/// without bytes cannot be played or shown.
pub fn upload(ctx: &Ctx) -> Handled {
    store(ctx, None)
}

/// `PUT /api/import/assets/:id?...`: the same, keeping the id (insert or
/// replace), for the migration. Also takes `created_at` and `asset_metadata`.
pub fn import(ctx: &Ctx) -> Handled {
    store(ctx, Some(ctx.id("id")?))
}

fn store(ctx: &Ctx, id: Option<i32>) -> Handled {
    let mut known = vec!["fragment_id", "asset_type", "created_by"];
    if id.is_some() {
        known.extend(["asset_metadata", "created_at"]);
    }
    let query = Query::parse(ctx.req, &known)?;
    // Its size was enforced while it was read (router::serve).
    if ctx.body().is_empty() {
        return Err(Problem::invalid(
            "body",
            "is empty; an asset needs its bytes",
        ));
    }
    let content_type = media_type(ctx)?;

    // The query parameters are the asset's fields: validate them as JSON
    // members so the rules are the resource's own.
    let mut fields = serde_json::Map::new();
    if let Some(fragment) = query.get("fragment_id") {
        let n = fragment
            .parse::<i64>()
            .map_err(|_| Problem::bad_request("fragment_id", "must be an integer"))?;
        fields.insert("fragment_id".into(), n.into());
    }
    let asset_type = query.get("asset_type").ok_or_else(|| {
        Problem::bad_request(
            "asset_type",
            format!("is required: one of {}", ASSET_TYPES.join(", ")),
        )
    })?;
    fields.insert("asset_type".into(), asset_type.into());
    if let Some(by) = query.get("created_by") {
        fields.insert("created_by".into(), by.into());
    }
    if let Some(metadata) = query.get("asset_metadata") {
        let parsed: serde_json::Value = serde_json::from_str(metadata)
            .map_err(|_| Problem::bad_request("asset_metadata", "is not valid JSON"))?;
        fields.insert("asset_metadata".into(), parsed);
    }
    if let Some(created_at) = query.get("created_at") {
        fields.insert("created_at".into(), created_at.into());
    }
    if let Some(id) = id {
        fields.insert("id".into(), id.into());
    }
    let mode = if id.is_some() {
        Mode::Import
    } else {
        Mode::Create
    };
    let assignments = ASSETS.input(&fields, mode)?;

    let mut all = vec![
        Assignment {
            column: "asset_data",
            cast: "",
            value: ParameterValue::Binary(ctx.take_body()),
        },
        Assignment {
            column: "content_type",
            cast: "::text",
            value: ParameterValue::Str(content_type),
        },
    ];
    all.extend(assignments);
    let mut params = Params::default();
    let sql = format!(
        "{} RETURNING {}",
        crud::insert_sql(ASSETS.table, &all, &mut params, id.is_some()),
        ASSETS.select_list()
    );
    let rows = ctx.db()?.query(&sql, &params.values)?;
    let (row, etag) = match (rows.rows.is_empty(), id) {
        (false, _) => ASSETS.row_json(&rows, 0)?,
        // An import of bytes and fields identical to the stored ones.
        (true, Some(id)) => crud::fetch(ctx, &ASSETS, id)?,
        (true, None) => unreachable!("a plain INSERT ... RETURNING returns its row"),
    };
    let location = format!("/api/assets/{}", row["id"]);
    Ok(respond::row(201, &row, &etag, Some(&location)))
}

/// The upload's media type, which must be a `type/subtype`.
fn media_type(ctx: &Ctx) -> Result<String, Problem> {
    let value = ctx
        .req
        .header("content-type")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) && value.len() <= 100 => {
            Ok(value.to_owned())
        }
        _ => Err(Problem::new(415)
            .detail("send the asset with its media type, e.g. Content-Type: audio/mpeg")
            .field("Content-Type", "must be a media type such as audio/mpeg")),
    }
}

/// `GET`/`HEAD /api/assets/:id/data`: the head once the first slice is
/// read, then the rest of the bytes a slice at a time (see [`Slices`]).
pub fn data<'c>(ctx: &'c Ctx<'_>) -> Result<Streamed<'c>, Problem> {
    Query::parse(ctx.req, &[])?;
    let id = ctx.id("id")?;
    let db = ctx.db()?;
    // A plain GET wants the whole asset: its first slice comes with the
    // metadata, saving a query (for assets up to one slice, the only one).
    let plain = !ctx.is_head()
        && ctx.req.header("range").is_none()
        && ctx.req.header("if-none-match").is_none();
    let meta = db.query(
        "SELECT asset_sha256, asset_size, content_type,
                CASE WHEN $2 THEN substring(asset_data FROM 1 FOR $3) END
         FROM fragment_assets WHERE id = $1",
        &[
            ParameterValue::Int32(id),
            ParameterValue::Boolean(plain),
            ParameterValue::Int32(READ_SLICE as i32),
        ],
    )?;
    let Some(mut row) = meta.rows.into_iter().next() else {
        return Err(crud::not_found(&ASSETS, id));
    };
    let sha256 = value::text(&row[0], "asset_sha256")?.unwrap_or_default();
    let size = value::int(&row[1], "asset_size")?.unwrap_or(0) as u64;
    let content_type = value::text(&row[2], "content_type")?
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let first_slice = value::into_bytes(row.swap_remove(3), "asset_data")?.unwrap_or_default();

    if let Some(tags) = request::etags(ctx.req, "if-none-match")
        && request::if_none_match(&tags, &sha256)
    {
        let head = Response::builder()
            .status(304)
            .header("etag", respond::quote(&sha256))
            .header("accept-ranges", "bytes")
            .body(Vec::new())
            .build();
        return Ok(Streamed {
            head,
            body: Box::new(std::iter::empty()),
        });
    }

    let range = match ctx.req.header("range").and_then(|v| v.as_str()) {
        None => None,
        Some(header) => match parse_range(header, size) {
            RangeRequest::Ignore => None,
            RangeRequest::Satisfiable(first, last) => Some((first, last)),
            RangeRequest::Unsatisfiable => {
                return Err(Problem::new(416)
                    .detail(format!("the asset has {size} bytes"))
                    .field("Range", "no byte of it lies within the asset")
                    .header("content-range", format!("bytes */{size}")));
            }
        },
    };
    let (status, first, length) = match range {
        Some((first, last)) => (206, first, last - first + 1),
        None => (200, 0, size),
    };
    let mut slices = Slices {
        db,
        id,
        sha256: sha256.clone(),
        at: first,
        // The host sends no body for HEAD: read none.
        end: if ctx.is_head() { first } else { first + length },
        read: Some(first_slice),
    };
    // Read before the head, so that a failure to read still has a status.
    let opening = slices.next().transpose()?;

    let mut builder = Response::builder();
    builder
        .status(status)
        .header("content-type", content_type)
        .header("content-length", length.to_string())
        .header("etag", respond::quote(&sha256))
        .header("accept-ranges", "bytes")
        .header("cache-control", "private, max-age=0, must-revalidate");
    if status == 206 {
        builder.header(
            "content-range",
            format!("bytes {first}-{}/{size}", first + length - 1),
        );
    }
    Ok(Streamed {
        head: builder.body(Vec::new()).build(),
        body: Box::new(opening.map(Ok).into_iter().chain(slices)),
    })
}

/// How much of an asset one query reads, and so the most of it the
/// component holds at a time. A slice is also the host's unit of writing a
/// body (wasmtime takes 1 MiB per write), so a slice is sent in one write
/// while the next is read.
const READ_SLICE: u64 = 1 << 20;

/// An asset's bytes from `at` to `end`, one query per slice. substring()
/// on EXTERNAL storage fetches only the TOAST chunks a slice needs, so
/// each costs what its bytes cost, wherever it lies in the asset.
struct Slices<'c> {
    db: &'c Db,
    id: i32,
    /// The asset whose head was sent: a slice of a replaced one is refused
    /// rather than spliced into it.
    sha256: String,
    at: u64,
    end: u64,
    /// Bytes from `at` read already, with the metadata.
    read: Option<Vec<u8>>,
}

impl Iterator for Slices<'_> {
    type Item = Result<Vec<u8>, Problem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let slice = match self.read.take().filter(|read| !read.is_empty()) {
            Some(read) => Ok(read),
            None => self.read_slice((self.end - self.at).min(READ_SLICE)),
        };
        Some(slice.inspect(|bytes| self.at += bytes.len() as u64))
    }
}

impl Slices<'_> {
    fn read_slice(&self, want: u64) -> Result<Vec<u8>, Problem> {
        let rows = self.db.query(
            "SELECT substring(asset_data FROM $2 FOR $3)
             FROM fragment_assets WHERE id = $1 AND asset_sha256 = $4",
            &[
                ParameterValue::Int32(self.id),
                // substring() takes int4: assets are far below 2 GiB.
                ParameterValue::Int32(self.at as i32 + 1),
                ParameterValue::Int32(want as i32),
                ParameterValue::Str(self.sha256.clone()),
            ],
        )?;
        rows.rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .map(|cell| value::into_bytes(cell, "asset_data"))
            .transpose()?
            .flatten()
            .filter(|bytes| !bytes.is_empty())
            // Deleted or replaced since the head was read.
            .ok_or_else(|| crud::not_found(&ASSETS, self.id))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Not a single byte range we serve: answer with the whole asset, as
    /// RFC 9110 allows (multiple ranges, other units, malformed).
    Ignore,
    Satisfiable(u64, u64),
    Unsatisfiable,
}

/// One `bytes=first-last`, `bytes=first-` or `bytes=-suffix` (RFC 9110 §14.1.2).
fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignore;
    };
    if spec.contains(',') {
        return RangeRequest::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Satisfiable(size.saturating_sub(n), size - 1),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Ignore,
        },
        (first, "") => match number(first) {
            Some(f) if f < size => RangeRequest::Satisfiable(f, size - 1),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Ignore,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(f), Some(l)) if f > l => RangeRequest::Ignore,
            (Some(f), Some(_)) if f >= size => RangeRequest::Unsatisfiable,
            (Some(f), Some(l)) => RangeRequest::Satisfiable(f, l.min(size - 1)),
            _ => RangeRequest::Ignore,
        },
    }
}

pub fn upload_doc(resource: Option<&'static Resource>) -> Doc {
    upload_doc_with(upload_parameters(Doc::new()), resource)
}

/// `PUT /api/import/assets/{id}`: an upload that also carries what the
/// server would otherwise set.
pub fn import_doc(resource: Option<&'static Resource>) -> Doc {
    let doc = upload_parameters(Doc::new())
        .query_described("asset_metadata", json!({"type": "string"}), "JSON.")
        .query(
            "created_at",
            json!({"type": "string", "format": "date-time"}),
        );
    upload_doc_with(doc, resource)
}

fn upload_parameters(doc: Doc) -> Doc {
    let text = json!({"type": "string"});
    doc.query("fragment_id", text.clone())
        .required_query("asset_type", text.clone())
        .query("created_by", text)
}

fn upload_doc_with(doc: Doc, resource: Option<&'static Resource>) -> Doc {
    doc.body("*/*", json!({"type": "string", "format": "binary"}))
        .json(
            "201",
            "Stored; size and sha256 describe the bytes.",
            doc::row(resource),
        )
        .problem("413", "Larger than max_asset_bytes.")
        .problem("415", "No media type.")
        .problem("422", "Empty, or a field is invalid.")
}

pub fn data_doc(_: Option<&'static Resource>) -> Doc {
    Doc::new()
        .header("Range", Some("One bytes range."))
        .header("If-None-Match", None)
        .response(
            "200",
            json!({"description": "The exact bytes; ETag is the sha256.",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}),
        )
        .empty("206", "The requested range, with Content-Range.")
        .empty("304", "Not modified.")
        .problem("404", "No such asset.")
        .problem("416", "The range lies outside the asset.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges_follow_rfc_9110() {
        let size = 1000;
        assert_eq!(parse_range("bytes=0-99", size), Satisfiable(0, 99));
        assert_eq!(parse_range("bytes=500-", size), Satisfiable(500, 999));
        assert_eq!(parse_range("bytes=-100", size), Satisfiable(900, 999));
        assert_eq!(parse_range("bytes=-5000", size), Satisfiable(0, 999));
        assert_eq!(parse_range("bytes=900-5000", size), Satisfiable(900, 999));
        assert_eq!(parse_range("bytes=1000-", size), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-1001", size), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", size), Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=abc",
            "bytes=5-1",
            "bytes=-",
            "bytes=1-x",
        ] {
            assert_eq!(parse_range(ignored, size), Ignore, "{ignored}");
        }
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
    }
}
