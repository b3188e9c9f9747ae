//! Dispatching a request to its handler: path patterns, methods, roles.

use std::cell::{OnceCell, RefCell};

use futures::StreamExt;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};

use crate::auth::Keys;
use crate::auth::{self, Role};
use crate::config::Config;
use crate::db::Db;
use crate::doc::Doc;
use crate::problem::Problem;
use crate::schema::Resource;
use crate::send::{self, Streamed};

/// The largest JSON body any endpoint takes (an import batch of 500 rows of
/// long texts fits comfortably).
pub const MAX_JSON_BYTES: usize = content_model::limits::MAX_JSON_BYTES;

/// A handler's result: a response, or the problem to answer instead.
pub type Handled = Result<Response, Problem>;

/// How a route answers.
#[derive(Clone, Copy)]
pub enum Handler {
    /// With a response built whole.
    Whole(fn(&Ctx) -> Handled),
    /// With a head, then a body read as it is sent: for bodies too large
    /// to hold at once. Whatever can fail with a status must fail before
    /// the head is returned.
    Streamed(for<'c> fn(&'c Ctx<'_>) -> Result<Streamed<'c>, Problem>),
}

/// One route of a component: `pattern` is the path with `:name` segments,
/// e.g. `/api/content/:id`.
pub struct Route {
    pub method: Method,
    pub pattern: &'static str,
    /// The least role that may call it; `None` for public routes.
    pub role: Option<Role>,
    pub handler: Handler,
    /// The resource a generic handler serves.
    pub resource: Option<&'static Resource>,
    /// What it does, for the OpenAPI document.
    pub op: Op,
    /// Its parameters, body and responses, written beside its handler.
    pub doc: fn(Option<&'static Resource>) -> Doc,
}

/// The kinds of operation the API has; the OpenAPI document describes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Create,
    Get,
    GetExpandable,
    Update,
    Delete,
    Upload,
    Data,
    Summary,
    Best,
    /// The caller's own rankings (`GET /api/rankings/mine`).
    Mine,
    /// The caller's rating of an asset, created or updated (`PUT /api/rankings/mine`).
    PutMine,
    Changes,
    ImportRows,
    ImportAsset,
    ImportFinish,
    OpenApi,
    Health,
}

impl Route {
    pub const fn new(
        op: Op,
        method: Method,
        pattern: &'static str,
        role: Option<Role>,
        handler: fn(&Ctx) -> Handled,
        doc: fn(Option<&'static Resource>) -> Doc,
    ) -> Self {
        Self::with(op, method, pattern, role, Handler::Whole(handler), doc)
    }

    /// A route whose handler streams its body (see [`Handler::Streamed`]).
    pub const fn streaming(
        op: Op,
        method: Method,
        pattern: &'static str,
        role: Option<Role>,
        handler: for<'c> fn(&'c Ctx<'_>) -> Result<Streamed<'c>, Problem>,
        doc: fn(Option<&'static Resource>) -> Doc,
    ) -> Self {
        Self::with(op, method, pattern, role, Handler::Streamed(handler), doc)
    }

    const fn with(
        op: Op,
        method: Method,
        pattern: &'static str,
        role: Option<Role>,
        handler: Handler,
        doc: fn(Option<&'static Resource>) -> Doc,
    ) -> Self {
        Route {
            method,
            pattern,
            role,
            handler,
            resource: None,
            op,
            doc,
        }
    }

    /// The same route serving `resource` through a generic handler.
    pub const fn on(mut self, resource: &'static Resource) -> Self {
        self.resource = Some(resource);
        self
    }
}

/// What a route does with a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// None is read: whatever a client sends is left unread.
    Ignored,
    /// A JSON document of at most [`MAX_JSON_BYTES`].
    Json,
    /// Raw bytes of at most the `max_asset_bytes` setting.
    Asset,
}

impl Op {
    pub fn body(self) -> BodyKind {
        match self {
            Op::Create | Op::Update | Op::PutMine | Op::ImportRows => BodyKind::Json,
            Op::Upload | Op::ImportAsset => BodyKind::Asset,
            _ => BodyKind::Ignored,
        }
    }
}

/// What a handler gets: the request's head, its body, the matched path
/// parameters, the caller's role, the configuration and a lazily opened
/// database.
pub struct Ctx<'a> {
    /// Method, URI and headers; the body is in [`Ctx::body`].
    pub req: &'a Request,
    /// Kept apart from `req` so an upload can move its bytes into the
    /// query parameter instead of copying them.
    body: RefCell<Vec<u8>>,
    resource: Option<&'static Resource>,
    pub role: Role,
    params: PathParams,
    config: OnceCell<Config>,
    keys: OnceCell<Keys>,
    db: OnceCell<Db>,
}

impl Ctx<'_> {
    /// The request body (empty for routes that read none).
    pub fn body(&self) -> std::cell::Ref<'_, Vec<u8>> {
        self.body.borrow()
    }

    /// The request body, moved out; the context holds an empty one after.
    pub fn take_body(&self) -> Vec<u8> {
        self.body.take()
    }

    /// The resource of a generic route.
    pub fn resource(&self) -> &'static Resource {
        self.resource
            .expect("generic handlers are routed with Route::on")
    }

    /// A `:name` path parameter of the matched route.
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default()
    }

    /// A path parameter that must be a row id (a positive `integer`).
    pub fn id(&self, name: &str) -> Result<i32, Problem> {
        let raw = self.param(name);
        raw.parse::<i32>().ok().filter(|id| *id > 0).ok_or_else(|| {
            Problem::not_found(format!(
                "no resource has the id {raw:?}: ids are positive integers"
            ))
        })
    }

    pub fn config(&self) -> Result<&Config, Problem> {
        if let Some(config) = self.config.get() {
            return Ok(config);
        }
        let config = Config::load()?;
        Ok(self.config.get_or_init(|| config))
    }

    /// What authentication trusts, read on first use.
    pub fn keys(&self) -> Result<&Keys, Problem> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let keys = Keys::load()?;
        Ok(self.keys.get_or_init(|| keys))
    }

    /// The database, connected on first use.
    pub fn db(&self) -> Result<&Db, Problem> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = Db::open(&self.config()?.db_url)?;
        Ok(self.db.get_or_init(|| db))
    }

    pub fn is_head(&self) -> bool {
        matches!(self.req.method(), Method::Head)
    }
}

