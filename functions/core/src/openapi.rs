//! `GET /api/openapi.json`: an OpenAPI 3.1 document built from the same
//! route tables and resource declarations that serve the requests, so the
//! two cannot drift apart.

use serde_json::{Map, Value, json};

use crate::crud;
use crate::feed;
use crate::router::{Op, Route, method_name};
use crate::schema::{ALL, Access, Field, Filter, Kind, Resource};

/// The whole document, of `tables` (each component's routes): the route
/// tables are handed in, so that this module reads them without the route
/// module, which serves this document, being read back.
pub fn document(tables: &[(&str, Vec<Route>)]) -> Value {
    let mut paths = Map::new();
    for (component, table) in tables {
        for route in table {
            let path = route
                .pattern
                .split('/')
                .map(|s| match s.strip_prefix(':') {
                    Some(name) => format!("{{{name}}}"),
                    None => s.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let item = paths
                .entry(path)
                .or_insert_with(|| Value::Object(Map::new()));
            item[method_name(&route.method).to_lowercase()] = operation(component, route);
        }
    }
    let mut schemas = Map::new();
    for resource in ALL {
        schemas.insert(resource.schema_name.to_owned(), row_schema(resource));
    }
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Thai content API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Learning content, fragments, assets and rankings, with a change feed and bulk import.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Supabase access token: ES256 or RS256 with a key of the project's JWKS, or HS256 with the legacy JWT secret where configured. Its role claim decides: anon reads, authenticated writes, service_role also imports. A project API key (sb_secret_…, sb_publishable_…) is accepted here too.",
                },
                "apikey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "apikey",
                    "description": "A project API key: sb_publishable_… has the anon role, sb_secret_… the service_role. A JWT in Authorization decides when both are sent.",
                }
            }
        }
    })
}

