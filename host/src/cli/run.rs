//! `trac run [store-label] [flags]`: the Intercom node.
//!
//! It resolves and checks the configuration ([`crate::node::config`]), creates the store layout
//! and the keystores, and prints the resolved settings and the startup banner. With
//! `--dry-run` it stops there; otherwise it starts the node ([`crate::node::runner`]), prints
//! the banner with the real network ids and bound addresses, and runs until SIGINT/SIGTERM or
//! `/exit` in the interactive terminal ([`crate::node::terminal`]).
//!
//! The settings are read by [`RunConfig::resolve`] rather than by clap's `env` attributes, so
//! that an empty flag value falls through to the variable, booleans are strict and the errors
//! name the flag or variable that was wrong. Every flag's variable is listed in its help.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::passphrase::{PassphraseArgs, Purpose};
use crate::node::config::{
    BannerInfo, BridgeFlags, LoadedKey, MsbStart, RunConfig, RunFlags, ScFlags, StartPlan,
    SubnetStart, load_or_create_keypair, render_banner,
};
use crate::node::runner::{Command, Node, NodeClient, NodeConfig, TIMER_EVERY};
use crate::node::terminal::NodeExecutor;

/// `trac run` arguments. Every flag also reads the environment variable named in its help; a
/// non-empty flag wins over the variable, the variable over the default.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Store label: the peer store's folder name (same as --peer-store-name). Only a
    /// positional argument is a store label, never a flag's value.
    #[arg(value_name = "STORE_LABEL")]
    store_label: Option<String>,

    /// Peer store folder name [env: PEER_STORE_NAME] [default: the store label, else peer].
    #[arg(long, value_name = "NAME")]
    peer_store_name: Option<String>,

    /// Folder holding peer stores [env: PEER_STORES_DIRECTORY] [default: stores].
    #[arg(long, value_name = "DIR")]
    peer_stores_directory: Option<String>,

    /// MSB store folder name [env: MSB_STORE_NAME] [default: the peer store name followed by -msb].
    #[arg(long, value_name = "NAME")]
    msb_store_name: Option<String>,

    /// Folder holding MSB stores [env: MSB_STORES_DIRECTORY] [default: stores].
    #[arg(long, value_name = "DIR")]
    msb_stores_directory: Option<String>,

    /// Channel of a new subnet [env: SUBNET_CHANNEL] [default: trac-peer-subnet].
    #[arg(long, value_name = "NAME")]
    subnet_channel: Option<String>,

    /// Subnet to join, 64 hex digits [env: SUBNET_BOOTSTRAP] [default: the store's
    /// subnet-bootstrap.hex, else create a new subnet].
    #[arg(long, value_name = "HEX")]
    subnet_bootstrap: Option<String>,

    /// Peer bootstrap nodes, comma-separated host:port or multiaddrs [env: PEER_DHT_BOOTSTRAP,
    /// then DHT_BOOTSTRAP]; wins over --dht-bootstrap.
    #[arg(long, value_name = "LIST")]
    peer_dht_bootstrap: Option<String>,

    /// Same as --peer-dht-bootstrap [env: DHT_BOOTSTRAP].
    #[arg(long, value_name = "LIST")]
    dht_bootstrap: Option<String>,

    /// MSB bootstrap nodes, comma-separated host:port or multiaddrs [env: MSB_DHT_BOOTSTRAP].
    #[arg(long, value_name = "LIST")]
    msb_dht_bootstrap: Option<String>,

    /// MSB network to join, 64 hex digits [env: MSB_BOOTSTRAP] [default: the MSB store's
    /// msb-bootstrap.hex, else create a new dev network].
    #[arg(long, value_name = "HEX")]
    msb_bootstrap: Option<String>,

    /// MSB channel [env: MSB_CHANNEL] [default: the MSB store's msb-channel.txt, else
    /// trac-msb].
    #[arg(long, value_name = "NAME")]
    msb_channel: Option<String>,

    /// TNK a new dev network grants each new peer once, like 10 or 0.5 [env: MSB_FAUCET]
    /// [default: no faucet].
    #[arg(long, value_name = "AMOUNT")]
    msb_faucet: Option<String>,

    /// Addresses to listen on, comma-separated multiaddrs or ip:port [env: PEER_LISTEN]
    /// [default: /ip4/0.0.0.0/tcp/0].
    #[arg(long, value_name = "LIST")]
    listen: Option<String>,

    /// LAN discovery with mDNS: 1/true/yes/on or 0/false/no/off; bare = on [env: PEER_MDNS]
    /// [default: on].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    mdns: Option<String>,

    /// Component a new subnet is created with [env: SUBNET_CONTRACT] [default: the bundled
    /// Intercom].
    #[arg(long, value_name = "FILE")]
    contract: Option<String>,

    /// The sample timer feature: 1/true/yes/on or 0/false/no/off; bare = on
    /// [env: INTERCOM_TIMER] [default: off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    timer: Option<String>,

    /// The HTTP RPC: 1/true/yes/on or 0/false/no/off; bare = on [env: PEER_RPC] [default:
    /// off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    rpc: Option<String>,

    /// The RPC's IP address [env: PEER_RPC_HOST] [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    rpc_host: Option<String>,

    /// The RPC's port, 0 for any free one [env: PEER_RPC_PORT] [default: 5001].
    #[arg(long, value_name = "PORT")]
    rpc_port: Option<String>,

    /// Let POST /v1/contract/tx submit transactions, not only simulate them; bare = on
    /// [env: PEER_API_TX_EXPOSED] [default: off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    api_tx_exposed: Option<String>,

    /// The CORS allowed origin of the RPC [env: PEER_RPC_ALLOW_ORIGIN] [default: *].
    #[arg(long, value_name = "ORIGIN")]
    rpc_allow_origin: Option<String>,

    /// Largest RPC request body in bytes [env: PEER_RPC_MAX_BODY_BYTES] [default: 1000000].
    #[arg(long, value_name = "BYTES")]
    rpc_max_body_bytes: Option<String>,

    /// Check the configuration, create the stores and keystores, print the settings and the
    /// banner, and exit.
    #[arg(long)]
    dry_run: bool,

    /// The network protocol version to speak (compatibility tests only).
    #[arg(long, hide = true, default_value_t = crate::net::PROTOCOL_VERSION)]
    protocol_version: u32,

    /// Dial the peers Kademlia and mDNS discover (tests of relays through a line of peers turn
    /// it off).
    #[arg(long, hide = true, default_value_t = true, action = clap::ArgAction::Set)]
    dial_discovered: bool,

    /// The timer feature's interval in milliseconds (tests only; the feature runs every 60 s).
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(10..))]
    timer_interval_ms: Option<u64>,

    #[command(flatten)]
    sidechannel: ScArgs,

    #[command(flatten)]
    bridge: BridgeFlags,

    #[command(flatten)]
    passphrase: PassphraseArgs,
}

