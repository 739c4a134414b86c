//! The HTTP RPC (`trac run --rpc`): JSON over HTTP for wallets, dApps and tools, on axum in
//! the node's runtime. Every route is under `/v1`:
//!
//! - [`peer`]: the subnet peer's routes of the reference (health, status, state, contract
//!   schema, nonce, tx context, tx with `sim`), plus `POST /v1/contract/tx/prepare` (the exact
//!   bytes a wallet signs) and `GET /v1/contract/query` (read-only queries);
//! - [`msb`]: the MSB HTTP API routes that apply here (balance, account, fee, heights, tx by
//!   hash, confirmed tx hashes, broadcast of a signed op);
//! - [`openapi`]: `GET /v1/openapi.json`, the document of every route.
//!
//! Handlers reach the node through a [`NodeClient`] (work runs on the node's pump). Every
//! response is JSON; errors are `{"error": "<message>"}` with a 4xx status for every client
//! mistake (400 bad input, 403 transactions not exposed, 404 unknown route or record, 405 wrong
//! method, 413 body too large, 429 rate limited) and 5xx only for faults of the node (500) or a
//! node that stopped (503). Bodies are read up to `--rpc-max-body-bytes`; CORS allows the
//! configured origin; simulations, queries and broadcasts are rate limited per client IP.

pub mod msb;
pub mod openapi;
pub mod peer;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::node::config::RpcSettings;
use crate::node::runner::{NodeClient, NodeStopped};

/// Requests per second each client IP may make to the rate-limited routes (simulations,
/// queries, broadcasts), with bursts of [`RATE_BURST`].
pub const RATE_PER_SECOND: u32 = 20;
/// The burst allowance of the rate-limited routes.
pub const RATE_BURST: u32 = 40;

/// An error answer: a status and `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: no such record.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 403: not allowed on this node.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// 409: the node's state does not allow it now (for example not a writer).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }

    /// 503: what the request needs is not available now (no MSB validator reachable).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }

    /// 500: a fault of this node (logged; the client gets a generic message with the cause).
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::warn!("RPC request failed inside the node: {cause}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("An internal error occurred: {cause}"),
        }
    }
}

impl From<NodeStopped> for ApiError {
    fn from(_: NodeStopped) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The node has stopped.".to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// A fault inside the node as a 500 (for `map_err`).
pub fn internal<E: std::fmt::Display>(e: E) -> ApiError {
    ApiError::internal(e)
}

/// What a handler returns.
pub type ApiResult = Result<axum::Json<Json>, ApiError>;

/// The shared state of the handlers.
pub struct RpcState {
    /// The node.
    pub node: NodeClient,
    /// Whether `POST /v1/contract/tx` may submit (not only simulate).
    pub api_tx_exposed: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for RpcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcState")
            .field("api_tx_exposed", &self.api_tx_exposed)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl RpcState {
    /// Counts a rate-limited request of `client`; 429 when it is over its quota.
    pub fn limit(&self, client: &SocketAddr) -> Result<(), ApiError> {
        self.limiter.check_key(&client.ip()).map_err(|_| ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Too many requests: at most {RATE_PER_SECOND} per second (bursts of {RATE_BURST}) per client; retry shortly."
            ),
        })
    }
}

/// The handlers' state.
pub type Shared = Arc<RpcState>;

/// A JSON request body read up to the configured limit: 413 above it, 400 when it is missing
/// or not JSON.
#[derive(Debug)]
pub struct JsonBody(pub Json);

impl FromRequest<Shared> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let limit = state.max_body_bytes;
        let too_large = || ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Request body too large: the limit is {limit} bytes."),
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                {
                    too_large()
                } else {
                    ApiError::bad_request(format!("Cannot read the request body: {e}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("Missing JSON body."));
        }
        let json = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON payload: {e}.")))?;
        Ok(JsonBody(json))
    }
}

/// A running RPC server.
#[derive(Debug)]
pub struct RpcServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests, lets those in flight finish, and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// The router of every route (without the listener), for [`start`] and tests.
pub fn router(settings: &RpcSettings, node: NodeClient) -> Result<Router, String> {
    let quota = Quota::per_second(NonZeroU32::new(RATE_PER_SECOND).expect("non-zero"))
        .allow_burst(NonZeroU32::new(RATE_BURST).expect("non-zero"));
    let state: Shared = Arc::new(RpcState {
        node,
        api_tx_exposed: settings.api_tx_exposed,
        max_body_bytes: settings.max_body_bytes,
        limiter: RateLimiter::keyed(quota),
    });
    let origin = if settings.allow_origin == "*" {
        AllowOrigin::any()
    } else {
        let value = HeaderValue::from_str(&settings.allow_origin)
            .map_err(|_| format!("invalid allowed origin {:?}", settings.allow_origin))?;
        AllowOrigin::exact(value)
    };
    let cors = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE]);
    let forget = state.clone();
    tokio::spawn(async move {
        // The limiter keeps a cell per client: drop the idle ones now and then.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            if Arc::strong_count(&forget) == 1 {
                return;
            }
            forget.limiter.retain_recent();
        }
    });
    Ok(peer::routes()
        .merge(msb::routes())
        .merge(openapi::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors)
        .layer(axum::middleware::map_response(no_content_for_options))
        .with_state(state))
}

/// Binds the RPC on `settings.host:settings.port` and serves it on the current runtime.
pub async fn start(settings: &RpcSettings, node: NodeClient) -> anyhow::Result<RpcServer> {
    let app = router(settings, node).map_err(|e| anyhow::anyhow!(e))?;
    let bind = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind} for the RPC: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = served {
            tracing::warn!("the RPC server stopped: {e}");
        }
    });
    tracing::info!(%addr, "RPC listening");
    Ok(RpcServer {
        addr,
        stop: Some(stop),
        task,
    })
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "Method Not Allowed".to_string(),
    }
}

/// Any `OPTIONS` request is answered 204 with an empty body, keeping the CORS headers of a
/// preflight answer.
async fn no_content_for_options(method: Method, mut response: Response) -> Response {
    if method == Method::OPTIONS {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = axum::body::Body::empty();
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    response
}

/// The client's address (for rate limits).
pub type Client = ConnectInfo<SocketAddr>;

/// Parses a `confirmed` query parameter strictly: absent → `default`, else exactly `true` or
/// `false`.
pub fn confirmed_param(value: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match value {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::bad_request(
            "Parameter \"confirmed\" must be exactly \"true\" or \"false\".",
        )),
    }
}

/// A 64-hex-digit key or hash parameter (any case) with a clear 400 naming `what`.
pub fn hex32(value: &str, what: &str) -> Result<[u8; 32], ApiError> {
    let bytes = hex::decode(value.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid {what}: expected 64 hex digits.")))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// A state value for JSON: its JSON form when it is MessagePack, else `{"hex": …}`.
pub fn value_json(bytes: &[u8]) -> Json {
    crate::codec::json::msgpack_to_json(bytes)
        .unwrap_or_else(|| json!({ "hex": hex::encode(bytes) }))
}
