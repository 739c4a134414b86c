//! The configuration of `trac run`: every setting with its flag, environment variable and
//! default, the store layout on disk, the persisted bootstrap files and the startup banner.
//!
//! Resolution happens in three steps, each testable on its own:
//!
//! 1. [`RunConfig::resolve`] turns the raw command-line values ([`RunFlags`]) and the environment
//!    into typed settings, failing on the first invalid value with an error that names the flag
//!    (or variable) and the value. It reads no file.
//! 2. [`StartPlan::resolve`] adds what is persisted in the stores (`subnet-bootstrap.hex`,
//!    `msb-bootstrap.hex`, `msb-channel.txt`) and decides whether this start creates or joins the
//!    MSB network and the subnet. It reads files but writes nothing.
//! 3. [`StoreLayout::create`], [`StartPlan::persist_joined`] and [`load_or_create_keypair`]
//!    create the folders, persist the bootstraps a joiner was given and load (or create) the
//!    keystores. [`render_banner`] then formats what the node prints at startup.
//!
//! # Settings
//!
//! Precedence for every setting: command line, then environment variable, then (where noted)
//! the persisted file, then the default. An empty value (`--x=` or `X=`) counts as absent.
//! Flags take `--k v` or `--k=v`; booleans also take a bare `--k` (true) and accept
//! `1/true/yes/on` and `0/false/no/off` (case-insensitive); anything else is an error.
//!
//! | Flag | Environment | Default | Meaning |
//! |---|---|---|---|
//! | positional `[store-label]` | — | — | same as `--peer-store-name` (command line) |
//! | `--peer-store-name` | `PEER_STORE_NAME` | store label, else `peer` | peer store folder name |
//! | `--peer-stores-directory` | `PEER_STORES_DIRECTORY` | `stores` | folder holding peer stores |
//! | `--msb-store-name` | `MSB_STORE_NAME` | `<peer-store-name>-msb` | MSB store folder name |
//! | `--msb-stores-directory` | `MSB_STORES_DIRECTORY` | `stores` | folder holding MSB stores |
//! | `--subnet-channel` | `SUBNET_CHANNEL` | `trac-peer-subnet` | channel of a new subnet (1–128 bytes) |
//! | `--subnet-bootstrap` | `SUBNET_BOOTSTRAP` | `subnet-bootstrap.hex`, else none = create | subnet id to join, 64 hex |
//! | `--peer-dht-bootstrap`, `--dht-bootstrap` | `PEER_DHT_BOOTSTRAP`, `DHT_BOOTSTRAP` | none | CSV of `host:port` or multiaddrs; first given of that order wins |
//! | `--msb-dht-bootstrap` | `MSB_DHT_BOOTSTRAP` | none | CSV of `host:port` or multiaddrs for MSB |
//! | `--msb-bootstrap` | `MSB_BOOTSTRAP` | `msb-bootstrap.hex`, else none = new dev network | MSB network id to join, 64 hex |
//! | `--msb-channel` | `MSB_CHANNEL` | `msb-channel.txt`, else `trac-msb` | MSB channel (1–128 bytes) |
//! | `--msb-faucet` | `MSB_FAUCET` | none | TNK granted once to each new peer by a new dev network (`10`, `0.5`) |
//! | `--listen` | `PEER_LISTEN` | `/ip4/0.0.0.0/tcp/0` | CSV of multiaddrs or `ip:port` to listen on |
//! | `--mdns` | `PEER_MDNS` | on | LAN discovery with mDNS |
//! | `--contract` | `SUBNET_CONTRACT` | bundled Intercom | component a new subnet is created with |
//! | `--timer` | `INTERCOM_TIMER` | off | the sample timer feature |
//! | `--rpc` | `PEER_RPC` | off | the HTTP RPC ([`crate::rpc`]) |
//! | `--rpc-host` | `PEER_RPC_HOST` | `127.0.0.1` | the RPC's IP address |
//! | `--rpc-port` | `PEER_RPC_PORT` | `5001` | the RPC's port (0: any free port) |
//! | `--api-tx-exposed` | `PEER_API_TX_EXPOSED` | off | `POST /v1/contract/tx` may submit (not only simulate) |
//! | `--rpc-allow-origin` | `PEER_RPC_ALLOW_ORIGIN` | `*` | the CORS allowed origin |
//! | `--rpc-max-body-bytes` | `PEER_RPC_MAX_BODY_BYTES` | `1000000` | largest request body (1 B–64 MiB) |
//!
//! Sidechannels ([`ScConfig`]; `SIDECHANNEL_*` variables, as the reference runner):
//!
//! | Flag | Environment | Default | Meaning |
//! |---|---|---|---|
//! | `--sidechannels`, `--sidechannel` | `SIDECHANNELS` | none | CSV of extra channels joined at start |
//! | `--sidechannel-debug` | `SIDECHANNEL_DEBUG` | off | log every drop and decision |
//! | `--sidechannel-quiet` | `SIDECHANNEL_QUIET` | off | do not print received messages (still relayed) |
//! | `--sidechannel-max-bytes` | `SIDECHANNEL_MAX_BYTES` | `256000` | largest frame sent **and** received |
//! | `--sidechannel-allow-remote-open` | `SIDECHANNEL_ALLOW_REMOTE_OPEN` | on | act on open requests |
//! | `--sidechannel-auto-join` | `SIDECHANNEL_AUTO_JOIN` | off | join channels an accepted open request names |
//! | `--sidechannel-pow` | `SIDECHANNEL_POW` | on | proof of work on frames |
//! | `--sidechannel-pow-difficulty` | `SIDECHANNEL_POW_DIFFICULTY` | `12` | leading zero bits (0–32) |
//! | `--sidechannel-pow-entry` | `SIDECHANNEL_POW_ENTRY` | off | PoW on the entry channel only |
//! | `--sidechannel-pow-channels` | `SIDECHANNEL_POW_CHANNELS` | none | PoW on these channels only |
//! | `--sidechannel-rate-bytes` | `SIDECHANNEL_RATE_BYTES` | `64000` | inbound bytes/s per peer key (0: no limit) |
//! | `--sidechannel-rate-burst` | `SIDECHANNEL_RATE_BURST` | `256000` | bucket capacity, bytes |
//! | `--sidechannel-max-strikes` | `SIDECHANNEL_MAX_STRIKES` | `3` | strikes before a block |
//! | `--sidechannel-invite-required` | `SIDECHANNEL_INVITE_REQUIRED` | off | every non-entry channel is invite-only |
//! | `--sidechannel-invite-channels` | `SIDECHANNEL_INVITE_CHANNELS` | none | invite-only channels (alone enough) |
//! | `--sidechannel-invite-prefixes` | `SIDECHANNEL_INVITE_PREFIXES` | none | invite-only name prefixes (alone enough) |
//! | `--sidechannel-inviter-keys` | `SIDECHANNEL_INVITER_KEYS` | none | CSV of trusted inviter keys |
//! | `--sidechannel-invite-ttl` | `SIDECHANNEL_INVITE_TTL` | `604800` | default invite lifetime, seconds |
//! | `--sidechannel-owner` | `SIDECHANNEL_OWNER` | none | CSV of `channel:owner-key` |
//! | `--sidechannel-owner-write-only` | `SIDECHANNEL_OWNER_WRITE_ONLY` | off | only owners write on non-entry channels |
//! | `--sidechannel-owner-write-channels` | `SIDECHANNEL_OWNER_WRITE_CHANNELS` | none | owner-only channels |
//! | `--sidechannel-welcome` | `SIDECHANNEL_WELCOME` | none | CSV of `channel:<welcome>` (base64 or `@file`) |
//! | `--sidechannel-welcome-required` | `SIDECHANNEL_WELCOME_REQUIRED` | on | non-entry channels need their owner's welcome |
//!
//! SC-Bridge ([`crate::bridge::Settings`]; docs/bridge.md):
//!
//! | Flag | Environment | Default | Meaning |
//! |---|---|---|---|
//! | `--sc-bridge` | `SC_BRIDGE` | off | the WebSocket bridge for agents |
//! | `--sc-bridge-host` | `SC_BRIDGE_HOST` | `127.0.0.1` | its IP address |
//! | `--sc-bridge-port` | `SC_BRIDGE_PORT` | `49222` | its port (0: any free port) |
//! | `--sc-bridge-token` | `SC_BRIDGE_TOKEN` | none (required with the bridge) | the clients' token |
//! | `--sc-bridge-token-file` | `SC_BRIDGE_TOKEN_FILE` | none | a file holding the token |
//! | `--sc-bridge-cli` | `SC_BRIDGE_CLI` | off | `cli` messages run terminal commands |
//! | `--sc-bridge-filter` | `SC_BRIDGE_FILTER` | empty | every client's initial word filter |
//! | `--sc-bridge-filter-channel` | `SC_BRIDGE_FILTER_CHANNEL` | none (all) | channels the filters apply to |
//! | `--sc-bridge-debug` | `SC_BRIDGE_DEBUG` | off | log every bridge message |
//! | `--sc-bridge-allow-origin` | `SC_BRIDGE_ALLOW_ORIGIN` | none | browser origins allowed (CSV or `*`) |
//! | `--sc-bridge-max-clients` | `SC_BRIDGE_MAX_CLIENTS` | `16` | clients at once (1–1024) |
//! | `--sc-bridge-max-frame-bytes` | `SC_BRIDGE_MAX_FRAME_BYTES` | `1048576` | largest client frame (1 KiB–64 MiB) |
//! | `--sc-bridge-client-queue-bytes` | `SC_BRIDGE_CLIENT_QUEUE_BYTES` | `4194304` | bytes queued per client (64 KiB–1 GiB) |
//!
//! The keystore passphrase (`--passphrase`, `--passphrase-file`, `TRAC_PASSPHRASE`,
//! `TRAC_PASSPHRASE_FILE`) is resolved by the command line as for `trac keys`; without one the
//! keystores are created unencrypted.
//!
//! Fixes of the reference runner: the store label is only ever a positional argument (a flag's
//! value never becomes the store name), the command line beats `PEER_STORE_NAME` for the store
//! name, invalid booleans are errors rather than false, the joined subnet and MSB bootstraps are
//! persisted too (a restarted joiner rejoins instead of silently creating a new subnet), and the
//! peer and MSB stores may not be the same folder.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use libp2p::multiaddr::{Multiaddr, Protocol};