/// The sidechannel flags of `trac run`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Sidechannels")]
struct ScArgs {
    /// Extra sidechannels joined at start, comma-separated [env: SIDECHANNELS] (alias --sidechannel).
    #[arg(long = "sidechannels", value_name = "LIST", alias = "sidechannel")]
    channels: Option<String>,

    /// Log every sidechannel decision; bare = on [env: SIDECHANNEL_DEBUG] [default: off].
    #[arg(long = "sidechannel-debug", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    debug: Option<String>,

    /// Do not print received sidechannel messages (still relayed); bare = on [env: SIDECHANNEL_QUIET] [default: off].
    #[arg(long = "sidechannel-quiet", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    quiet: Option<String>,

    /// Largest sidechannel frame sent and received [env: SIDECHANNEL_MAX_BYTES] [default: 256000].
    #[arg(long = "sidechannel-max-bytes", value_name = "BYTES")]
    max_bytes: Option<String>,

    /// Act on peers' requests to open channels [env: SIDECHANNEL_ALLOW_REMOTE_OPEN] [default: on].
    #[arg(long = "sidechannel-allow-remote-open", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_remote_open: Option<String>,

    /// Join the channels of accepted open requests [env: SIDECHANNEL_AUTO_JOIN] [default: off].
    #[arg(long = "sidechannel-auto-join", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    auto_join: Option<String>,

