//! SC-Bridge: the authenticated WebSocket JSON surface through which agents use this node's
//! sidechannels (reference `intercom.md` §4, with the gaps of §7.2 closed). Enabled by
//! `trac run --sc-bridge` ([`Settings`]; docs/bridge.md is the agent's guide).
//!
//! Every message is one text frame holding one JSON object. A client connects, gets `hello`,
//! authenticates with `auth` and then sends `send`, `join`, `leave`, `open`, `stats`, `info`,
//! `subscribe`, `unsubscribe`, `set_filter`, `clear_filter`, `ping` and (with
//! `--sc-bridge-cli 1`) `cli`; it receives `sidechannel_message` for every message delivered
//! on this node's channels (its subscriptions and filter permitting) and `sidechannel_event`
//! for joins, leaves, open requests and neighbours. Requests with an integer `id` get it back
//! on their reply.
//!
//! Fixed against the reference:
//! - a browser page cannot connect: a request with an `Origin` header is refused (HTTP 403)
//!   unless the origin is listed in `--sc-bridge-allow-origin`;
//! - the token is compared in constant time (of BLAKE3 digests, so its length does not leak
//!   either); a connection is closed after [`MAX_AUTH_FAILURES`] wrong tokens, and an address
//!   with [`MAX_FAILURES_PER_ADDRESS`] failures within [`FAILURE_WINDOW`] is refused (HTTP 429)
//!   until they age out; a client that does not authenticate within [`AUTH_TIMEOUT`] is closed;
//! - `hello` names no peer: the peer key and address come with `auth_ok`;
//! - frames larger than `--sc-bridge-max-frame-bytes` close the connection; at most
//!   `--sc-bridge-max-clients` clients (HTTP 503 beyond); each client's outgoing messages are
//!   bounded in bytes (`--sc-bridge-client-queue-bytes`): a slow reader loses messages (and is
//!   told how many with `lagged`) instead of growing the node's memory, and its own requests
//!   wait until it reads;
//! - `send` is acknowledged with the message id and the number of neighbours it went to;
//!   joins, leaves, open requests and neighbour changes are events;
//! - the token may come from a file (`--sc-bridge-token-file`) or the environment instead of
//!   the command line;
//! - `cli` runs through the terminal's dispatcher ([`crate::terminal::run_line`]) and returns
//!   that command's output only (no process-wide log capture); `/exit` and `/get_keys` are not
//!   available over the bridge.

pub mod filter;
pub mod protocol;
mod server;

use std::net::IpAddr;
use std::time::Duration;

pub use filter::Filter;
pub use server::{Bridge, BridgeContext, CliRunner, start};

/// Default port (`--sc-bridge-port`).
pub const DEFAULT_PORT: u16 = 49222;
/// Default most clients connected at once (`--sc-bridge-max-clients`).
pub const DEFAULT_MAX_CLIENTS: usize = 16;
/// Default largest frame a client may send (`--sc-bridge-max-frame-bytes`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
/// Default bytes of messages queued for one client (`--sc-bridge-client-queue-bytes`).
pub const DEFAULT_CLIENT_QUEUE_BYTES: usize = 4 << 20;
/// Wrong tokens one connection may send; the next one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// Wrong tokens from one IP address within [`FAILURE_WINDOW`] after which new connections
/// from it are refused.
pub const MAX_FAILURES_PER_ADDRESS: usize = 10;
/// How long a failed authentication counts against its address.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a client may stay connected without authenticating.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The bridge's settings (from the `--sc-bridge*` flags, resolved by
/// [`crate::node::config::RunConfig::resolve`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether the bridge runs (`--sc-bridge`).
    pub enabled: bool,
    /// The IP address to listen on (`--sc-bridge-host`).
    pub host: IpAddr,
    /// The port; 0 picks a free one (`--sc-bridge-port`).
    pub port: u16,
    /// The token clients authenticate with (`--sc-bridge-token`, `--sc-bridge-token-file`).
    pub token: Option<String>,
    /// Whether `cli` messages run terminal commands (`--sc-bridge-cli`).
    pub cli: bool,
    /// Every client's filter until it sets its own (`--sc-bridge-filter`).
    pub filter: String,
    /// Channels the filters apply to; none: all (`--sc-bridge-filter-channel`).
    pub filter_channels: Vec<String>,
    /// Logs every message and decision on standard error (`--sc-bridge-debug`).
    pub debug: bool,
    /// Browser origins allowed to connect; `*` allows any (`--sc-bridge-allow-origin`).
    pub allow_origins: Vec<String>,
    /// Most clients connected at once (`--sc-bridge-max-clients`).
    pub max_clients: usize,
    /// Largest frame a client may send (`--sc-bridge-max-frame-bytes`).
    pub max_frame_bytes: usize,
    /// Bytes of messages queued for one client (`--sc-bridge-client-queue-bytes`).
    pub client_queue_bytes: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            enabled: false,
            host: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            token: None,
            cli: false,
            filter: String::new(),
            filter_channels: Vec::new(),
            debug: false,
            allow_origins: Vec::new(),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            client_queue_bytes: DEFAULT_CLIENT_QUEUE_BYTES,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cli", &self.cli)
            .field("filter", &self.filter)
            .field("filter_channels", &self.filter_channels)
            .field("debug", &self.debug)
            .field("allow_origins", &self.allow_origins)
            .field("max_clients", &self.max_clients)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("client_queue_bytes", &self.client_queue_bytes)
            .finish()
    }
}

impl Settings {
    /// Whether a browser page of `origin` may connect.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin.trim()))
    }
}

/// The `info` payload: the startup banner's values (reference §4.6, with the listen
/// addresses).
pub fn info(banner: &crate::node::config::BannerInfo) -> serde_json::Value {
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    serde_json::json!({
        "msbBootstrap": banner.msb_bootstrap.map(|id| id.to_hex()),
        "msbChannel": banner.msb_channel,
        "msbStore": banner.msb_store.display().to_string(),
        "msbDhtBootstrap": list(&banner.msb_dht_bootstrap),
        "peerStore": banner.peer_store.display().to_string(),
        "peerDhtBootstrap": list(&banner.peer_dht_bootstrap),
        "subnetBootstrap": banner.subnet_bootstrap.map(|id| id.to_hex()),
        "subnetChannel": banner.subnet_channel,
        "peerPubkey": banner.peer_public_key.to_hex(),
        "peerTracAddress": banner.peer_public_key.address(),
        "peerWriterKey": banner.writer_key.to_hex(),
        "sidechannelEntry": crate::sidechannel::ENTRY_CHANNEL,
        "sidechannelExtras": banner.sidechannel_extras,
        "listen": banner.listen,
    })
}