use crate::crypto::keystore::{self, KdfParams, KeystoreError, KeystoreInfo};
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::msb::ops::{format_amount, parse_amount};
use crate::subnet::MAX_CHANNEL_BYTES;

/// Default peer store name when neither a store label nor `--peer-store-name` is given.
pub const DEFAULT_PEER_STORE: &str = "peer";
/// Default folder holding the peer and MSB stores.
pub const DEFAULT_STORES_DIR: &str = "stores";
/// Default subnet channel.
pub const DEFAULT_SUBNET_CHANNEL: &str = "trac-peer-subnet";
/// Default MSB channel.
pub const DEFAULT_MSB_CHANNEL: &str = "trac-msb";
/// Default listen address: every IPv4 interface, a random TCP port.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/0";
/// Suffix of the default MSB store name (`<peer-store-name>-msb`).
pub const MSB_STORE_SUFFIX: &str = "-msb";
/// Keystore file name inside a store (the same file `trac keys --store <name>` works on).
pub const KEYSTORE_FILE: &str = "keypair.json";
/// File in the peer store holding the subnet bootstrap (64 lowercase hex digits and `\n`).
pub const SUBNET_BOOTSTRAP_FILE: &str = "subnet-bootstrap.hex";
/// File in the MSB store holding the MSB network id (64 lowercase hex digits and `\n`).
pub const MSB_BOOTSTRAP_FILE: &str = "msb-bootstrap.hex";
/// File in the MSB store holding the MSB channel (one line).
pub const MSB_CHANNEL_FILE: &str = "msb-channel.txt";