    /// Proof of work on sidechannel frames [env: SIDECHANNEL_POW] [default: on].
    #[arg(long = "sidechannel-pow", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pow: Option<String>,

    /// Proof-of-work difficulty, leading zero bits 0-32 [env: SIDECHANNEL_POW_DIFFICULTY] [default: 12].
    #[arg(long = "sidechannel-pow-difficulty", value_name = "BITS")]
    pow_difficulty: Option<String>,

    /// Proof of work on the entry channel only [env: SIDECHANNEL_POW_ENTRY] [default: off].
    #[arg(long = "sidechannel-pow-entry", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pow_entry: Option<String>,

    /// Proof of work on these channels only [env: SIDECHANNEL_POW_CHANNELS].
    #[arg(long = "sidechannel-pow-channels", value_name = "LIST")]
    pow_channels: Option<String>,

    /// Inbound sidechannel bytes per second per peer key, 0 for no limit [env: SIDECHANNEL_RATE_BYTES] [default: 64000].
    #[arg(long = "sidechannel-rate-bytes", value_name = "BYTES")]
    rate_bytes: Option<String>,

    /// Inbound burst per peer key [env: SIDECHANNEL_RATE_BURST] [default: 256000].
    #[arg(long = "sidechannel-rate-burst", value_name = "BYTES")]
    rate_burst: Option<String>,

    /// Rate-limit strikes before a block [env: SIDECHANNEL_MAX_STRIKES] [default: 3].
    #[arg(long = "sidechannel-max-strikes", value_name = "N")]
    max_strikes: Option<String>,

    /// Every non-entry channel is invite-only [env: SIDECHANNEL_INVITE_REQUIRED] [default: off].
    #[arg(long = "sidechannel-invite-required", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    invite_required: Option<String>,

    /// Invite-only channels [env: SIDECHANNEL_INVITE_CHANNELS].
    #[arg(long = "sidechannel-invite-channels", value_name = "LIST")]
    invite_channels: Option<String>,

    /// Invite-only channel name prefixes [env: SIDECHANNEL_INVITE_PREFIXES].
    #[arg(long = "sidechannel-invite-prefixes", value_name = "LIST")]
    invite_prefixes: Option<String>,

    /// Trusted inviter keys, hex, comma-separated [env: SIDECHANNEL_INVITER_KEYS].
    #[arg(long = "sidechannel-inviter-keys", value_name = "LIST")]
    inviter_keys: Option<String>,

    /// Default invite lifetime in seconds [env: SIDECHANNEL_INVITE_TTL] [default: 604800].
    #[arg(long = "sidechannel-invite-ttl", value_name = "SECS")]
    invite_ttl: Option<String>,

    /// Channel owners as channel:key, comma-separated [env: SIDECHANNEL_OWNER].
    #[arg(long = "sidechannel-owner", value_name = "LIST")]
    owners: Option<String>,

    /// Only owners write on non-entry channels [env: SIDECHANNEL_OWNER_WRITE_ONLY] [default: off].
    #[arg(long = "sidechannel-owner-write-only", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    owner_write_only: Option<String>,

    /// Owner-only channels [env: SIDECHANNEL_OWNER_WRITE_CHANNELS].
    #[arg(long = "sidechannel-owner-write-channels", value_name = "LIST")]
    owner_write_channels: Option<String>,

    /// Startup welcomes as channel:<base64 or @file> [env: SIDECHANNEL_WELCOME].
    #[arg(long = "sidechannel-welcome", value_name = "LIST")]
    welcomes: Option<String>,

    /// Non-entry channels need their owner's welcome [env: SIDECHANNEL_WELCOME_REQUIRED] [default: on].
    #[arg(long = "sidechannel-welcome-required", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    welcome_required: Option<String>,
}

