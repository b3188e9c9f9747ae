//! `GET /api/openapi.json`: an OpenAPI 3.1 document built from the same
//! route tables and resource declarations that serve the requests, so the
//! two cannot drift apart.

use serde_json::{Map, Value, json};

use crate::doc::problem_response;
use crate::router::{Op, Route, method_name};
use crate::schema::{ALL, Access, Field, Kind, Resource};

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
    let doc = (route.doc)(resource);
    parameters.extend(doc.parameters);
    if let Some(body) = doc.request_body {
        op.insert("requestBody".into(), body);
    }
    if let Some(text) = doc.description {
        op.insert("description".into(), text.into());
    }
    let mut responses = doc.responses;
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