/// The raw command-line values of `trac run`, exactly as given (`None` when a flag is absent).
///
/// The command line fills this from its parser; [`RunConfig::resolve`] validates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// The positional store label.
    pub store_label: Option<String>,
    /// `--peer-store-name`.
    pub peer_store_name: Option<String>,
    /// `--peer-stores-directory`.
    pub peer_stores_directory: Option<String>,
    /// `--msb-store-name`.
    pub msb_store_name: Option<String>,
    /// `--msb-stores-directory`.
    pub msb_stores_directory: Option<String>,
    /// `--subnet-channel`.
    pub subnet_channel: Option<String>,
    /// `--subnet-bootstrap`.
    pub subnet_bootstrap: Option<String>,
    /// `--peer-dht-bootstrap`.
    pub peer_dht_bootstrap: Option<String>,
    /// `--dht-bootstrap`.
    pub dht_bootstrap: Option<String>,
    /// `--msb-dht-bootstrap`.
    pub msb_dht_bootstrap: Option<String>,
    /// `--msb-bootstrap`.
    pub msb_bootstrap: Option<String>,
    /// `--msb-channel`.
    pub msb_channel: Option<String>,
    /// `--msb-faucet`.
    pub msb_faucet: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--mdns` (a bare flag is `"true"`).
    pub mdns: Option<String>,
    /// `--contract`.
    pub contract: Option<String>,
    /// `--timer` (a bare flag is `"true"`).
    pub timer: Option<String>,
    /// `--rpc` (a bare flag is `"true"`).
    pub rpc: Option<String>,
    /// `--rpc-host`.
    pub rpc_host: Option<String>,
    /// `--rpc-port`.
    pub rpc_port: Option<String>,
    /// `--api-tx-exposed` (a bare flag is `"true"`).
    pub api_tx_exposed: Option<String>,
    /// `--rpc-allow-origin`.
    pub rpc_allow_origin: Option<String>,
    /// `--rpc-max-body-bytes`.
    pub rpc_max_body_bytes: Option<String>,
    /// The sidechannel flags.
    pub sidechannel: ScFlags,
    /// The SC-Bridge flags.
    pub bridge: BridgeFlags,
}

/// The SC-Bridge flags as given (each `None` when absent); `trac run` parses them directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "SC-Bridge (WebSocket JSON for agents)")]
pub struct BridgeFlags {
    /// The SC-Bridge: 1/true/yes/on or 0/false/no/off; bare = on [env: SC_BRIDGE] [default:
    /// off].
    #[arg(id = "sc_bridge", long = "sc-bridge", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enabled: Option<String>,
    /// The bridge's IP address [env: SC_BRIDGE_HOST] [default: 127.0.0.1].
    #[arg(id = "sc_bridge_host", long = "sc-bridge-host", value_name = "IP")]
    pub host: Option<String>,
    /// The bridge's port, 0 for any free one [env: SC_BRIDGE_PORT] [default: 49222].
    #[arg(id = "sc_bridge_port", long = "sc-bridge-port", value_name = "PORT")]
    pub port: Option<String>,
    /// The token clients authenticate with (visible in process listings: prefer
    /// --sc-bridge-token-file or the variable) [env: SC_BRIDGE_TOKEN].
    #[arg(id = "sc_bridge_token", long = "sc-bridge-token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace ignored) [env: SC_BRIDGE_TOKEN_FILE].
    #[arg(
        id = "sc_bridge_token_file",
        long = "sc-bridge-token-file",
        value_name = "FILE"
    )]
    pub token_file: Option<String>,
    /// Let clients run terminal commands with `cli` messages; bare = on [env: SC_BRIDGE_CLI]
    /// [default: off].
    #[arg(id = "sc_bridge_cli", long = "sc-bridge-cli", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub cli: Option<String>,
    /// Every client's word filter until it sets its own [env: SC_BRIDGE_FILTER].
    #[arg(
        id = "sc_bridge_filter",
        long = "sc-bridge-filter",
        value_name = "FILTER"
    )]
    pub filter: Option<String>,
    /// Channels the filters apply to, comma-separated (others always pass) [env:
    /// SC_BRIDGE_FILTER_CHANNEL].
    #[arg(
        id = "sc_bridge_filter_channel",
        long = "sc-bridge-filter-channel",
        value_name = "LIST"
    )]
    pub filter_channels: Option<String>,
    /// Log every bridge message and decision; bare = on [env: SC_BRIDGE_DEBUG] [default: off].
    #[arg(id = "sc_bridge_debug", long = "sc-bridge-debug", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub debug: Option<String>,
    /// Browser origins allowed to connect, comma-separated, or * [env: SC_BRIDGE_ALLOW_ORIGIN]
    /// [default: none: requests with an Origin header are refused].
    #[arg(
        id = "sc_bridge_allow_origin",
        long = "sc-bridge-allow-origin",
        value_name = "LIST"
    )]
    pub allow_origins: Option<String>,
    /// Most clients connected at once [env: SC_BRIDGE_MAX_CLIENTS] [default: 16].
    #[arg(
        id = "sc_bridge_max_clients",
        long = "sc-bridge-max-clients",
        value_name = "N"
    )]
    pub max_clients: Option<String>,
    /// Largest frame a client may send [env: SC_BRIDGE_MAX_FRAME_BYTES] [default: 1048576].
    #[arg(
        id = "sc_bridge_max_frame_bytes",
        long = "sc-bridge-max-frame-bytes",
        value_name = "BYTES"
    )]
    pub max_frame_bytes: Option<String>,
    /// Bytes of messages queued for one client before events are dropped [env:
    /// SC_BRIDGE_CLIENT_QUEUE_BYTES] [default: 4194304].
    #[arg(
        id = "sc_bridge_client_queue_bytes",
        long = "sc-bridge-client-queue-bytes",
        value_name = "BYTES"
    )]
    pub client_queue_bytes: Option<String>,
}

/// The sidechannel flags as given (each `None` when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScFlags {
    /// `--sidechannels` / `--sidechannel`.
    pub channels: Option<String>,
    /// `--sidechannel-debug`.
    pub debug: Option<String>,
    /// `--sidechannel-quiet`.
    pub quiet: Option<String>,
    /// `--sidechannel-max-bytes`.
    pub max_bytes: Option<String>,
    /// `--sidechannel-allow-remote-open`.
    pub allow_remote_open: Option<String>,
    /// `--sidechannel-auto-join`.
    pub auto_join: Option<String>,
    /// `--sidechannel-pow`.
    pub pow: Option<String>,
    /// `--sidechannel-pow-difficulty`.
    pub pow_difficulty: Option<String>,
    /// `--sidechannel-pow-entry`.
    pub pow_entry: Option<String>,
    /// `--sidechannel-pow-channels`.
    pub pow_channels: Option<String>,
    /// `--sidechannel-rate-bytes`.
    pub rate_bytes: Option<String>,
    /// `--sidechannel-rate-burst`.
    pub rate_burst: Option<String>,
    /// `--sidechannel-max-strikes`.
    pub max_strikes: Option<String>,
    /// `--sidechannel-invite-required`.
    pub invite_required: Option<String>,
    /// `--sidechannel-invite-channels`.
    pub invite_channels: Option<String>,
    /// `--sidechannel-invite-prefixes`.
    pub invite_prefixes: Option<String>,
    /// `--sidechannel-inviter-keys`.
    pub inviter_keys: Option<String>,
    /// `--sidechannel-invite-ttl`.
    pub invite_ttl: Option<String>,
    /// `--sidechannel-owner`.
    pub owners: Option<String>,
    /// `--sidechannel-owner-write-only`.
    pub owner_write_only: Option<String>,
    /// `--sidechannel-owner-write-channels`.
    pub owner_write_channels: Option<String>,
    /// `--sidechannel-welcome`.
    pub welcomes: Option<String>,
    /// `--sidechannel-welcome-required`.
    pub welcome_required: Option<String>,
}

/// The HTTP RPC's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSettings {
    /// Whether the RPC runs (`--rpc`).
    pub enabled: bool,
    /// Its IP address (`--rpc-host`).
    pub host: IpAddr,
    /// Its port; 0 picks a free one (`--rpc-port`).
    pub port: u16,
    /// Whether `POST /v1/contract/tx` may submit transactions (`--api-tx-exposed`).
    pub api_tx_exposed: bool,
    /// The CORS allowed origin (`--rpc-allow-origin`).
    pub allow_origin: String,
    /// Largest request body in bytes (`--rpc-max-body-bytes`).
    pub max_body_bytes: usize,
}

/// The sidechannel every node joins.
pub const SIDECHANNEL_ENTRY: &str = "0000intercom";

/// Default RPC port.
pub const DEFAULT_RPC_PORT: u16 = 5001;
/// Default largest RPC request body.
pub const DEFAULT_RPC_MAX_BODY: usize = 1_000_000;
/// The most `--rpc-max-body-bytes` may allow.
pub const MAX_RPC_MAX_BODY: usize = 64 << 20;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag (its name, with the dashes).
    Flag(&'static str),
    /// The positional store label.
    Positional,
    /// An environment variable.
    Env(&'static str),
    /// A file persisted in a store.
    File(PathBuf),
    /// Derived from another setting (for example `<peer-store-name>-msb`).
    Derived,
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Positional => f.write_str("store label"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Derived => f.write_str("derived"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Why the configuration, the store layout or a keystore is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid {} {value:?}: {reason}", naming(setting, origin))]
    Invalid {
        /// The setting's flag (`--mdns`).
        setting: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// `--sc-bridge` without a token.
    #[error(
        "SC-Bridge requires --sc-bridge-token (auth is mandatory); --sc-bridge-token-file, SC_BRIDGE_TOKEN or SC_BRIDGE_TOKEN_FILE keep it out of process listings"
    )]
    BridgeTokenMissing,
    /// An environment variable that is not valid UTF-8.
    #[error("environment variable {var} (for {setting}) is not valid UTF-8")]
    NotUnicode {
        /// The setting's flag.
        setting: &'static str,
        /// The variable.
        var: &'static str,
    },
    /// The store label and `--peer-store-name` disagree.
    #[error(
        "the store label {label:?} and --peer-store-name {flag:?} disagree: give only one of them"
    )]
    ConflictingStoreName {
        /// The positional label.
        label: String,
        /// The flag's value.
        flag: String,
    },
    /// The peer store and the MSB store resolve to the same folder.
    #[error(
        "the peer store and the MSB store are the same folder {0}: give --msb-store-name or --msb-stores-directory another value"
    )]
    SameStore(PathBuf),
    /// A subnet bootstrap equal to the MSB bootstrap.
    #[error("the subnet bootstrap cannot equal the MSB bootstrap ({0})")]
    SubnetEqualsMsb(Hash32),
    /// `--msb-faucet` given while joining an MSB network.
    #[error(
        "--msb-faucet only applies to a new dev MSB network: it cannot be combined with --msb-bootstrap (from {0})"
    )]
    FaucetWhenJoining(Origin),
    /// The contract file cannot be read.
    #[error("cannot read the contract file {path} (--contract): {source}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing a file of the store layout failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A keystore could not be read, unlocked or created.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

fn naming(setting: &str, origin: &Origin) -> String {
    match origin {
        Origin::Env(var) => format!("{var} (for {setting})"),
        Origin::Positional => "store label".to_string(),
        Origin::File(path) => format!("{setting} in {}", path.display()),
        _ => setting.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The application component a new subnet is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractSource {
    /// The bundled Intercom component ([`crate::bundled::INTERCOM`]).
    BundledIntercom,
    /// A component file (validated when the subnet is created).
    File(PathBuf),
}

impl ContractSource {
    /// The component's bytes (the file is read; the bundled component is borrowed).
    pub fn load(&self) -> Result<Cow<'static, [u8]>, ConfigError> {
        match self {
            ContractSource::BundledIntercom => Ok(Cow::Borrowed(crate::bundled::INTERCOM)),
            ContractSource::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|source| ConfigError::Contract {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// Checks that the file exists, is a regular file and can be opened for reading, without
    /// reading it.
    pub fn check_readable(&self) -> Result<(), ConfigError> {
        let ContractSource::File(path) = self else {
            return Ok(());
        };
        let contract_error = |source| ConfigError::Contract {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(contract_error)?;
        let meta = file.metadata().map_err(contract_error)?;
        if !meta.is_file() {
            return Err(contract_error(std::io::Error::other("not a regular file")));
        }
        Ok(())
    }
}

impl fmt::Display for ContractSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractSource::BundledIntercom => f.write_str("bundled Intercom"),
            ContractSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The validated settings of `trac run` (see the module documentation for the table).
///
/// Settings that can also come from a file persisted in the stores (the subnet bootstrap, the
/// MSB bootstrap and channel) hold only the command-line or environment value here;
/// [`StartPlan::resolve`] adds the persisted ones.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Peer store folder name (positional store label or `--peer-store-name`).
    pub peer_store_name: String,
    /// Folder holding peer stores (`--peer-stores-directory`).
    pub peer_stores_dir: PathBuf,
    /// MSB store folder name (`--msb-store-name`).
    pub msb_store_name: String,
    /// Folder holding MSB stores (`--msb-stores-directory`).
    pub msb_stores_dir: PathBuf,
    /// Channel of a new subnet (`--subnet-channel`).
    pub subnet_channel: String,
    /// Subnet to join, from the command line or environment (`--subnet-bootstrap`).
    pub subnet_bootstrap: Option<Hash32>,
    /// Peer bootstrap nodes (`--peer-dht-bootstrap` / `--dht-bootstrap`), as given.
    pub peer_dht_bootstrap: Vec<String>,
    /// MSB bootstrap nodes (`--msb-dht-bootstrap`), as given.
    pub msb_dht_bootstrap: Vec<String>,
    /// MSB network to join, from the command line or environment (`--msb-bootstrap`).
    pub msb_bootstrap: Option<Hash32>,
    /// MSB channel from the command line or environment (`--msb-channel`).
    pub msb_channel: Option<String>,
    /// Faucet grant of a new dev MSB network, base units (`--msb-faucet`).
    pub msb_faucet: Option<u128>,
    /// Listen addresses (`--listen`).
    pub listen: Vec<Multiaddr>,
    /// mDNS discovery on the LAN (`--mdns`).
    pub mdns: bool,
    /// Component of a new subnet (`--contract`).
    pub contract: ContractSource,
    /// The sample timer feature (`--timer`).
    pub timer: bool,
    /// The HTTP RPC.
    pub rpc: RpcSettings,
    /// Sidechannels.
    pub sidechannel: crate::sidechannel::Settings,
    /// The SC-Bridge.
    pub bridge: crate::bridge::Settings,
    /// Where each setting came from, by flag name (`--mdns`).
    pub origins: BTreeMap<&'static str, Origin>,
    /// Non-fatal remarks about the configuration (to print as warnings).
    pub warnings: Vec<String>,
}

/// Reads the first non-empty value among flags, then environment variables.
struct Lookup<'a> {
    env: &'a dyn Fn(&str) -> Option<OsString>,
}

/// A raw value and where it came from.
struct Raw {
    value: String,
    origin: Origin,
}

impl Lookup<'_> {
    fn first(
        &self,
        setting: &'static str,
        flags: &[(&'static str, &Option<String>)],
        envs: &[&'static str],
    ) -> Result<Option<Raw>, ConfigError> {
        for (flag, value) in flags {
            if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                return Ok(Some(Raw {
                    value: value.to_string(),
                    origin: Origin::Flag(flag),
                }));
            }
        }
        for var in envs {
            if let Some(value) = (self.env)(var) {
                let value = value
                    .into_string()
                    .map_err(|_| ConfigError::NotUnicode { setting, var })?;
                if !value.trim().is_empty() {
                    return Ok(Some(Raw {
                        value,
                        origin: Origin::Env(var),
                    }));
                }
            }
        }
        Ok(None)
    }
}

impl Raw {
    fn invalid(&self, setting: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting,
            origin: self.origin.clone(),
            value: self.value.clone(),
            reason: reason.into(),
        }
    }
}

impl RunConfig {
    /// Validates the command-line values and the environment (`env` reads one variable; pass
    /// `|k| std::env::var_os(k)` for the process environment). Reads no file but the
    /// SC-Bridge token file, when one is given.
    pub fn resolve(
        flags: &RunFlags,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<RunConfig, ConfigError> {
        let lookup = Lookup { env: &env };
        let mut origins = BTreeMap::new();
        let mut warnings = Vec::new();

        // Store names and folders.
        let label = flags
            .store_label
            .as_deref()
            .filter(|v| !v.trim().is_empty());
        let name_flag = flags
            .peer_store_name
            .as_deref()
            .filter(|v| !v.trim().is_empty());
        if let (Some(label), Some(flag)) = (label, name_flag)
            && label != flag
        {
            return Err(ConfigError::ConflictingStoreName {
                label: label.to_string(),
                flag: flag.to_string(),
            });
        }
        let peer_store = match (label, name_flag) {
            (_, Some(flag)) => Some(Raw {
                value: flag.to_string(),
                origin: Origin::Flag("--peer-store-name"),
            }),
            (Some(label), None) => Some(Raw {
                value: label.to_string(),
                origin: Origin::Positional,
            }),
            (None, None) => lookup.first("--peer-store-name", &[], &["PEER_STORE_NAME"])?,
        };
        let (peer_store_name, origin) =
            store_name("--peer-store-name", peer_store, DEFAULT_PEER_STORE)?;
        origins.insert("--peer-store-name", origin);

        let raw = lookup.first(
            "--peer-stores-directory",
            &[("--peer-stores-directory", &flags.peer_stores_directory)],
            &["PEER_STORES_DIRECTORY"],
        )?;
        let (peer_stores_dir, origin) = directory(raw);
        origins.insert("--peer-stores-directory", origin);

        let raw = lookup.first(
            "--msb-store-name",
            &[("--msb-store-name", &flags.msb_store_name)],
            &["MSB_STORE_NAME"],
        )?;
        let (msb_store_name, origin) = match raw {
            Some(raw) => store_name("--msb-store-name", Some(raw), "")?,
            None => (
                format!("{peer_store_name}{MSB_STORE_SUFFIX}"),
                Origin::Derived,
            ),
        };
        origins.insert("--msb-store-name", origin);

        let raw = lookup.first(
            "--msb-stores-directory",
            &[("--msb-stores-directory", &flags.msb_stores_directory)],
            &["MSB_STORES_DIRECTORY"],
        )?;
        let (msb_stores_dir, origin) = directory(raw);
        origins.insert("--msb-stores-directory", origin);

        if peer_stores_dir.join(&peer_store_name) == msb_stores_dir.join(&msb_store_name) {
            return Err(ConfigError::SameStore(
                peer_stores_dir.join(&peer_store_name),
            ));
        }

        // Subnet.
        let raw = lookup.first(
            "--subnet-channel",
            &[("--subnet-channel", &flags.subnet_channel)],
            &["SUBNET_CHANNEL"],
        )?;
        let (subnet_channel, origin) = channel("--subnet-channel", raw, DEFAULT_SUBNET_CHANNEL)?;
        origins.insert("--subnet-channel", origin);

        let raw = lookup.first(
            "--subnet-bootstrap",
            &[("--subnet-bootstrap", &flags.subnet_bootstrap)],
            &["SUBNET_BOOTSTRAP"],
        )?;
        let subnet_bootstrap = optional_id("--subnet-bootstrap", raw, &mut origins)?;

        // Discovery.
        let peer_flags = [
            ("--peer-dht-bootstrap", &flags.peer_dht_bootstrap),
            ("--dht-bootstrap", &flags.dht_bootstrap),
        ];
        if has_value(&flags.peer_dht_bootstrap) && has_value(&flags.dht_bootstrap) {
            warnings.push(
                "--dht-bootstrap is ignored: --peer-dht-bootstrap is given and wins".to_string(),
            );
        }
        let raw = lookup.first(
            "--peer-dht-bootstrap",
            &peer_flags,
            &["PEER_DHT_BOOTSTRAP", "DHT_BOOTSTRAP"],
        )?;
        let (peer_dht_bootstrap, origin) = bootstrap_list("--peer-dht-bootstrap", raw)?;
        origins.insert("--peer-dht-bootstrap", origin);

        let raw = lookup.first(
            "--msb-dht-bootstrap",
            &[("--msb-dht-bootstrap", &flags.msb_dht_bootstrap)],
            &["MSB_DHT_BOOTSTRAP"],
        )?;
        let (msb_dht_bootstrap, origin) = bootstrap_list("--msb-dht-bootstrap", raw)?;
        origins.insert("--msb-dht-bootstrap", origin);

        // MSB.
        let raw = lookup.first(
            "--msb-bootstrap",
            &[("--msb-bootstrap", &flags.msb_bootstrap)],
            &["MSB_BOOTSTRAP"],
        )?;
        let msb_bootstrap = optional_id("--msb-bootstrap", raw, &mut origins)?;

        let raw = lookup.first(
            "--msb-channel",
            &[("--msb-channel", &flags.msb_channel)],
            &["MSB_CHANNEL"],
        )?;
        let msb_channel = match raw {
            Some(raw) => {
                let (value, origin) = channel("--msb-channel", Some(raw), "")?;
                origins.insert("--msb-channel", origin);
                Some(value)
            }
            None => None,
        };

        let raw = lookup.first(
            "--msb-faucet",
            &[("--msb-faucet", &flags.msb_faucet)],
            &["MSB_FAUCET"],
        )?;
        let msb_faucet = match raw {
            Some(raw) => {
                let amount = parse_amount(&raw.value).map_err(|e| {
                    raw.invalid(
                        "--msb-faucet",
                        format!("expected a TNK amount like 10 or 0.5: {e}"),
                    )
                })?;
                if amount == 0 {
                    return Err(raw.invalid(
                        "--msb-faucet",
                        "a faucet grant must be more than 0 (leave --msb-faucet out for no faucet)",
                    ));
                }
                if msb_bootstrap.is_some() {
                    return Err(ConfigError::FaucetWhenJoining(
                        origins["--msb-bootstrap"].clone(),
                    ));
                }
                origins.insert("--msb-faucet", raw.origin);
                Some(amount)
            }
            None => {
                origins.insert("--msb-faucet", Origin::Default);
                None
            }
        };

        // Network.
        let raw = lookup.first("--listen", &[("--listen", &flags.listen)], &["PEER_LISTEN"])?;
        let (listen, origin) = match raw {
            Some(raw) => (listen_list(&raw)?, raw.origin),
            None => (
                vec![DEFAULT_LISTEN.parse().expect("the default listen address")],
                Origin::Default,
            ),
        };
        origins.insert("--listen", origin);

        let raw = lookup.first("--mdns", &[("--mdns", &flags.mdns)], &["PEER_MDNS"])?;
        let (mdns, origin) = boolean("--mdns", raw, true)?;
        origins.insert("--mdns", origin);

        // App.
        let raw = lookup.first(
            "--contract",
            &[("--contract", &flags.contract)],
            &["SUBNET_CONTRACT"],
        )?;
        let (contract, origin) = match raw {
            Some(raw) => (ContractSource::File(PathBuf::from(raw.value)), raw.origin),
            None => (ContractSource::BundledIntercom, Origin::Default),
        };
        origins.insert("--contract", origin);

        let raw = lookup.first("--timer", &[("--timer", &flags.timer)], &["INTERCOM_TIMER"])?;
        let (timer, origin) = boolean("--timer", raw, false)?;
        origins.insert("--timer", origin);

        let rpc = rpc_settings(flags, &lookup, &mut origins, &mut warnings)?;
        let sidechannel = sidechannel_settings(&flags.sidechannel, &lookup, &mut origins)?;
        let bridge = bridge_settings(&flags.bridge, &lookup, &mut origins, &mut warnings)?;

        Ok(RunConfig {
            peer_store_name,
            peer_stores_dir,
            msb_store_name,
            msb_stores_dir,
            subnet_channel,
            subnet_bootstrap,
            peer_dht_bootstrap,
            msb_dht_bootstrap,
            msb_bootstrap,
            msb_channel,
            msb_faucet,
            listen,
            mdns,
            contract,
            timer,
            rpc,
            sidechannel,
            bridge,
            origins,
            warnings,
        })
    }

    /// Where the setting of `flag` (`"--mdns"`) came from ([`Origin::Default`] if unknown).
    pub fn origin(&self, flag: &str) -> &Origin {
        self.origins.get(flag).unwrap_or(&Origin::Default)
    }

    /// The store layout these settings describe.
    pub fn layout(&self) -> StoreLayout {
        StoreLayout {
            peer_store: self.peer_stores_dir.join(&self.peer_store_name),
            msb_store: self.msb_stores_dir.join(&self.msb_store_name),
        }
    }
}

/// Reads the sidechannel settings (`--sidechannel*`, `SIDECHANNEL_*`).
struct ScReader<'a, 'b> {
    lookup: &'a Lookup<'b>,
    origins: &'a mut BTreeMap<&'static str, Origin>,
}

impl ScReader<'_, '_> {
    fn raw(
        &mut self,
        flag: &'static str,
        value: &Option<String>,
        env: &'static str,
    ) -> Result<Option<Raw>, ConfigError> {
        let raw = self.lookup.first(flag, &[(flag, value)], &[env])?;
        self.origins.insert(
            flag,
            raw.as_ref().map_or(Origin::Default, |r| r.origin.clone()),
        );
        Ok(raw)
    }

    fn boolean(
        &mut self,
        flag: &'static str,
        value: &Option<String>,
        env: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        let raw = self.raw(flag, value, env)?;
        Ok(boolean(flag, raw, default)?.0)
    }

    fn integer(
        &mut self,
        flag: &'static str,
        value: &Option<String>,
        env: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(raw) = self.raw(flag, value, env)? else {
            return Ok(default);
        };
        raw.value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                raw.invalid(
                    flag,
                    format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    fn list(
        &mut self,
        flag: &'static str,
        value: &Option<String>,
        env: &'static str,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = self.raw(flag, value, env)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in csv(&raw.value) {
            if entry.len() > 128 || entry.chars().any(char::is_control) {
                return Err(raw.invalid(
                    flag,
                    format!(
                        "{entry:?} is not a channel name (1 to 128 bytes, no control characters)"
                    ),
                ));
            }
            out.push(entry.to_string());
        }
        Ok(out)
    }

    fn keys(
        &mut self,
        flag: &'static str,
        value: &Option<String>,
        env: &'static str,
    ) -> Result<Vec<PublicKey>, ConfigError> {
        let Some(raw) = self.raw(flag, value, env)? else {
            return Ok(Vec::new());
        };
        csv(&raw.value)
            .map(|k| {
                PublicKey::from_hex(&k.to_ascii_lowercase())
                    .map_err(|_| raw.invalid(flag, format!("{k:?} is not a 64-hex-digit key")))
            })
            .collect()
    }

    /// `channel:value` pairs (the value after the first `:`).
    fn pairs(
        &mut self,
        flag: &'static str,
        value: &Option<String>,
        env: &'static str,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(raw) = self.raw(flag, value, env)? else {
            return Ok(Vec::new());
        };
        csv(&raw.value)
            .map(|entry| {
                entry
                    .split_once(':')
                    .filter(|(c, v)| !c.trim().is_empty() && !v.trim().is_empty())
                    .map(|(c, v)| (c.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| raw.invalid(flag, format!("{entry:?} is not channel:value")))
            })
            .collect()
    }
}

/// The sidechannel settings: every flag over the engine's defaults, checked by
/// [`crate::sidechannel::Settings::validate`]; startup welcomes are read (base64 or `@file`)
/// and decoded here.
fn sidechannel_settings(
    flags: &ScFlags,
    lookup: &Lookup<'_>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<crate::sidechannel::Settings, ConfigError> {
    let mut r = ScReader { lookup, origins };
    let channels = r.list("--sidechannels", &flags.channels, "SIDECHANNELS")?;
    let owners = r
        .pairs("--sidechannel-owner", &flags.owners, "SIDECHANNEL_OWNER")?
        .into_iter()
        .map(|(channel, key)| {
            PublicKey::from_hex(&key.to_ascii_lowercase())
                .map(|k| (channel.clone(), k))
                .map_err(|_| ConfigError::Invalid {
                    setting: "--sidechannel-owner",
                    origin: r
                        .origins
                        .get("--sidechannel-owner")
                        .cloned()
                        .unwrap_or(Origin::Default),
                    value: format!("{channel}:{key}"),
                    reason: "the owner must be a 64-hex-digit key".into(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let welcomes = r
        .pairs(
            "--sidechannel-welcome",
            &flags.welcomes,
            "SIDECHANNEL_WELCOME",
        )?
        .into_iter()
        .map(|(channel, text)| {
            crate::node::sidechannel::parse_welcome(&text)
                .map(|w| (channel.clone(), w))
                .map_err(|reason| ConfigError::Invalid {
                    setting: "--sidechannel-welcome",
                    origin: Origin::Default,
                    value: format!("{channel}:{text}"),
                    reason,
                })
        })
        .collect::<Result<_, _>>()?;
    let settings = crate::sidechannel::Settings {
        extras: channels
            .into_iter()
            .filter(|c| c != SIDECHANNEL_ENTRY)
            .collect(),
        debug: r.boolean(
            "--sidechannel-debug",
            &flags.debug,
            "SIDECHANNEL_DEBUG",
            false,
        )?,
        quiet: r.boolean(
            "--sidechannel-quiet",
            &flags.quiet,
            "SIDECHANNEL_QUIET",
            false,
        )?,
        max_message_bytes: r.integer(
            "--sidechannel-max-bytes",
            &flags.max_bytes,
            "SIDECHANNEL_MAX_BYTES",
            256_000,
            crate::sidechannel::policy::MIN_MESSAGE_BYTES as u64
                ..=crate::sidechannel::policy::MAX_MESSAGE_BYTES as u64,
        )? as usize,
        allow_remote_open: r.boolean(
            "--sidechannel-allow-remote-open",
            &flags.allow_remote_open,
            "SIDECHANNEL_ALLOW_REMOTE_OPEN",
            true,
        )?,
        auto_join: r.boolean(
            "--sidechannel-auto-join",
            &flags.auto_join,
            "SIDECHANNEL_AUTO_JOIN",
            false,
        )?,
        pow: r.boolean("--sidechannel-pow", &flags.pow, "SIDECHANNEL_POW", true)?,
        pow_difficulty: r.integer(
            "--sidechannel-pow-difficulty",
            &flags.pow_difficulty,
            "SIDECHANNEL_POW_DIFFICULTY",
            12,
            0..=32,
        )? as u8,
        pow_entry: r.boolean(
            "--sidechannel-pow-entry",
            &flags.pow_entry,
            "SIDECHANNEL_POW_ENTRY",
            false,
        )?,
        pow_channels: r.list(
            "--sidechannel-pow-channels",
            &flags.pow_channels,
            "SIDECHANNEL_POW_CHANNELS",
        )?,
        rate_bytes: r.integer(
            "--sidechannel-rate-bytes",
            &flags.rate_bytes,
            "SIDECHANNEL_RATE_BYTES",
            64_000,
            0..=(1 << 30),
        )?,
        rate_burst: r.integer(
            "--sidechannel-rate-burst",
            &flags.rate_burst,
            "SIDECHANNEL_RATE_BURST",
            256_000,
            1..=(1 << 30),
        )?,
        max_strikes: r.integer(
            "--sidechannel-max-strikes",
            &flags.max_strikes,
            "SIDECHANNEL_MAX_STRIKES",
            3,
            1..=1000,
        )? as u32,
        invite_required: r.boolean(
            "--sidechannel-invite-required",
            &flags.invite_required,
            "SIDECHANNEL_INVITE_REQUIRED",
            false,
        )?,
        invite_channels: r.list(
            "--sidechannel-invite-channels",
            &flags.invite_channels,
            "SIDECHANNEL_INVITE_CHANNELS",
        )?,
        invite_prefixes: r.list(
            "--sidechannel-invite-prefixes",
            &flags.invite_prefixes,
            "SIDECHANNEL_INVITE_PREFIXES",
        )?,
        inviter_keys: r.keys(
            "--sidechannel-inviter-keys",
            &flags.inviter_keys,
            "SIDECHANNEL_INVITER_KEYS",
        )?,
        invite_ttl_ms: 1000
            * r.integer(
                "--sidechannel-invite-ttl",
                &flags.invite_ttl,
                "SIDECHANNEL_INVITE_TTL",
                604_800,
                1..=(10 * 365 * 86_400),
            )?,
        owners: owners.into_iter().collect(),
        owner_write_only: r.boolean(
            "--sidechannel-owner-write-only",
            &flags.owner_write_only,
            "SIDECHANNEL_OWNER_WRITE_ONLY",
            false,
        )?,
        owner_write_channels: r.list(
            "--sidechannel-owner-write-channels",
            &flags.owner_write_channels,
            "SIDECHANNEL_OWNER_WRITE_CHANNELS",
        )?,
        welcomes,
        welcome_required: r.boolean(
            "--sidechannel-welcome-required",
            &flags.welcome_required,
            "SIDECHANNEL_WELCOME_REQUIRED",
            true,
        )?,
        ..crate::sidechannel::Settings::default()
    };
    settings.validate().map_err(|e| ConfigError::Invalid {
        setting: "--sidechannel-*",
        origin: Origin::Default,
        value: String::new(),
        reason: e.to_string(),
    })?;
    Ok(settings)
}

/// The SC-Bridge settings (`--sc-bridge*`): a running bridge needs a token (flag, then token
/// file flag, then `SC_BRIDGE_TOKEN`, then `SC_BRIDGE_TOKEN_FILE`).
fn bridge_settings(
    flags: &BridgeFlags,
    lookup: &Lookup<'_>,
    origins: &mut BTreeMap<&'static str, Origin>,
    warnings: &mut Vec<String>,
) -> Result<crate::bridge::Settings, ConfigError> {
    use crate::bridge::{
        DEFAULT_CLIENT_QUEUE_BYTES, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_PORT,
    };
    let mut r = ScReader { lookup, origins };
    let enabled = r.boolean("--sc-bridge", &flags.enabled, "SC_BRIDGE", false)?;
    let host = match r.raw("--sc-bridge-host", &flags.host, "SC_BRIDGE_HOST")? {
        Some(raw) => raw.value.trim().parse::<IpAddr>().map_err(|_| {
            raw.invalid(
                "--sc-bridge-host",
                "expected an IP address like 127.0.0.1 or ::1",
            )
        })?,
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let port = r.integer(
        "--sc-bridge-port",
        &flags.port,
        "SC_BRIDGE_PORT",
        u64::from(DEFAULT_PORT),
        0..=65_535,
    )? as u16;
    let token = bridge_token(flags, &mut r)?;
    let cli = r.boolean("--sc-bridge-cli", &flags.cli, "SC_BRIDGE_CLI", false)?;
    let filter = r
        .raw("--sc-bridge-filter", &flags.filter, "SC_BRIDGE_FILTER")?
        .map(|raw| raw.value.trim().to_string())
        .unwrap_or_default();
    let filter_channels = r.list(
        "--sc-bridge-filter-channel",
        &flags.filter_channels,
        "SC_BRIDGE_FILTER_CHANNEL",
    )?;
    let debug = r.boolean("--sc-bridge-debug", &flags.debug, "SC_BRIDGE_DEBUG", false)?;
    let allow_origins = match r.raw(
        "--sc-bridge-allow-origin",
        &flags.allow_origins,
        "SC_BRIDGE_ALLOW_ORIGIN",
    )? {
        Some(raw) => csv(&raw.value)
            .map(|origin| {
                if origin == "*" || axum::http::HeaderValue::from_str(origin).is_ok() {
                    Ok(origin.to_string())
                } else {
                    Err(raw.invalid(
                        "--sc-bridge-allow-origin",
                        "expected * or origins like http://localhost:3000",
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let max_clients = r.integer(
        "--sc-bridge-max-clients",
        &flags.max_clients,
        "SC_BRIDGE_MAX_CLIENTS",
        DEFAULT_MAX_CLIENTS as u64,
        1..=1024,
    )? as usize;
    let max_frame_bytes = r.integer(
        "--sc-bridge-max-frame-bytes",
        &flags.max_frame_bytes,
        "SC_BRIDGE_MAX_FRAME_BYTES",
        DEFAULT_MAX_FRAME_BYTES as u64,
        1024..=(64 << 20),
    )? as usize;
    let client_queue_bytes = r.integer(
        "--sc-bridge-client-queue-bytes",
        &flags.client_queue_bytes,
        "SC_BRIDGE_CLIENT_QUEUE_BYTES",
        DEFAULT_CLIENT_QUEUE_BYTES as u64,
        (64 << 10)..=(1 << 30),
    )? as usize;
    if enabled && token.is_none() {
        return Err(ConfigError::BridgeTokenMissing);
    }
    if enabled && token.as_ref().is_some_and(|t| t.chars().count() < 16) {
        warnings.push(
            "the SC-Bridge token is shorter than 16 characters: use a long random token"
                .to_string(),
        );
    }
    if !enabled && (token.is_some() || cli) {
        warnings.push(
            "--sc-bridge-token and --sc-bridge-cli have no effect without --sc-bridge".to_string(),
        );
    }
    Ok(crate::bridge::Settings {
        enabled,
        host,
        port,
        token,
        cli,
        filter,
        filter_channels,
        debug,
        allow_origins,
        max_clients,
        max_frame_bytes,
        client_queue_bytes,
    })
}

/// The bridge token: `--sc-bridge-token`, `--sc-bridge-token-file`, `SC_BRIDGE_TOKEN`,
/// `SC_BRIDGE_TOKEN_FILE`, the first given.
fn bridge_token(
    flags: &BridgeFlags,
    r: &mut ScReader<'_, '_>,
) -> Result<Option<String>, ConfigError> {
    const SETTING: &str = "--sc-bridge-token";
    let raw = r.lookup.first(
        SETTING,
        &[
            ("--sc-bridge-token", &flags.token),
            ("--sc-bridge-token-file", &flags.token_file),
        ],
        &["SC_BRIDGE_TOKEN", "SC_BRIDGE_TOKEN_FILE"],
    )?;
    let Some(raw) = raw else {
        r.origins.insert(SETTING, Origin::Default);
        return Ok(None);
    };
    r.origins.insert(SETTING, raw.origin.clone());
    let from_file = matches!(
        raw.origin,
        Origin::Flag("--sc-bridge-token-file") | Origin::Env("SC_BRIDGE_TOKEN_FILE")
    );
    let token = if from_file {
        let path = raw.value.trim();
        std::fs::read_to_string(path)
            .map_err(|e| raw.invalid(SETTING, format!("cannot read the token file: {e}")))?
            .trim()
            .to_string()
    } else {
        raw.value.trim().to_string()
    };
    if token.is_empty() {
        return Err(raw.invalid(SETTING, "the token is empty"));
    }
    Ok(Some(token))
}

/// The RPC settings (`--rpc*`, `--api-tx-exposed`).
fn rpc_settings(
    flags: &RunFlags,
    lookup: &Lookup<'_>,
    origins: &mut BTreeMap<&'static str, Origin>,
    warnings: &mut Vec<String>,
) -> Result<RpcSettings, ConfigError> {
    let raw = lookup.first("--rpc", &[("--rpc", &flags.rpc)], &["PEER_RPC"])?;
    let (enabled, origin) = boolean("--rpc", raw, false)?;
    origins.insert("--rpc", origin);

    let raw = lookup.first(
        "--rpc-host",
        &[("--rpc-host", &flags.rpc_host)],
        &["PEER_RPC_HOST"],
    )?;
    let host = match raw {
        Some(raw) => {
            let host = raw.value.trim().parse::<IpAddr>().map_err(|_| {
                raw.invalid("--rpc-host", "expected an IP address like 127.0.0.1 or ::1")
            })?;
            origins.insert("--rpc-host", raw.origin);
            host
        }
        None => {
            origins.insert("--rpc-host", Origin::Default);
            IpAddr::from([127, 0, 0, 1])
        }
    };

    let raw = lookup.first(
        "--rpc-port",
        &[("--rpc-port", &flags.rpc_port)],
        &["PEER_RPC_PORT"],
    )?;
    let port = match raw {
        Some(raw) => {
            let port = raw.value.trim().parse::<u16>().map_err(|_| {
                raw.invalid(
                    "--rpc-port",
                    "expected a port from 0 to 65535 (0: any free port)",
                )
            })?;
            origins.insert("--rpc-port", raw.origin);
            port
        }
        None => {
            origins.insert("--rpc-port", Origin::Default);
            DEFAULT_RPC_PORT
        }
    };

    let raw = lookup.first(
        "--api-tx-exposed",
        &[("--api-tx-exposed", &flags.api_tx_exposed)],
        &["PEER_API_TX_EXPOSED"],
    )?;
    let (api_tx_exposed, origin) = boolean("--api-tx-exposed", raw, false)?;
    origins.insert("--api-tx-exposed", origin);
    if api_tx_exposed && !enabled {
        warnings.push("--api-tx-exposed has no effect without --rpc".to_string());
    }

    let raw = lookup.first(
        "--rpc-allow-origin",
        &[("--rpc-allow-origin", &flags.rpc_allow_origin)],
        &["PEER_RPC_ALLOW_ORIGIN"],
    )?;
    let allow_origin = match raw {
        Some(raw) => {
            let value = raw.value.trim().to_string();
            if value != "*" && axum::http::HeaderValue::from_str(&value).is_err() {
                return Err(raw.invalid(
                    "--rpc-allow-origin",
                    "expected * or an origin like https://app.example",
                ));
            }
            origins.insert("--rpc-allow-origin", raw.origin);
            value
        }
        None => {
            origins.insert("--rpc-allow-origin", Origin::Default);
            "*".to_string()
        }
    };

    let raw = lookup.first(
        "--rpc-max-body-bytes",
        &[("--rpc-max-body-bytes", &flags.rpc_max_body_bytes)],
        &["PEER_RPC_MAX_BODY_BYTES"],
    )?;
    let max_body_bytes = match raw {
        Some(raw) => {
            let bytes = raw
                .value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|b| (1..=MAX_RPC_MAX_BODY).contains(b))
                .ok_or_else(|| {
                    raw.invalid(
                        "--rpc-max-body-bytes",
                        format!("expected a whole number of bytes from 1 to {MAX_RPC_MAX_BODY}"),
                    )
                })?;
            origins.insert("--rpc-max-body-bytes", raw.origin);
            bytes
        }
        None => {
            origins.insert("--rpc-max-body-bytes", Origin::Default);
            DEFAULT_RPC_MAX_BODY
        }
    };
    Ok(RpcSettings {
        enabled,
        host,
        port,
        api_tx_exposed,
        allow_origin,
        max_body_bytes,
    })
}

fn has_value(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.trim().is_empty())
}

fn store_name(
    setting: &'static str,
    raw: Option<Raw>,
    default: &str,
) -> Result<(String, Origin), ConfigError> {
    let Some(raw) = raw else {
        return Ok((default.to_string(), Origin::Default));
    };
    let name = raw.value.trim();
    if name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Err(raw.invalid(
            setting,
            "a store name is a folder name (no slashes, not . or ..)",
        ));
    }
    Ok((name.to_string(), raw.origin))
}

fn directory(raw: Option<Raw>) -> (PathBuf, Origin) {
    match raw {
        Some(raw) => (PathBuf::from(raw.value.trim()), raw.origin),
        None => (PathBuf::from(DEFAULT_STORES_DIR), Origin::Default),
    }
}

fn channel(
    setting: &'static str,
    raw: Option<Raw>,
    default: &str,
) -> Result<(String, Origin), ConfigError> {
    let Some(raw) = raw else {
        return Ok((default.to_string(), Origin::Default));
    };
    check_channel(&raw.value).map_err(|reason| raw.invalid(setting, reason))?;
    Ok((raw.value.clone(), raw.origin))
}

fn check_channel(channel: &str) -> Result<(), String> {
    if channel.is_empty()
        || channel.len() > MAX_CHANNEL_BYTES
        || channel.chars().any(char::is_control)
    {
        return Err(format!(
            "a channel is 1 to {MAX_CHANNEL_BYTES} bytes without control characters (got {} bytes)",
            channel.len()
        ));
    }
    Ok(())
}

/// Parses a 32-byte id given as 64 hex digits (surrounding whitespace allowed, any case).
fn parse_id(text: &str) -> Result<Hash32, String> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(format!(
            "expected 32 bytes as 64 hex digits, got {} characters",
            text.chars().count()
        ));
    }
    Hash32::from_hex(text).map_err(|_| "expected 64 hex digits (0-9, a-f)".to_string())
}

fn optional_id(
    setting: &'static str,
    raw: Option<Raw>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<Option<Hash32>, ConfigError> {
    match raw {
        Some(raw) => {
            let id = parse_id(&raw.value).map_err(|reason| raw.invalid(setting, reason))?;
            origins.insert(setting, raw.origin);
            Ok(Some(id))
        }
        None => {
            origins.insert(setting, Origin::Default);
            Ok(None)
        }
    }
}

fn boolean(
    setting: &'static str,
    raw: Option<Raw>,
    default: bool,
) -> Result<(bool, Origin), ConfigError> {
    let Some(raw) = raw else {
        return Ok((default, Origin::Default));
    };
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok((true, raw.origin)),
        "0" | "false" | "no" | "off" => Ok((false, raw.origin)),
        _ => {
            let mut reason =
                "expected a boolean: 1, true, yes, on or 0, false, no, off".to_string();
            if matches!(raw.origin, Origin::Flag(_)) {
                reason.push_str(&format!(
                    " (a store label goes before the flags; a bare {setting} followed by a label reads the label as its value)"
                ));
            }
            Err(raw.invalid(setting, reason))
        }
    }
}

fn csv(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Splits `host:port` (`[v6]:port` for IPv6) into host and port.
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn has_tcp(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::Tcp(_)))
}

fn bootstrap_list(
    setting: &'static str,
    raw: Option<Raw>,
) -> Result<(Vec<String>, Origin), ConfigError> {
    let Some(raw) = raw else {
        return Ok((Vec::new(), Origin::Default));
    };
    let mut out = Vec::new();
    for entry in csv(&raw.value) {
        let bad = |reason: &str| ConfigError::Invalid {
            setting,
            origin: raw.origin.clone(),
            value: entry.to_string(),
            reason: reason.to_string(),
        };
        if entry.starts_with('/') {
            let addr: Multiaddr = entry
                .parse()
                .map_err(|_| bad("not a valid multiaddr (like /ip4/10.0.0.1/tcp/4001)"))?;
            if !has_tcp(&addr) {
                return Err(bad("the multiaddr has no /tcp/<port>"));
            }
        } else {
            let (host, port) =
                split_host_port(entry).ok_or_else(|| bad("expected host:port or a multiaddr"))?;
            if port == 0 {
                return Err(bad("a bootstrap node's port cannot be 0"));
            }
            if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
                return Err(bad("the host is neither an IP address nor a DNS name"));
            }
        }
        out.push(entry.to_string());
    }
    Ok((out, raw.origin))
}

/// Parses one listen address: a multiaddr with an IP and a TCP port, or `ip:port`.
fn listen_addr(entry: &str) -> Result<Multiaddr, &'static str> {
    if entry.starts_with('/') {
        let addr: Multiaddr = entry
            .parse()
            .map_err(|_| "not a valid multiaddr (like /ip4/0.0.0.0/tcp/0)")?;
        let mut protocols = addr.iter();
        let ip_ok = matches!(protocols.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
        let tcp_ok = matches!(protocols.next(), Some(Protocol::Tcp(_)));
        if !ip_ok || !tcp_ok || protocols.next().is_some() {
            return Err("a listen multiaddr is /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>");
        }
        return Ok(addr);
    }
    let (host, port) =
        split_host_port(entry).ok_or("expected a multiaddr like /ip4/0.0.0.0/tcp/0 or ip:port")?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| "a listen address needs an IP address, not a host name")?;
    let mut addr = Multiaddr::empty();
    addr.push(match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    });
    addr.push(Protocol::Tcp(port));
    Ok(addr)
}

fn listen_list(raw: &Raw) -> Result<Vec<Multiaddr>, ConfigError> {
    let mut out = Vec::new();
    for entry in csv(&raw.value) {
        let addr = listen_addr(entry).map_err(|reason| ConfigError::Invalid {
            setting: "--listen",
            origin: raw.origin.clone(),
            value: entry.to_string(),
            reason: reason.to_string(),
        })?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(raw.invalid("--listen", "no address given"));
    }
    Ok(out)
}

/// Where a node's files live.
///
/// ```text
/// <peer-stores-dir>/<peer-store>/       subnet store (LMDB)
///     keypair.json                      peer keystore: P2P identity, subnet writer key, requester
///     subnet-bootstrap.hex              the subnet this peer created or joined (64 hex + \n)
/// <msb-stores-dir>/<msb-store>/         MSB store (LMDB)
///     keypair.json                      MSB node keystore (a dev network's admin)
///     msb-bootstrap.hex                 the MSB network this node created or joined (64 hex + \n)
///     msb-channel.txt                   its channel (one line)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    /// The peer store folder.
    pub peer_store: PathBuf,
    /// The MSB store folder.
    pub msb_store: PathBuf,
}