impl ScArgs {
    fn flags(&self) -> ScFlags {
        ScFlags {
            channels: self.channels.clone(),
            debug: self.debug.clone(),
            quiet: self.quiet.clone(),
            max_bytes: self.max_bytes.clone(),
            allow_remote_open: self.allow_remote_open.clone(),
            auto_join: self.auto_join.clone(),
            pow: self.pow.clone(),
            pow_difficulty: self.pow_difficulty.clone(),
            pow_entry: self.pow_entry.clone(),
            pow_channels: self.pow_channels.clone(),
            rate_bytes: self.rate_bytes.clone(),
            rate_burst: self.rate_burst.clone(),
            max_strikes: self.max_strikes.clone(),
            invite_required: self.invite_required.clone(),
            invite_channels: self.invite_channels.clone(),
            invite_prefixes: self.invite_prefixes.clone(),
            inviter_keys: self.inviter_keys.clone(),
            invite_ttl: self.invite_ttl.clone(),
            owners: self.owners.clone(),
            owner_write_only: self.owner_write_only.clone(),
            owner_write_channels: self.owner_write_channels.clone(),
            welcomes: self.welcomes.clone(),
            welcome_required: self.welcome_required.clone(),
        }
    }
}

impl RunArgs {
    fn flags(&self) -> RunFlags {
        RunFlags {
            store_label: self.store_label.clone(),
            peer_store_name: self.peer_store_name.clone(),
            peer_stores_directory: self.peer_stores_directory.clone(),
            msb_store_name: self.msb_store_name.clone(),
            msb_stores_directory: self.msb_stores_directory.clone(),
            subnet_channel: self.subnet_channel.clone(),
            subnet_bootstrap: self.subnet_bootstrap.clone(),
            peer_dht_bootstrap: self.peer_dht_bootstrap.clone(),
            dht_bootstrap: self.dht_bootstrap.clone(),
            msb_dht_bootstrap: self.msb_dht_bootstrap.clone(),
            msb_bootstrap: self.msb_bootstrap.clone(),
            msb_channel: self.msb_channel.clone(),
            msb_faucet: self.msb_faucet.clone(),
            listen: self.listen.clone(),
            mdns: self.mdns.clone(),
            contract: self.contract.clone(),
            timer: self.timer.clone(),
            rpc: self.rpc.clone(),
            rpc_host: self.rpc_host.clone(),
            rpc_port: self.rpc_port.clone(),
            api_tx_exposed: self.api_tx_exposed.clone(),
            rpc_allow_origin: self.rpc_allow_origin.clone(),
            rpc_max_body_bytes: self.rpc_max_body_bytes.clone(),
            sidechannel: self.sidechannel.flags(),
            bridge: self.bridge.clone(),
        }
    }
}

/// Runs `trac run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = RunConfig::resolve(&args.flags(), |k| std::env::var_os(k))?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let plan = StartPlan::resolve(&config)?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    plan.persist_joined()?;
    let mut passphrase = configured_passphrase(&args.passphrase)?;
    let peer = load_key("peer", &plan.layout.peer_keystore(), &args, &mut passphrase)?;
    let msb = load_key("MSB", &plan.layout.msb_keystore(), &args, &mut passphrase)?;

    println!("Resolved configuration:");
    for (flag, value, origin) in plan.settings(&config) {
        println!("  {flag:<24} {value}  ({origin})");
    }

    let public = peer.keypair.public();
    let banner = BannerInfo {
        msb_bootstrap: plan.msb.bootstrap(),
        msb_channel: plan.msb_channel.clone(),
        msb_faucet: match plan.msb {
            MsbStart::CreateDev { faucet } => faucet,
            MsbStart::Existing { .. } => None,
        },
        msb_address: msb.info.address.clone(),
        msb_store: plan.layout.msb_store.clone(),
        msb_dht_bootstrap: config.msb_dht_bootstrap.clone(),
        peer_store: plan.layout.peer_store.clone(),
        peer_dht_bootstrap: config.peer_dht_bootstrap.clone(),
        subnet_bootstrap: plan.subnet.bootstrap(),
        subnet_channel: config.subnet_channel.clone(),
        peer_public_key: public,
        writer_key: public,
        // The creator of a new subnet is its first writer; whether a joiner may write is only
        // known once the node has synced the subnet.
        writable: match plan.subnet {
            SubnetStart::Create { .. } => Some(true),
            SubnetStart::Existing { .. } => None,
        },
        subnet_bootstrap_file: plan.layout.subnet_bootstrap_file(),
        listen: config.listen.iter().map(ToString::to_string).collect(),
        sidechannel_extras: config.sidechannel.extras.clone(),
    };
    if !args.dry_run {
        let timer = config.timer.then(|| {
            args.timer_interval_ms
                .map_or(TIMER_EVERY, std::time::Duration::from_millis)
        });
        let options = NodeOptions {
            protocol_version: args.protocol_version,
            timer,
            dial_discovered: args.dial_discovered,
        };
        return run_node(&config, plan, peer, msb, banner, options);
    }
    print!("{}", render_banner(&banner));
    println!("Dry run: configuration checked; the node was not started.");
    Ok(())
}

