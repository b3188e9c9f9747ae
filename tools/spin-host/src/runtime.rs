//! Compiling components, linking them once, and running one fresh instance
//! per request.
//!
//! A [`Runtime`] owns the Wasmtime engine (with the pooling allocator when
//! the machine allows it) and a cache of compiled components, so that an
//! application loaded twice, as tests do, compiles each `.wasm` file once.
//! [`Runtime::load`] resolves variables, renders `allowed_outbound_hosts`
//! and pre-links every component (an `InstancePre`): serving a request is
//! then only instantiation and the call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings;
use crate::bindings::spin::postgres::postgres as pg;
use crate::manifest::{self, Manifest, StaticResponse};
use crate::outbound::{AllowedHostError, AllowedHosts, OutboundHttp};
use crate::postgres::{EmptyResults, Pools, PostgresState};
use crate::routing::{RouteError, Router};
use crate::variables::{Resolved, Sources, VariablesError};

/// Why an application cannot be loaded or a request not served.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot configure the Wasm engine: {0}")]
    Engine(String),
    #[error("cannot load component {component:?} from {path}: {message}")]
    Compile {
        component: String,
        path: PathBuf,
        message: String,
    },
    #[error("component {component:?} cannot run on this host: {message}")]
    Link { component: String, message: String },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Variables(#[from] VariablesError),
    #[error("component {component:?}: {source}")]
    AllowedHosts {
        component: String,
        source: AllowedHostError,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("component {component:?} failed: {message}")]
    Guest { component: String, message: String },
}

/// What a store holds for one request.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    postgres: PostgresState,
    outbound_http: OutboundHttp,
    component: Arc<str>,
    variables: Arc<Resolved>,
    limits: StoreLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound_http,
        }
    }
}

impl bindings::spin::postgres::postgres::Host for HostState {}

#[allow(clippy::result_large_err)] // the WIT error type, as generated
impl bindings::spin::postgres::postgres::HostConnection for HostState {
    async fn open(&mut self, address: String) -> Result<Resource<pg::Connection>, pg::Error> {
        self.postgres.open(&address).await
    }

    async fn query(
        &mut self,
        connection: Resource<pg::Connection>,
        statement: String,
        params: Vec<pg::ParameterValue>,
    ) -> Result<pg::RowSet, pg::Error> {
        self.postgres.query(&connection, &statement, &params).await
    }

    async fn execute(
        &mut self,
        connection: Resource<pg::Connection>,
        statement: String,
        params: Vec<pg::ParameterValue>,
    ) -> Result<u64, pg::Error> {
        self.postgres
            .execute(&connection, &statement, &params)
            .await
    }

    async fn drop(&mut self, connection: Resource<pg::Connection>) -> wasmtime::Result<()> {
        self.postgres.close(&connection);
        Ok(())
    }
}

impl bindings::fermyon::spin::variables::Host for HostState {
    async fn get(
        &mut self,
        name: String,
    ) -> Result<String, bindings::fermyon::spin::variables::Error> {
        use bindings::fermyon::spin::variables::Error;
        self.variables
            .component_value(&self.component, &name)
            .map_err(|e| match e {
                VariablesError::InvalidName { .. } => Error::InvalidName(e.to_string()),
                VariablesError::Undefined { .. } => Error::Undefined(e.to_string()),
                other => Error::Provider(other.to_string()),
            })
    }
}

/// A compiled component and the file stamp (mtime, length) it came from.
type Compiled = (Option<SystemTime>, u64, Component);

/// The engine, the linker and the compiled-component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    compiled: Mutex<HashMap<PathBuf, Compiled>>,
    empty_results: EmptyResults,
    max_instance_memory: Option<usize>,
}