/// A value read from a persisted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persisted<T> {
    /// No file.
    Absent,
    /// A valid value.
    Found(T),
    /// A file whose content is not valid, to be ignored with a warning.
    Ignored {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl<T> Persisted<T> {
    /// The warning to print for an ignored file.
    pub fn warning(&self) -> Option<String> {
        match self {
            Persisted::Ignored { path, reason } => {
                Some(format!("ignoring {}: {reason}", path.display()))
            }
            _ => None,
        }
    }
}

impl StoreLayout {
    /// The peer keystore (`<peer-store>/keypair.json`).
    pub fn peer_keystore(&self) -> PathBuf {
        self.peer_store.join(KEYSTORE_FILE)
    }

    /// The MSB node keystore (`<msb-store>/keypair.json`).
    pub fn msb_keystore(&self) -> PathBuf {
        self.msb_store.join(KEYSTORE_FILE)
    }

    /// The persisted subnet bootstrap (`<peer-store>/subnet-bootstrap.hex`).
    pub fn subnet_bootstrap_file(&self) -> PathBuf {
        self.peer_store.join(SUBNET_BOOTSTRAP_FILE)
    }

    /// The persisted MSB network id (`<msb-store>/msb-bootstrap.hex`).
    pub fn msb_bootstrap_file(&self) -> PathBuf {
        self.msb_store.join(MSB_BOOTSTRAP_FILE)
    }

    /// The persisted MSB channel (`<msb-store>/msb-channel.txt`).
    pub fn msb_channel_file(&self) -> PathBuf {
        self.msb_store.join(MSB_CHANNEL_FILE)
    }

    /// Creates both store folders (and their parents) if missing.
    pub fn create(&self) -> Result<(), ConfigError> {
        for dir in [&self.peer_store, &self.msb_store] {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        Ok(())
    }

    /// Reads `subnet-bootstrap.hex`: valid only if it holds exactly 64 hex digits after
    /// trimming (any case).
    pub fn read_subnet_bootstrap(&self) -> Result<Persisted<Hash32>, ConfigError> {
        read_id_file(&self.subnet_bootstrap_file())
    }

    /// Writes `subnet-bootstrap.hex` (64 lowercase hex digits and `\n`) atomically.
    pub fn write_subnet_bootstrap(&self, id: &Hash32) -> Result<(), ConfigError> {
        write_atomic(&self.subnet_bootstrap_file(), format!("{id}\n").as_bytes())
    }

    /// Reads `msb-bootstrap.hex` (same rules as [`StoreLayout::read_subnet_bootstrap`]).
    pub fn read_msb_bootstrap(&self) -> Result<Persisted<Hash32>, ConfigError> {
        read_id_file(&self.msb_bootstrap_file())
    }

    /// Reads `msb-channel.txt`: its first line must be a valid channel.
    pub fn read_msb_channel(&self) -> Result<Persisted<String>, ConfigError> {
        let path = self.msb_channel_file();
        let Some(text) = read_optional(&path)? else {
            return Ok(Persisted::Absent);
        };
        let line = text.lines().next().unwrap_or("");
        Ok(match check_channel(line) {
            Ok(()) => Persisted::Found(line.to_string()),
            Err(reason) => Persisted::Ignored { path, reason },
        })
    }

    /// Writes `msb-bootstrap.hex` and `msb-channel.txt` atomically (each file on its own).
    pub fn write_msb_network(&self, id: &Hash32, channel: &str) -> Result<(), ConfigError> {
        write_atomic(&self.msb_bootstrap_file(), format!("{id}\n").as_bytes())?;
        write_atomic(&self.msb_channel_file(), format!("{channel}\n").as_bytes())
    }
}

/// Reads a file that may be missing; `None` if it is.
fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_id_file(path: &Path) -> Result<Persisted<Hash32>, ConfigError> {
    let Some(text) = read_optional(path)? else {
        return Ok(Persisted::Absent);
    };
    let text = text.trim().to_ascii_lowercase();
    Ok(
        match (text.len() == 64)
            .then(|| Hash32::from_hex(&text).ok())
            .flatten()
        {
            Some(id) => Persisted::Found(id),
            None => Persisted::Ignored {
                path: path.to_path_buf(),
                reason: format!(
                    "expected exactly 64 hex digits, found {} characters{}",
                    text.chars().count(),
                    if text.len() == 64 {
                        " that are not all hex digits"
                    } else {
                        ""
                    }
                ),
            },
        },
    )
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.as_file().sync_all().map_err(io_error(path))?;
    file.persist(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// How this start joins the MSB network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsbStart {
    /// No MSB bootstrap given or persisted: create a new dev network (this node is its admin,
    /// indexer and validator).
    CreateDev {
        /// What the faucet grants each new peer once, base units.
        faucet: Option<u128>,
    },
    /// Join (or resume) the network with this id.
    Existing {
        /// The network id.
        bootstrap: Hash32,
        /// Where it came from (flag, environment or `msb-bootstrap.hex`).
        origin: Origin,
    },
}

impl MsbStart {
    /// The network id, if known before the node starts.
    pub fn bootstrap(&self) -> Option<Hash32> {
        match self {
            MsbStart::CreateDev { .. } => None,
            MsbStart::Existing { bootstrap, .. } => Some(*bootstrap),
        }
    }
}

/// How this start joins the subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetStart {
    /// No subnet bootstrap given or persisted: create a new subnet with this component.
    Create {
        /// The app component.
        contract: ContractSource,
    },
    /// Join (or resume) the subnet with this id.
    Existing {
        /// The subnet id.
        bootstrap: Hash32,
        /// Where it came from (flag, environment or `subnet-bootstrap.hex`).
        origin: Origin,
    },
}

impl SubnetStart {
    /// The subnet id, if known before the node starts.
    pub fn bootstrap(&self) -> Option<Hash32> {
        match self {
            SubnetStart::Create { .. } => None,
            SubnetStart::Existing { bootstrap, .. } => Some(*bootstrap),
        }
    }
}

/// The settings combined with what the stores hold: what this start will do.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// The folders and files.
    pub layout: StoreLayout,
    /// The MSB network.
    pub msb: MsbStart,
    /// The MSB channel.
    pub msb_channel: String,
    /// Where the MSB channel came from.
    pub msb_channel_origin: Origin,
    /// The subnet.
    pub subnet: SubnetStart,
    /// Non-fatal remarks (ignored files, ignored settings), to print as warnings.
    pub warnings: Vec<String>,
}

impl StartPlan {
    /// Reads the persisted bootstrap files and decides what to create and what to join. Checks
    /// that a contract file is readable. Writes nothing.
    pub fn resolve(config: &RunConfig) -> Result<StartPlan, ConfigError> {
        let layout = config.layout();
        let mut warnings = Vec::new();
        config.contract.check_readable()?;

        // MSB network and channel: command line or environment, then the persisted files.
        let persisted_msb = layout.read_msb_bootstrap()?;
        warnings.extend(persisted_msb.warning());
        let msb = match (config.msb_bootstrap, &persisted_msb) {
            (Some(bootstrap), persisted) => {
                if let Persisted::Found(old) = persisted
                    && *old != bootstrap
                {
                    warnings.push(format!(
                        "the MSB store {} was used with MSB network {old}; --msb-bootstrap {bootstrap} replaces it",
                        layout.msb_store.display()
                    ));
                }
                MsbStart::Existing {
                    bootstrap,
                    origin: config.origin("--msb-bootstrap").clone(),
                }
            }
            (None, Persisted::Found(bootstrap)) => {
                if config.msb_faucet.is_some() {
                    warnings.push(format!(
                        "--msb-faucet is ignored: the MSB network {bootstrap} already exists (its faucet is fixed at creation)"
                    ));
                }
                MsbStart::Existing {
                    bootstrap: *bootstrap,
                    origin: Origin::File(layout.msb_bootstrap_file()),
                }
            }
            (None, _) => MsbStart::CreateDev {
                faucet: config.msb_faucet,
            },
        };
        let (msb_channel, msb_channel_origin) = match &config.msb_channel {
            Some(channel) => (channel.clone(), config.origin("--msb-channel").clone()),
            None => {
                // The persisted channel belongs with the persisted network only.
                let persisted = match (&msb, &persisted_msb) {
                    (MsbStart::Existing { bootstrap, .. }, Persisted::Found(old))
                        if bootstrap == old =>
                    {
                        layout.read_msb_channel()?
                    }
                    _ => Persisted::Absent,
                };
                warnings.extend(persisted.warning());
                match persisted {
                    Persisted::Found(channel) => (channel, Origin::File(layout.msb_channel_file())),
                    _ => (DEFAULT_MSB_CHANNEL.to_string(), Origin::Default),
                }
            }
        };

        // Subnet: command line or environment, then subnet-bootstrap.hex, else create.
        let persisted_subnet = layout.read_subnet_bootstrap()?;
        warnings.extend(persisted_subnet.warning());
        let subnet = match (config.subnet_bootstrap, persisted_subnet) {
            (Some(bootstrap), persisted) => {
                if let Persisted::Found(old) = persisted
                    && old != bootstrap
                {
                    warnings.push(format!(
                        "{} holds subnet {old}; --subnet-bootstrap {bootstrap} replaces it (keep the old id if you still need that subnet)",
                        layout.subnet_bootstrap_file().display()
                    ));
                }
                SubnetStart::Existing {
                    bootstrap,
                    origin: config.origin("--subnet-bootstrap").clone(),
                }
            }
            (None, Persisted::Found(bootstrap)) => SubnetStart::Existing {
                bootstrap,
                origin: Origin::File(layout.subnet_bootstrap_file()),
            },
            (None, _) => SubnetStart::Create {
                contract: config.contract.clone(),
            },
        };
        if let SubnetStart::Existing { bootstrap, .. } = &subnet {
            if config.origin("--contract") != &Origin::Default {
                warnings.push(format!(
                    "--contract is ignored: the subnet {bootstrap} exists (its app is set at creation)"
                ));
            }
            if config.origin("--subnet-channel") != &Origin::Default {
                warnings.push(format!(
                    "--subnet-channel is ignored: the subnet {bootstrap} exists (its channel is set at creation)"
                ));
            }
        }
        if let (Some(subnet), Some(msb)) = (subnet.bootstrap(), msb.bootstrap())
            && subnet == msb
        {
            return Err(ConfigError::SubnetEqualsMsb(subnet));
        }
        Ok(StartPlan {
            layout,
            msb,
            msb_channel,
            msb_channel_origin,
            subnet,
            warnings,
        })
    }

    /// Persists the bootstraps this start was given on the command line or in the environment
    /// (a joiner's subnet and MSB network), so that a restart without the flags rejoins them.
    /// Creates the store folders. Files that already hold the same value are left alone.
    pub fn persist_joined(&self) -> Result<(), ConfigError> {
        self.layout.create()?;
        if let SubnetStart::Existing { bootstrap, .. } = &self.subnet
            && self.layout.read_subnet_bootstrap()? != Persisted::Found(*bootstrap)
        {
            self.layout.write_subnet_bootstrap(bootstrap)?;
        }
        if let MsbStart::Existing { bootstrap, .. } = &self.msb {
            let same = self.layout.read_msb_bootstrap()? == Persisted::Found(*bootstrap)
                && self.layout.read_msb_channel()? == Persisted::Found(self.msb_channel.clone());
            if !same {
                self.layout
                    .write_msb_network(bootstrap, &self.msb_channel)?;
            }
        }
        Ok(())
    }

    /// The resolved settings for display: `(flag, value, origin)` in table order.
    pub fn settings(&self, config: &RunConfig) -> Vec<(&'static str, String, Origin)> {
        let o = |flag: &str| config.origin(flag).clone();
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_string()
            } else {
                items.join(", ")
            }
        };
        let (msb_bootstrap, msb_origin) = match &self.msb {
            MsbStart::CreateDev { .. } => ("new dev network".to_string(), Origin::Default),
            MsbStart::Existing { bootstrap, origin } => (bootstrap.to_hex(), origin.clone()),
        };
        let (subnet_bootstrap, subnet_origin) = match &self.subnet {
            SubnetStart::Create { .. } => ("new subnet".to_string(), Origin::Default),
            SubnetStart::Existing { bootstrap, origin } => (bootstrap.to_hex(), origin.clone()),
        };
        let on_off = |b: bool| if b { "on" } else { "off" }.to_string();
        let row = |flag: &'static str, value: String| (flag, value, o(flag));
        vec![
            row("--peer-store-name", config.peer_store_name.clone()),
            row(
                "--peer-stores-directory",
                config.peer_stores_dir.display().to_string(),
            ),
            row("--msb-store-name", config.msb_store_name.clone()),
            row(
                "--msb-stores-directory",
                config.msb_stores_dir.display().to_string(),
            ),
            row("--subnet-channel", config.subnet_channel.clone()),
            ("--subnet-bootstrap", subnet_bootstrap, subnet_origin),
            row("--peer-dht-bootstrap", list(&config.peer_dht_bootstrap)),
            row("--msb-dht-bootstrap", list(&config.msb_dht_bootstrap)),
            ("--msb-bootstrap", msb_bootstrap, msb_origin),
            (
                "--msb-channel",
                self.msb_channel.clone(),
                self.msb_channel_origin.clone(),
            ),
            row(
                "--msb-faucet",
                config
                    .msb_faucet
                    .map_or("none".to_string(), |a| format!("{} TNK", format_amount(a))),
            ),
            row(
                "--listen",
                list(
                    &config
                        .listen
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                ),
            ),
            row("--mdns", on_off(config.mdns)),
            row("--contract", config.contract.to_string()),
            row("--timer", on_off(config.timer)),
            row("--rpc", on_off(config.rpc.enabled)),
            row("--rpc-host", config.rpc.host.to_string()),
            row("--rpc-port", config.rpc.port.to_string()),
            row("--api-tx-exposed", on_off(config.rpc.api_tx_exposed)),
            row("--rpc-allow-origin", config.rpc.allow_origin.clone()),
            row(
                "--rpc-max-body-bytes",
                config.rpc.max_body_bytes.to_string(),
            ),
            row("--sidechannels", list(&config.sidechannel.extras)),
            row(
                "--sidechannel-pow",
                if config.sidechannel.pow {
                    format!("on, {} bits", config.sidechannel.pow_difficulty)
                } else {
                    "off".to_string()
                },
            ),
            row(
                "--sidechannel-max-bytes",
                config.sidechannel.max_message_bytes.to_string(),
            ),
            row(
                "--sidechannel-welcome-required",
                on_off(config.sidechannel.welcome_required),
            ),
            row(
                "--sidechannel-invite-required",
                on_off(config.sidechannel.invite_required),
            ),
            row("--sc-bridge", on_off(config.bridge.enabled)),
            row(
                "--sc-bridge-host",
                format!("{}:{}", config.bridge.host, config.bridge.port),
            ),
            row(
                "--sc-bridge-token",
                if config.bridge.token.is_some() {
                    "set (not shown)".to_string()
                } else {
                    "none".to_string()
                },
            ),
            row("--sc-bridge-cli", on_off(config.bridge.cli)),
        ]
    }
}