/// What `trac run` sets beyond its configuration (the timer, and hidden test settings).
struct NodeOptions {
    protocol_version: u32,
    timer: Option<std::time::Duration>,
    dial_discovered: bool,
}

/// Starts the node, prints the banner with the real ids and addresses, and runs until
/// SIGINT/SIGTERM or `/exit` on standard input.
fn run_node(
    config: &RunConfig,
    plan: StartPlan,
    peer: LoadedKey,
    msb: LoadedKey,
    mut banner: BannerInfo,
    options: NodeOptions,
) -> anyhow::Result<()> {
    let NodeOptions {
        protocol_version,
        timer,
        dial_discovered,
    } = options;
    let history = Some(plan.layout.peer_store.join("terminal-history"));
    let rpc_settings = config.rpc.clone();
    let bridge_settings = config.bridge.clone();
    let mut node_config = NodeConfig::new(config, plan, peer.keypair, msb.keypair)?;
    node_config.protocol_version = protocol_version;
    node_config.timer = timer;
    node_config.dial_discovered = dial_discovered;
    let runtime = crate::node::runtime().context("cannot start the async runtime")?;
    // The node runs on a thread with room for contract calls (the runtime::CALL_THREAD_STACK
    // note): its pump applies ops and answers queries.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("node".into())
            .stack_size(crate::runtime::CALL_THREAD_STACK)
            .spawn_scoped(scope, move || {
                runtime.block_on(async move {
                    let started = tokio::select! {
                        node = Node::start(node_config) => node?,
                        _ = stop_signal() => {
                            println!("Stopped before the node was ready.");
                            return Ok(());
                        }
                    };
                    let mut node = started;
                    banner.msb_bootstrap = Some(node.msb_id());
                    banner.subnet_bootstrap = Some(node.subnet_id());
                    banner.subnet_channel = node.subnet_channel().to_string();
                    banner.writable = node.writable().filter(|w| *w);
                    banner.listen = node
                        .listen_addrs()
                        .await
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    let (commands_tx, commands) = mpsc::channel(64);
                    let rpc = if rpc_settings.enabled {
                        Some(
                            crate::rpc::start(&rpc_settings, NodeClient::new(commands_tx.clone()))
                                .await?,
                        )
                    } else {
                        None
                    };
                    let bridge = if bridge_settings.enabled {
                        let executor = NodeExecutor::new(
                            commands_tx.clone(),
                            Some(node.sidechannel().clone()),
                        );
                        let cli: crate::bridge::CliRunner =
                            std::sync::Arc::new(move |line: &str| {
                                crate::terminal::run_line(line, &mut executor.clone())
                            });
                        let context = crate::bridge::BridgeContext {
                            sidechannel: node.sidechannel().clone(),
                            peer: banner.peer_public_key,
                            info: crate::bridge::info(&banner),
                            cli: Some(cli),
                        };
                        Some(crate::bridge::start(&bridge_settings, context).await?)
                    } else {
                        None
                    };
                    print!("{}", render_banner(&banner));
                    if let Some(bridge) = &bridge {
                        println!(
                            "SC-Bridge: ws://{} (cli {})",
                            bridge.addr(),
                            if bridge_settings.cli { "on" } else { "off" }
                        );
                    }
                    if let Some(rpc) = &rpc {
                        println!(
                            "RPC: http://{} (transactions {})",
                            rpc.addr(),
                            if rpc_settings.api_tx_exposed {
                                "exposed"
                            } else {
                                "simulation only"
                            }
                        );
                    }
                    println!("Node running. Type /help for the commands, /exit to stop.");

                    let (exit_tx, exit_rx) = oneshot::channel::<()>();
                    let sidechannel = node.sidechannel().clone();
                    spawn_terminal(commands_tx, sidechannel, exit_tx, history);
                    let stop = async move {
                        tokio::select! {
                            _ = stop_signal() => {}
                            // A dropped sender (end of input) is no request to stop.
                            Ok(()) = exit_rx => {}
                        }
                    };
                    let ran = node.run(commands, stop).await;
                    if let Some(rpc) = rpc {
                        rpc.stop().await;
                    }
                    if let Some(bridge) = bridge {
                        bridge.stop().await;
                    }
                    ran?;
                    println!("Node stopped.");
                    Ok(())
                })
            })
            .context("cannot start the node thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the node thread panicked"))?
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the interactive terminal on a thread: each line goes through
/// [`crate::terminal::dispatch`] to a [`NodeExecutor`] (the command runs on the pump) and the
/// reply is printed; `/exit` stops the node. At end of input the node keeps running (stop it
/// with a signal).
fn spawn_terminal(
    commands: mpsc::Sender<Command>,
    sidechannel: crate::node::sidechannel::ScHandle,
    exit: oneshot::Sender<()>,
    history: Option<std::path::PathBuf>,
) {
    std::thread::spawn(move || {
        let mut editor = match crate::terminal::Editor::new(history) {
            Ok(editor) => editor,
            Err(e) => {
                eprintln!("cannot start the terminal: {e}");
                return;
            }
        };
        let mut executor = NodeExecutor::new(commands, Some(sidechannel));
        while let Some(line) = editor.read_line("trac> ") {
            let reply = crate::terminal::dispatch(&line, &mut executor);
            if !reply.text.is_empty() {
                println!("{}", reply.text);
            }
            if reply.exit {
                let _ = exit.send(());
                return;
            }
        }
    });
}