impl Runtime {
    /// Creates an engine with the pooling allocator, falling back to
    /// on-demand allocation where the pool's address space cannot be
    /// reserved (e.g. under a tight `ulimit -v`).
    pub fn new() -> Result<Self, HostError> {
        let engine = match Engine::new(&config(true)) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
                Engine::new(&config(false)).map_err(|e| HostError::Engine(format!("{e:?}")))?
            }
        };
        let mut linker = Linker::new(&engine);
        let link = |r: wasmtime::Result<()>| r.map_err(|e| HostError::Engine(format!("{e:?}")));
        link(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
        link(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
            &mut linker,
        ))?;
        link(bindings::SpinImports::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))?;
        Ok(Self {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            empty_results: EmptyResults::default(),
            max_instance_memory: None,
        })
    }

    /// Sets what the apps this runtime loads do with a Postgres query that
    /// matches no row (see [`EmptyResults`]).
    pub fn with_empty_results(mut self, empty_results: EmptyResults) -> Self {
        self.empty_results = empty_results;
        self
    }

    /// Caps the linear memory of each instance of the apps this runtime
    /// loads at `bytes`, as `spin up --max-instance-memory` does: a guest
    /// that grows past it gets a failed allocation (and traps).
    pub fn with_max_instance_memory(mut self, bytes: usize) -> Self {
        self.max_instance_memory = Some(bytes);
        self
    }

    /// The cap [`Runtime::with_max_instance_memory`] set, if any.
    pub fn max_instance_memory(&self) -> Option<usize> {
        self.max_instance_memory
    }

    /// The Wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component, or returns the cached compilation when the file
    /// has not changed since.
    pub fn compile(&self, component: &str, path: &Path) -> Result<Component, HostError> {
        let fail = |message: String| HostError::Compile {
            component: component.to_owned(),
            path: path.to_owned(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        let stamp = (meta.modified().ok(), meta.len());
        if let Some((mtime, len, c)) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            && (*mtime, *len) == stamp
        {
            return Ok(c.clone());
        }
        let compiled =
            Component::from_file(&self.engine, path).map_err(|e| fail(format!("{e:?}")))?;
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (stamp.0, stamp.1, compiled.clone()));
        Ok(compiled)
    }

    /// Prepares an application: variables resolved (a missing required one
    /// is an error here, before anything is served), every component
    /// compiled and pre-linked, routes built.
    pub fn load(&self, manifest: &Manifest, sources: &Sources) -> Result<App, HostError> {
        let mut variables = Resolved::resolve(&manifest.variables, sources)?;
        for c in manifest.components.values() {
            variables.add_component(&c.id, &c.variables);
        }
        let variables = Arc::new(variables);

        let mut components = HashMap::new();
        for c in manifest.components.values() {
            let rendered: Vec<String> = c
                .allowed_outbound_hosts
                .iter()
                .map(|t| variables.render(t))
                .collect();
            let allowed =
                AllowedHosts::parse(&rendered).map_err(|source| HostError::AllowedHosts {
                    component: c.id.clone(),
                    source,
                })?;
            let compiled = self.compile(&c.id, &c.source)?;
            let link = |e: wasmtime::Error| HostError::Link {
                component: c.id.clone(),
                message: format!("{e:?}"),
            };
            let pre = self.linker.instantiate_pre(&compiled).map_err(link)?;
            let pre = ProxyPre::new(pre).map_err(link)?;
            components.insert(
                c.id.clone(),
                Arc::new(ComponentRuntime {
                    id: c.id.as_str().into(),
                    pre,
                    pools: Arc::new(Pools::default()),
                    allowed: Arc::new(allowed),
                    empty_results: self.empty_results,
                    max_instance_memory: self.max_instance_memory,
                    environment: c
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    variables: variables.clone(),
                }),
            );
        }

        let keys: Vec<(String, &crate::routing::RouteSpec)> = manifest
            .http_triggers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.key(i), &t.route))
            .collect();
        let router = Router::build(keys.iter().map(|(k, r)| (k.as_str(), *r)))?;
        for (route, lost, won) in router.shadowed() {
            tracing::warn!("route {route} of {lost:?} is shadowed by the same route of {won:?}");
        }
        let mut targets = HashMap::new();
        for (i, t) in manifest.http_triggers.iter().enumerate() {
            let target = match &t.handler {
                manifest::Handler::Component(id) => Target::Component(components[id].clone()),
                manifest::Handler::Static(sr) => Target::Static(sr.clone()),
            };
            targets.insert(t.key(i), target);
        }
        Ok(App {
            name: manifest.name.clone(),
            router,
            targets,
        })
    }
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        // Room for this many requests in flight at once; a request beyond it
        // waits for no one but fails to instantiate, so keep it generous.
        pool.total_component_instances(256);
        pool.total_core_instances(256 * 4);
        pool.total_memories(256 * 2);
        pool.total_tables(256 * 4);
        // An upload holds its whole body (max_asset_bytes, 20 MiB by
        // default) and its copy in the query; downloads are streamed.
        pool.max_memory_size(1 << 30);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A loaded application.
pub struct App {
    pub name: String,
    pub router: Router,
    targets: HashMap<String, Target>,
}

/// What a route leads to.
pub enum Target {
    Component(Arc<ComponentRuntime>),
    Static(StaticResponse),
}

impl App {
    /// What the router's key stands for.
    pub fn target(&self, key: &str) -> Option<&Target> {
        self.targets.get(key)
    }

    /// A component by id.
    pub fn component(&self, id: &str) -> Option<&Arc<ComponentRuntime>> {
        self.targets.values().find_map(|t| match t {
            Target::Component(c) if &*c.id == id => Some(c),
            _ => None,
        })
    }
}

/// A pre-linked component and what its instances share.
pub struct ComponentRuntime {
    pub id: Arc<str>,
    pre: ProxyPre<HostState>,
    pools: Arc<Pools>,
    allowed: Arc<AllowedHosts>,
    empty_results: EmptyResults,
    max_instance_memory: Option<usize>,
    environment: Vec<(String, String)>,
    variables: Arc<Resolved>,
}

impl ComponentRuntime {
    fn new_store(&self) -> Store<HostState> {
        let wasi = WasiCtx::builder()
            .inherit_stdout()
            .inherit_stderr()
            .envs(&self.environment)
            .build();
        let state = HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            postgres: PostgresState::new(
                self.pools.clone(),
                self.allowed.clone(),
                self.empty_results,
            ),
            outbound_http: OutboundHttp::new(self.allowed.clone()),
            component: self.id.clone(),
            variables: self.variables.clone(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.max_instance_memory.unwrap_or(usize::MAX))
                .build(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        store
    }

    /// Instantiates the component afresh and hands it the request. Returns
    /// once the component has set its response; the body may still be
    /// streaming from the instance, which lives until it is done.
    pub async fn handle<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, HostError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let fail = |message: String| HostError::Guest {
            component: self.id.to_string(),
            message,
        };
        let mut store = self.new_store();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| fail(format!("{e:?}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| fail(format!("{e:?}")))?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        });
        match rx.await {
            Ok(Ok(response)) => {
                // Surface a trap that happens while the body streams.
                let id = self.id.clone();
                tokio::spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        tracing::error!("component {id:?} failed after responding: {e:?}");
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => Err(fail(format!("{code:?}"))),
            Err(_) => {
                let message = match task.await {
                    Ok(Ok(())) => "the component returned without setting a response".to_owned(),
                    Ok(Err(e)) => format!("{e:?}"),
                    Err(e) => format!("the component's task failed: {e}"),
                };
                Err(fail(message))
            }
        }
    }
}