/// A keystore loaded (or created) at startup.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// The key pair.
    pub keypair: Keypair,
    /// Its keystore.
    pub info: KeystoreInfo,
    /// Whether the keystore was created by this call.
    pub created: bool,
}

/// Unlocks the keystore at `path`, or creates it with a fresh key pair (mode 0600) if there is
/// none. An empty passphrase creates an unencrypted keystore (the caller warns); for an existing
/// unencrypted keystore the passphrase is ignored.
pub fn load_or_create_keypair(path: &Path, passphrase: &str) -> Result<LoadedKey, ConfigError> {
    if path.exists() {
        let keypair = keystore::unlock(path, passphrase)?;
        let info = keystore::info(path)?;
        return Ok(LoadedKey {
            keypair,
            info,
            created: false,
        });
    }
    let keypair = Keypair::generate();
    let info = keystore::create(path, &keypair, passphrase, KdfParams::DEFAULT, false)?;
    Ok(LoadedKey {
        keypair,
        info,
        created: true,
    })
}

/// What the startup banner shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BannerInfo {
    /// The MSB network id (`None`: a new dev network, created at start).
    pub msb_bootstrap: Option<Hash32>,
    /// The MSB channel.
    pub msb_channel: String,
    /// The faucet grant of a new dev network, base units.
    pub msb_faucet: Option<u128>,
    /// The MSB node's address (its own keystore).
    pub msb_address: String,
    /// The MSB store folder.
    pub msb_store: PathBuf,
    /// MSB bootstrap nodes (not printed when empty).
    pub msb_dht_bootstrap: Vec<String>,
    /// The peer store folder.
    pub peer_store: PathBuf,
    /// Peer bootstrap nodes (not printed when empty).
    pub peer_dht_bootstrap: Vec<String>,
    /// The subnet id (`None`: a new subnet, created at start).
    pub subnet_bootstrap: Option<Hash32>,
    /// The subnet channel.
    pub subnet_channel: String,
    /// The peer key.
    pub peer_public_key: PublicKey,
    /// The subnet writer key (the peer key).
    pub writer_key: PublicKey,
    /// Whether this peer may write to the subnet (`None`: not known before the node syncs).
    pub writable: Option<bool>,
    /// Where the subnet bootstrap is persisted.
    pub subnet_bootstrap_file: PathBuf,
    /// Listen addresses (configured, or bound once the node runs).
    pub listen: Vec<String>,
    /// Sidechannels joined at start besides the entry channel.
    pub sidechannel_extras: Vec<String>,
}

