//! An operation's description in the OpenAPI document, written beside its
//! handler: each route carries a function that returns its [`Doc`], and
//! [`openapi`](crate::openapi) adds what every operation of a kind shares
//! (ids, auth, the common error statuses).

use serde_json::{Map, Value, json};

use crate::schema::Resource;

/// Parameters, request body, description and responses of one operation.
#[derive(Debug, Default)]
pub struct Doc {
    pub parameters: Vec<Value>,
    pub request_body: Option<Value>,
    pub description: Option<&'static str>,
    pub responses: Map<String, Value>,
}

impl Doc {
    pub fn new() -> Doc {
        Doc::default()
    }

    /// A query parameter with its JSON schema.
    pub fn query(mut self, name: &str, schema: Value) -> Doc {
        self.parameters
            .push(json!({"name": name, "in": "query", "schema": schema}));
        self
    }

    /// The same, required.
    pub fn required_query(mut self, name: &str, schema: Value) -> Doc {
        self.parameters
            .push(json!({"name": name, "in": "query", "required": true, "schema": schema}));
        self
    }

    /// The same with a description.
    pub fn query_described(mut self, name: &str, schema: Value, description: &str) -> Doc {
        self.parameters.push(
            json!({"name": name, "in": "query", "schema": schema, "description": description}),
        );
        self
    }

    /// A string header, optionally described.
    pub fn header(mut self, name: &str, description: Option<&str>) -> Doc {
        let mut parameter = json!({"name": name, "in": "header", "schema": {"type": "string"}});
        if let Some(text) = description {
            parameter["description"] = text.into();
        }
        self.parameters.push(parameter);
        self
    }

    /// A required JSON body of `schema`.
    pub fn json_body(self, schema: Value) -> Doc {
        self.body("application/json", schema)
    }

    /// A required body of `media_type`.
    pub fn body(mut self, media_type: &str, schema: Value) -> Doc {
        self.request_body =
            Some(json!({"required": true, "content": {media_type: {"schema": schema}}}));
        self
    }

    pub fn describe(mut self, text: &'static str) -> Doc {
        self.description = Some(text);
        self
    }

    /// A JSON response.
    pub fn json(self, status: &str, description: &str, schema: Value) -> Doc {
        self.response(
            status,
            json!({"description": description, "content": {"application/json": {"schema": schema}}}),
        )
    }

    /// A response without a body.
    pub fn empty(self, status: &str, description: &str) -> Doc {
        self.response(status, json!({"description": description}))
    }

    /// An `application/problem+json` response.
    pub fn problem(self, status: &str, description: &str) -> Doc {
        self.response(status, problem_response(description))
    }

    pub fn response(mut self, status: &str, response: Value) -> Doc {
        self.responses.insert(status.to_owned(), response);
        self
    }
}

/// A reference to a resource's row schema.
pub fn row(resource: Option<&Resource>) -> Value {
    resource.map_or(
        Value::Null,
        |r| json!({"$ref": format!("#/components/schemas/{}", r.schema_name)}),
    )
}

pub fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}