/// The passphrase given by a flag or variable, if any (`None`: none configured, so new
/// keystores are created unencrypted). Never prompts.
fn configured_passphrase(args: &PassphraseArgs) -> anyhow::Result<Option<Zeroizing<String>>> {
    let configured = args.passphrase.is_some()
        || args.passphrase_file.is_some()
        || std::env::var_os("TRAC_PASSPHRASE").is_some()
        || std::env::var_os("TRAC_PASSPHRASE_FILE").is_some();
    if configured {
        // Something is configured, so this reads it without prompting.
        Ok(Some(args.resolve(Purpose::Create)?))
    } else {
        Ok(None)
    }
}

/// Loads (or creates) one keystore. An existing encrypted keystore without a configured
/// passphrase asks for it on a terminal, as `trac keys` does (once: the answer is kept in
/// `passphrase` for the other keystore).
fn load_key(
    which: &str,
    path: &Path,
    args: &RunArgs,
    passphrase: &mut Option<Zeroizing<String>>,
) -> anyhow::Result<LoadedKey> {
    let pass = match passphrase {
        Some(pass) => pass.clone(),
        None if path.exists() && crate::crypto::keystore::info(path)?.encrypted => {
            eprintln!("the {which} keystore {} is encrypted", path.display());
            let pass = args.passphrase.resolve(Purpose::Unlock)?;
            *passphrase = Some(pass.clone());
            pass
        }
        None => Zeroizing::new(String::new()),
    };
    let key = load_or_create_keypair(path, &pass)
        .with_context(|| format!("cannot load the {which} keystore"))?;
    if key.created {
        println!(
            "created the {which} keystore {} ({})",
            key.info.path.display(),
            key.info.address
        );
        if !key.info.encrypted {
            eprintln!(
                "warning: the key is stored unencrypted (empty passphrase); the file is readable by its owner only (0600)"
            );
        }
    } else if !key.info.encrypted && !pass.is_empty() {
        eprintln!(
            "warning: the {which} keystore {} is unencrypted; the passphrase is not used (re-import the key with `trac keys import` to encrypt it)",
            path.display()
        );
    }
    Ok(key)
}