/// The banner's first line.
pub const BANNER_TITLE: &str = "==================== TRAC-PEER RUNNER ====================";

/// Formats the startup banner: a blank line, [`BANNER_TITLE`], one `Label: value` line per
/// setting, a `=` rule and a blank line (reference intercom.md §1.4, trac-peer.md §5.1).
pub fn render_banner(info: &BannerInfo) -> String {
    let mut out = String::from("\n");
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(BANNER_TITLE.to_string());
    line(format!(
        "MSB network bootstrap: {}",
        info.msb_bootstrap.map_or_else(
            || "new dev network (its id is known once it is created)".to_string(),
            |id| id.to_hex()
        )
    ));
    line(format!("MSB channel: {}", info.msb_channel));
    if let (None, Some(faucet)) = (info.msb_bootstrap, info.msb_faucet) {
        line(format!(
            "MSB faucet: {} TNK per new peer",
            format_amount(faucet)
        ));
    }
    line(format!("MSB wallet address: {}", info.msb_address));
    line(format!("MSB store: {}", info.msb_store.display()));
    if !info.msb_dht_bootstrap.is_empty() {
        line(format!(
            "MSB DHT bootstrap nodes: {}",
            info.msb_dht_bootstrap.join(", ")
        ));
    }
    line("-".repeat(BANNER_TITLE.len()));
    line(format!("Peer store: {}", info.peer_store.display()));
    if !info.peer_dht_bootstrap.is_empty() {
        line(format!(
            "Peer DHT bootstrap nodes: {}",
            info.peer_dht_bootstrap.join(", ")
        ));
    }
    line(format!(
        "Peer subnet bootstrap: {}",
        info.subnet_bootstrap.map_or_else(
            || "new subnet (its id is known once it is created)".to_string(),
            |id| id.to_hex()
        )
    ));
    line(format!("Peer subnet channel: {}", info.subnet_channel));
    line(format!(
        "Peer pubkey (hex): {}",
        info.peer_public_key.to_hex()
    ));
    line(format!(
        "Peer trac address (bech32m): {}",
        info.peer_public_key.address()
    ));
    line(format!(
        "Peer writer key (hex): {}",
        info.writer_key.to_hex()
    ));
    line(format!(
        "Subnet writable: {}",
        match info.writable {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown until the node has synced the subnet",
        }
    ));
    if info.writable == Some(false) {
        line(format!(
            "WARNING: Subnet is read-only for this keypair: ask the subnet admin to run /add_writer --key {} (or enable auto-add writers).",
            info.writer_key.to_hex()
        ));
        line(format!(
            "Subnet bootstrap file: {}",
            info.subnet_bootstrap_file.display()
        ));
    }
    line(format!("Sidechannel entry: {SIDECHANNEL_ENTRY}"));
    if !info.sidechannel_extras.is_empty() {
        line(format!(
            "Sidechannel extras: {}",
            info.sidechannel_extras.join(", ")
        ));
    }
    line(format!(
        "Listen addresses: {}",
        if info.listen.is_empty() {
            "none".to_string()
        } else {
            info.listen.join(", ")
        }
    ));
    line("=".repeat(BANNER_TITLE.len()));
    out.push('\n');
    out
}