/// Serves `req` with the first route whose pattern and method match; HEAD
/// is served by the GET route (the server drops the body).
///
/// The route and the caller are settled from the head alone; only then is
/// the body read, in chunks, and refused as soon as it passes the route's
/// limit. A client cannot make the component buffer more than that limit,
/// nor make it read anything before its token is checked.
pub async fn serve(incoming: IncomingRequest, out: ResponseOutparam, routes: &[Route]) {
    let req = Request::builder()
        .method(incoming.method())
        .uri(incoming.uri())
        .headers(incoming.headers())
        .build();
    let (route, params) = match select(&req, routes) {
        Ok(chosen) => chosen,
        Err(problem) => return send::whole(out, problem.into_response()).await,
    };
    let mut ctx = Ctx {
        req: &req,
        body: RefCell::default(),
        resource: route.resource,
        role: Role::Anon,
        params,
        config: OnceCell::new(),
        keys: OnceCell::new(),
        db: OnceCell::new(),
    };
    let body = match authorise(&mut ctx, route) {
        Ok(()) => read_body(&ctx, incoming, route.op.body()).await,
        Err(problem) => Err(problem),
    };
    match body {
        Ok(body) => ctx.body = RefCell::new(body),
        Err(problem) => return send::whole(out, problem.into_response()).await,
    }
    match route.handler {
        Handler::Whole(handler) => {
            send::whole(out, handler(&ctx).unwrap_or_else(Problem::into_response)).await
        }
        Handler::Streamed(handler) => match handler(&ctx) {
            Ok(streamed) => send::streamed(out, streamed).await,
            Err(problem) => send::whole(out, problem.into_response()).await,
        },
    }
}

/// A path's `:name` parameters with their values.
type PathParams = Vec<(String, String)>;

/// The route for the request's method and path, or the 404/405 to answer.
fn select<'r>(req: &Request, routes: &'r [Route]) -> Result<(&'r Route, PathParams), Problem> {
    let path = req.path();
    let mut allowed: Vec<&str> = Vec::new();
    let mut chosen = None;
    for route in routes {
        let Some(params) = match_path(route.pattern, path) else {
            continue;
        };
        allowed.push(method_name(&route.method));
        let method_matches = route.method == *req.method()
            || (matches!(req.method(), Method::Head) && matches!(route.method, Method::Get));
        if method_matches && chosen.is_none() {
            chosen = Some((route, params));
        }
    }
    chosen.ok_or_else(|| {
        if allowed.is_empty() {
            return Problem::not_found(format!("nothing is served at {path}"));
        }
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        Problem::method_not_allowed(&allowed)
    })
}

/// Reads the body a route of `kind` takes, refusing it with 413 on a
/// declared length over the limit before reading a byte, or on the first
/// chunk that passes the limit; what is left is never read.
async fn read_body(
    ctx: &Ctx<'_>,
    incoming: IncomingRequest,
    kind: BodyKind,
) -> Result<Vec<u8>, Problem> {
    let (limit, what) = match kind {
        BodyKind::Ignored => return Ok(Vec::new()),
        BodyKind::Json => (MAX_JSON_BYTES, "a JSON body"),
        BodyKind::Asset => (ctx.config()?.max_asset_bytes, "an asset"),
    };
    let too_large = || {
        Problem::new(413)
            .kind("too-large")
            .detail(format!("{what} may be at most {limit} bytes"))
            .field("body", format!("larger than {limit} bytes"))
    };
    let declared = ctx
        .req
        .header("content-length")
        .and_then(|v| v.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut chunks = incoming.into_body_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| {
            Problem::bad_request(
                "body",
                format!("could not be read to its end: {}", err.to_debug_string()),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn authorise(ctx: &mut Ctx, route: &Route) -> Result<(), Problem> {
    let Some(needed) = route.role else {
        return Ok(());
    };
    let role = auth::authenticate(ctx.req, ctx.keys()?)?;
    if role < needed {
        return Err(Problem::new(403).kind("forbidden").detail(format!(
            "this needs the {} role or higher; the token has {}",
            needed.as_str(),
            role.as_str()
        )));
    }
    ctx.role = role;
    Ok(())
}

/// Matches `/api/content/:id` against `/api/content/12`.
fn match_path(pattern: &str, path: &str) -> Option<PathParams> {
    let mut params = Vec::new();
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with(':') => {
                params.push((p[1..].to_owned(), s.to_owned()));
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

pub fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        assert_eq!(
            match_path("/api/content/:id", "/api/content/12"),
            Some(vec![("id".to_owned(), "12".to_owned())])
        );
        assert_eq!(match_path("/api/content", "/api/content"), Some(vec![]));
        assert_eq!(match_path("/api/content", "/api/content/"), None);
        assert_eq!(match_path("/api/content/:id", "/api/content/12/x"), None);
        assert_eq!(
            match_path("/api/assets/:id/data", "/api/assets/7/data"),
            Some(vec![("id".to_owned(), "7".to_owned())])
        );
        assert_eq!(
            match_path("/api/assets/:id/data", "/api/assets/7/meta"),
            None
        );
    }
}