fn schema_ref(resource: &Resource) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", resource.schema_name)})
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn operation(component: &str, route: &Route) -> Value {
    let resource = route.resource;
    let name = resource.map_or(component, |r| r.path);
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        format!(
            "{}_{:?}_{}",
            name,
            route.op,
            method_name(&route.method).to_lowercase()
        )
        .into(),
    );
    op.insert("tags".into(), json!([component]));
    let mut parameters = Vec::new();
    if route.pattern.contains(":id") {
        parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}));
    }
    let mut responses = Map::new();
    let row = resource.map(schema_ref).unwrap_or(Value::Null);
    match route.op {
        Op::List => {
            let r = resource.expect("list routes have a resource");
            for (param, filter) in r.filters {
                let schema = match filter {
                    Filter::IntEq(_) => json!({"type": "integer", "minimum": 1}),
                    _ => json!({"type": "string", "maxLength": 200}),
                };
                parameters.push(json!({"name": param, "in": "query", "schema": schema}));
            }
            parameters.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": crud::MAX_LIMIT, "default": crud::DEFAULT_LIMIT}}));
            parameters.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "The next value of the previous page."}));
            responses.insert("200".into(), json_response("A page, ordered by id.", json!({
                "type": "object", "required": ["items", "next"],
                "properties": {"items": {"type": "array", "items": row}, "next": {"type": ["string", "null"]}}
            })));
            responses.insert(
                "400".into(),
                problem_response("An unknown or malformed parameter."),
            );
        }
        Op::Create => {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": row}}}),
            );
            responses.insert(
                "201".into(),
                json_response("Created; Location and ETag name it.", row.clone()),
            );
            responses.insert("415".into(), problem_response("Not application/json."));
            responses.insert(
                "422".into(),
                problem_response("A field is invalid; errors name it."),
            );
            responses.insert(
                "409".into(),
                problem_response("Conflicts with an existing row."),
            );
        }
        Op::Get | Op::GetExpandable => {
            if route.op == Op::GetExpandable {
                parameters.push(json!({"name": "expand", "in": "query", "schema": {"enum": ["fragments"]},
                    "description": "fragments: include the fragments, their assets' metadata and ranking summaries."}));
            }
            parameters.push(
                json!({"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}),
            );
            // Expanded, the content also carries `fragments` (each with
            // `assets`, each with `ranking`): the plain row schema with those.
            let body = if route.op == Op::GetExpandable {
                json!({"anyOf": [row.clone(), {"type": "object", "required": ["id", "fragments"],
                    "properties": {"fragments": {"type": "array", "items": {"type": "object",
                        "required": ["id", "assets"], "properties": {"assets": {"type": "array"}}}}}}]})
            } else {
                row.clone()
            };
            responses.insert("200".into(), json_response("The row, with its ETag.", body));
            responses.insert("304".into(), json!({"description": "Not modified."}));
            responses.insert("404".into(), problem_response("No such row."));
        }
        Op::Update => {
            parameters
                .push(json!({"name": "If-Match", "in": "header", "schema": {"type": "string"}}));
            op.insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": {"type": "object",
                "description": "Members present are set (null clears a nullable field); members absent stay; unknown members are refused."}}}}));
            responses.insert("200".into(), json_response("The updated row.", row.clone()));
            responses.insert("404".into(), problem_response("No such row."));
            responses.insert(
                "412".into(),
                problem_response("If-Match does not match the current ETag."),
            );
            responses.insert(
                "422".into(),
                problem_response("A field is invalid; errors name it."),
            );
        }
        Op::Delete => {
            parameters
                .push(json!({"name": "If-Match", "in": "header", "schema": {"type": "string"}}));
            responses.insert(
                "204".into(),
                json!({"description": "Deleted, with its children."}),
            );
            responses.insert("404".into(), problem_response("No such row."));
            responses.insert(
                "412".into(),
                problem_response("If-Match does not match the current ETag."),
            );
        }
        Op::Upload | Op::ImportAsset => {
            for (param, required) in [
                ("fragment_id", false),
                ("asset_type", true),
                ("created_by", false),
            ] {
                parameters.push(json!({"name": param, "in": "query", "required": required, "schema": {"type": "string"}}));
            }
            if route.op == Op::ImportAsset {
                parameters.push(json!({"name": "asset_metadata", "in": "query", "schema": {"type": "string"}, "description": "JSON."}));
                parameters.push(json!({"name": "created_at", "in": "query", "schema": {"type": "string", "format": "date-time"}}));
            }
            op.insert("requestBody".into(), json!({"required": true, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}));
            responses.insert(
                "201".into(),
                json_response("Stored; size and sha256 describe the bytes.", row.clone()),
            );
            responses.insert(
                "413".into(),
                problem_response("Larger than max_asset_bytes."),
            );
            responses.insert("415".into(), problem_response("No media type."));
            responses.insert(
                "422".into(),
                problem_response("Empty, or a field is invalid."),
            );
        }
        Op::Data => {
            parameters.push(json!({"name": "Range", "in": "header", "schema": {"type": "string"}, "description": "One bytes range."}));
            parameters.push(
                json!({"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}),
            );
            responses.insert("200".into(), json!({"description": "The exact bytes; ETag is the sha256.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}));
            responses.insert(
                "206".into(),
                json!({"description": "The requested range, with Content-Range."}),
            );
            responses.insert("304".into(), json!({"description": "Not modified."}));
            responses.insert("404".into(), problem_response("No such asset."));
            responses.insert(
                "416".into(),
                problem_response("The range lies outside the asset."),
            );
        }
        Op::Summary => {
            parameters
                .push(json!({"name": "fragment_id", "in": "query", "schema": {"type": "integer"}}));
            parameters
                .push(json!({"name": "asset_id", "in": "query", "schema": {"type": "integer"}}));
            responses.insert(
                "200".into(),
                json_response(
                    "Mean (two decimals, as a string) and count per asset.",
                    json!({"type": "object"}),
                ),
            );
            responses.insert(
                "400".into(),
                problem_response("Neither or both filters given."),
            );
        }
        Op::Best => {
            parameters.push(json!({"name": "fragment_id", "in": "query", "required": true, "schema": {"type": "integer"}}));
            parameters.push(json!({"name": "asset_type", "in": "query", "schema": {"enum": ["audio", "image", "video"], "default": "audio"}}));
            responses.insert("200".into(), json_response("The best-ranked asset: highest mean, then most rankings, then lowest id; unranked last.", json!({"type": "object"})));
            responses.insert(
                "404".into(),
                problem_response("The fragment has no asset of that type."),
            );
        }
        Op::Mine => {
            for param in ["content_id", "fragment_id", "asset_id"] {
                parameters.push(json!({"name": param, "in": "query", "schema": {"type": "integer", "minimum": 1},
                    "description": "Give exactly one: the scope whose assets' rankings are listed."}));
            }
            responses.insert("200".into(), json_response(
                "The caller's own rankings, oldest first, and the name they are stored under (the token's email claim, else its sub).",
                json!({"type": "object", "required": ["assessed_by", "items"], "properties": {
                    "assessed_by": {"type": "string"}, "items": {"type": "array", "items": row}}}),
            ));
            responses.insert(
                "400".into(),
                problem_response("None or several of the scopes given."),
            );
        }
        Op::PutMine => {
            parameters.push(json!({"name": "asset_id", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}}));
            op.insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["rank_score"], "additionalProperties": false,
                "properties": {
                    "rank_score": {"type": ["string", "number"], "description": "0.00 to 5.00, at most two decimals."},
                    "assessment_notes": {"type": ["string", "null"]}
                }}}}}));
            op.insert("description".into(), "The caller's rating of the asset: the first creates a ranking under the token's user (email claim, else sub); later ones update it, so each assessor has one rating per asset. Concurrent saves are serialised. A token that names no user (neither email nor sub) is 403.".into());
            responses.insert(
                "200".into(),
                json_response("The caller's ranking, updated.", row.clone()),
            );
            responses.insert(
                "201".into(),
                json_response(
                    "The caller's first ranking of the asset; Location names it.",
                    row.clone(),
                ),
            );
            responses.insert("404".into(), problem_response("No such asset."));
            responses.insert("415".into(), problem_response("Not application/json."));
            responses.insert(
                "422".into(),
                problem_response("A member is invalid or not accepted; errors name it."),
            );
        }
        Op::Changes => {
            parameters.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}));
            parameters.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": feed::MAX_LIMIT, "default": feed::DEFAULT_LIMIT}}));
            responses.insert("200".into(), json_response("A page of changes.", json!({
                "type": "object", "required": ["phase", "changes", "next_cursor", "has_more"],
                "properties": {
                    "phase": {"enum": ["snapshot", "log"]},
                    "changes": {"type": "array", "items": {"type": "object", "required": ["table", "op", "id"], "properties": {
                        "table": {"enum": ALL.iter().map(|r| r.table).collect::<Vec<_>>()},
                        "op": {"enum": ["upsert", "delete"]}, "id": {"type": "integer"}, "row": {"type": "object"}}}},
                    "next_cursor": {"type": "string"}, "has_more": {"type": "boolean"}
                }
            })));
            responses.insert(
                "410".into(),
                problem_response("The cursor is older than the log; start again without one."),
            );
        }
        Op::ImportRows => {
            op.insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["rows"], "properties": {"rows": {"type": "array", "maxItems": crate::import::MAX_BATCH, "items": row}}}}}}));
            responses.insert(
                "200".into(),
                json_response(
                    "All rows stored (inserted, or updated by id).",
                    json!({"type": "object"}),
                ),
            );
            responses.insert(
                "422".into(),
                problem_response(
                    "A row is invalid; errors name rows[i].field. Nothing was stored.",
                ),
            );
        }
        Op::ImportFinish => {
            responses.insert(
                "200".into(),
                json_response(
                    "Sequences moved past the highest ids.",
                    json!({"type": "object"}),
                ),
            );
        }
        Op::OpenApi => {
            responses.insert(
                "200".into(),
                json_response("This document.", json!({"type": "object"})),
            );
        }
        Op::Health => {
            responses.insert(
                "200".into(),
                json_response(
                    "The database answers; schema_version is the latest migration.",
                    json!({"type": "object"}),
                ),
            );
            responses.insert(
                "503".into(),
                problem_response("The database does not answer."),
            );
        }
    }
    // Statuses every operation of a kind can answer, whatever its own ones.
    // The health component is not served by this router and takes any query.
    let mut common = Vec::new();
    if route.op != Op::Health {
        common.push(("400", "An unknown, repeated or malformed query parameter."));
    }
    if route.pattern.contains(":id") {
        common.push(("404", "No row has this id (ids are positive integers)."));
    }
    if op.contains_key("requestBody") {
        common.extend([
            ("413", "The body is larger than this operation takes."),
            (
                "415",
                "The body's Content-Type is not one this operation takes.",
            ),
            (
                "422",
                "A field is invalid or refers to a missing row; errors name it.",
            ),
        ]);
    }
    if route.method == spin_sdk::http::Method::Delete {
        common.push(("412", "If-Match does not match the current ETag."));
    }
    for (status, description) in common {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description));
    }
    if route.role.is_some() {
        op.insert("security".into(), json!([{"bearer": []}, {"apikey": []}]));
        responses.insert("401".into(), problem_response("No valid token."));
        responses.insert(
            "403".into(),
            problem_response("The token's role may not do this."),
        );
        responses.insert(
            "503".into(),
            problem_response("The database does not answer; Retry-After says when to try again."),
        );
        responses.insert(
            "507".into(),
            problem_response(
                "A row is larger than a component may read from the database in one \
                 query (128 MiB on Spin); only rows written around this API can be.",
            ),
        );
    } else {
        op.insert("security".into(), json!([]));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn row_schema(resource: &Resource) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in resource.fields {
        properties.insert(field.name.into(), field_schema(field));
        if field.access == Access::Required {
            required.push(field.name);
        }
    }
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn field_schema(field: &Field) -> Value {
    let mut schema = match field.kind {
        Kind::Id => json!({"type": "integer", "minimum": 1}),
        Kind::Int => json!({"type": "integer", "format": "int32"}),
        Kind::BigInt => json!({"type": "integer", "format": "int64"}),
        Kind::Text(Some(max)) => json!({"type": "string", "maxLength": max}),
        Kind::Text(None) => json!({"type": "string"}),
        Kind::Enum(values) => json!({"type": "string", "enum": values}),
        Kind::Json => json!({}),
        Kind::Score => json!({"type": "string", "pattern": "^[0-5](\\.[0-9]{1,2})?$"}),
        Kind::Timestamp => json!({"type": "string", "format": "date-time"}),
    };
    if field.nullable && field.kind != Kind::Json {
        let base = schema["type"].clone();
        schema["type"] = json!([base, "null"]);
    }
    if field.access == Access::ReadOnly || field.access == Access::Imported {
        schema["readOnly"] = Value::Bool(field.access == Access::ReadOnly);
    }
    schema["description"] = field.doc.into();
    schema
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}
        }
    })
}
