//! A probe for host tests. Routes (whatever the manifest mounts it on):
//!
//! - any path ending in `/ping`: `pong`, nothing else (the benchmark's
//!   trivial component);
//! - `?var=NAME`: the variable's value, or the error's debug form, as JSON;
//! - `POST` with a JSON body `{address, sql, params, mode}`: runs the
//!   statement through `spin:postgres` and answers with the column types and
//!   values in their debug form (`Int32(7)`, `Decimal("1.50")`), or the error;
//! - anything else: the request's method, path and headers as JSON.

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::pg4::{Connection, ParameterValue};

// The SDK's export glue is `unsafe` FFI; the exception to the workspace's
// `unsafe_code = "deny"` stays inside this module.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(req: spin_sdk::http::Request) -> spin_sdk::http::Response {
        super::handle(req)
    }
}

fn handle(req: Request) -> Response {
    if req.path().ends_with("/ping") {
        return Response::new(200, "pong");
    }
    if let Some(name) = req.query().strip_prefix("var=") {
        let body = match spin_sdk::variables::get(name) {
            Ok(v) => serde_json::json!({ "value": v }),
            Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
        };
        return json(200, body);
    }
    if *req.method() == Method::Post {
        return match serde_json::from_slice::<serde_json::Value>(req.body()) {
            Ok(spec) => json(200, run(&spec)),
            Err(e) => json(400, serde_json::json!({ "error": e.to_string() })),
        };
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .map(|(k, v)| (k.to_owned(), v.as_str().unwrap_or("<binary>").to_owned()))
        .collect();
    json(
        200,
        serde_json::json!({
            "method": format!("{:?}", req.method()),
            "path": req.path(),
            "query": req.query(),
            "headers": headers,
        }),
    )
}

fn json(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

fn run(spec: &serde_json::Value) -> serde_json::Value {
    let address = spec["address"].as_str().unwrap_or_default();
    let sql = spec["sql"].as_str().unwrap_or_default();
    let params = match spec["params"]
        .as_array()
        .map(|ps| ps.iter().map(param).collect::<Result<Vec<_>, _>>())
        .unwrap_or(Ok(vec![]))
    {
        Ok(p) => p,
        Err(e) => return serde_json::json!({ "error": e }),
    };
    let conn = match Connection::open(address) {
        Ok(c) => c,
        Err(e) => return serde_json::json!({ "error": format!("{e:?}") }),
    };
    if spec["mode"] == "execute" {
        return match conn.execute(sql, &params) {
            Ok(n) => serde_json::json!({ "affected": n }),
            Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
        };
    }
    match conn.query(sql, &params) {
        Ok(set) => serde_json::json!({
            "columns": set.columns.iter()
                .map(|c| serde_json::json!({ "name": c.name, "type": format!("{:?}", c.data_type) }))
                .collect::<Vec<_>>(),
            "rows": set.rows.iter()
                .map(|r| r.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
    }
}

/// `{"type": "int32", "value": 7}` → `ParameterValue::Int32(7)`. JSONB and
/// binary values are given as text so that the test controls the bytes.
fn param(p: &serde_json::Value) -> Result<ParameterValue, String> {
    let v = &p["value"];
    let bad = || format!("bad parameter {p}");
    let int = || v.as_i64().ok_or_else(bad);
    let text = || v.as_str().map(str::to_owned).ok_or_else(bad);
    let nums = || -> Result<Vec<i64>, String> {
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|n| n.as_i64().ok_or_else(bad))
            .collect()
    };
    Ok(match p["type"].as_str().unwrap_or_default() {
        "boolean" => ParameterValue::Boolean(v.as_bool().ok_or_else(bad)?),
        "int8" => ParameterValue::Int8(int()? as i8),
        "int16" => ParameterValue::Int16(int()? as i16),
        "int32" => ParameterValue::Int32(int()? as i32),
        "int64" => ParameterValue::Int64(int()?),
        "floating64" => ParameterValue::Floating64(v.as_f64().ok_or_else(bad)?),
        "str" => ParameterValue::Str(text()?),
        "binary" => ParameterValue::Binary(nums()?.into_iter().map(|b| b as u8).collect()),
        "jsonb" => ParameterValue::Jsonb(text()?.into_bytes()),
        "decimal" => ParameterValue::Decimal(text()?),
        "uuid" => ParameterValue::Uuid(text()?),
        "timestamp" => ParameterValue::Timestamp(int()?),
        "datetime" => {
            let n = nums()?;
            if n.len() != 7 {
                return Err(bad());
            }
            ParameterValue::Datetime((
                n[0] as i32,
                n[1] as u8,
                n[2] as u8,
                n[3] as u8,
                n[4] as u8,
                n[5] as u8,
                n[6] as u32,
            ))
        }
        "null" => ParameterValue::DbNull,
        _ => return Err(bad()),
    })
}
