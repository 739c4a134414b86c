//! The running node behind `trac run`: the MSB ledger and the subnet ledger of one peer,
//! replicated over the libp2p network layer ([`crate::net`]).
//!
//! - [`Node::start`] opens (or creates) the MSB store and ledger (a dev network when no MSB
//!   bootstrap is known) and the subnet store and ledger (a new subnet when no subnet bootstrap
//!   is known: the creator appends `AddAdmin`, `SetMsbTrust` and the contract's deploy ops),
//!   starts the network and, for a joiner that lacks a genesis, fetches it from its peers.
//! - [`Node::run`] is the pump: it answers peers' requests and pushes with the ledger of the
//!   network they name, proposes checkpoints when this node is a sequencer (every
//!   [`PROPOSE_EVERY`]), sends its sync requests to every peer (every [`SYNC_EVERY`]) and
//!   serves [`Command`]s, until told to stop.
//!
//! The ledgers are owned by the pump (the future [`Node::run`] returns, driven by the caller
//! on its own task; [`Node`] is `Send`, so it may also be spawned): every ledger call happens
//! there, synchronously. Other tasks reach the ledgers only through [`Command`]s. Network
//! requests to peers are sent from spawned tasks, whose answers come back to the pump through
//! a channel, so two nodes asking each other never wait on one another.
//!
//! **Genesis transfer.** A subnet id and an MSB network id are hashes of their genesis, so a
//! joiner that knows only the id asks its peers for the genesis on the ledger protocol, on the
//! network [`genesis_channel`]`(id)`: a peer that has it answers with one entry whose single op
//! is the encoded genesis (the entry is only a container; the joiner checks that the genesis
//! hashes to the id). The genesis is persisted in the store folder
//! ([`SUBNET_GENESIS_FILE`], [`MSB_GENESIS_FILE`]) so that restarts need no peer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::sync::{mpsc, oneshot};

use super::config::{MsbStart, StartPlan, SubnetStart, write_atomic};
use super::inbox::{self, StoreLock};
use super::service::{ServiceAnswer, ServiceRequest, check_auto_add};
use super::{LocalMsb, TxFlow};
use crate::codec;
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::ledger::{Ledger, LedgerLimits, LedgerStatus, LogEntry, Message};
use crate::msb::{
    MsbGenesis, MsbMachine, MsbOp, PartialOp, ROLE_VALIDATOR, Rejection, SubmitError, Validator,
};
use crate::net::{Multiaddr, Net, NetConfig, NetEvent, NetHandle, PeerId};
use crate::node::now_ms;
use crate::store::{Store, StoreOptions};
use crate::subnet::ops::deploy_ops;
use crate::subnet::{
    Action, OpSigner, SettlementScheme, SubnetGenesis, SubnetMachine, SubnetOp, encode_op, keys,
};

/// The MSB genesis, in the MSB store folder (canonical encoding, [`crate::codec`]).
pub const MSB_GENESIS_FILE: &str = "msb-genesis.bin";
/// The subnet genesis, in the peer store folder (canonical encoding).
pub const SUBNET_GENESIS_FILE: &str = "subnet-genesis.bin";
/// The peers this node connected to (one multiaddr ending in `/p2p/<id>` per line, most
/// recent first), in the peer store folder: dialed again at the next start.
pub const KNOWN_PEERS_FILE: &str = "known-peers.txt";
/// Peers remembered in [`KNOWN_PEERS_FILE`], at most.
const MAX_KNOWN_PEERS: usize = 32;
/// Entry ranges of one log asked at once while catching up (each answer then asks one more).
const AHEAD_RANGES: u64 = 3;
/// How long an entry range asked while catching up counts as on its way.
const AHEAD_FOR: Duration = Duration::from_secs(5);
/// How often a sequencer proposes a checkpoint.
pub const PROPOSE_EVERY: Duration = Duration::from_millis(200);
/// How often the sync requests go to every peer.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long a joiner waits for a peer to hand it a genesis before giving up.
pub const GENESIS_WAIT: Duration = Duration::from_secs(60);
/// How often a peer that is not a writer asks writers to add it while auto-add is on.
pub const AUTO_ADD_EVERY: Duration = Duration::from_secs(3);
/// How long a writer waits before appending another auto-add op for the same peer.
const AUTO_ADD_MEMORY: Duration = Duration::from_secs(30);
/// How often the timer feature appends the time (the reference's 60 s).
pub const TIMER_EVERY: Duration = Duration::from_secs(60);
/// Expiry (subnet checkpoint height) of the creator's first system ops.
const CREATION_EXPIRY: u64 = 1_000;
/// Op bytes per creation entry: below the ledger's 4 MiB, with room for the entry's framing.
const CREATION_ENTRY_BYTES: usize = (4 << 20) - (64 << 10);

/// What the node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The resolved start plan (stores, what to create or join).
    pub plan: StartPlan,
    /// The peer key: P2P identity, subnet writer, requester.
    pub peer_key: Keypair,
    /// The MSB node key (a dev network's admin).
    pub msb_key: Keypair,
    /// The contract component of a new subnet.
    pub contract: Vec<u8>,
    /// The channel of a new subnet.
    pub subnet_channel: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers (`host:port` or multiaddrs), both lists together.
    pub bootstrap: Vec<String>,
    /// mDNS discovery.
    pub mdns: bool,
    /// The network protocol version ([`crate::net::PROTOCOL_VERSION`]; compatibility tests
    /// set another).
    pub protocol_version: u32,
    /// The sample timer feature (`--timer`): how often the admin's node appends the time.
    pub timer: Option<Duration>,
    /// Sidechannels.
    pub sidechannel: crate::sidechannel::Settings,
    /// Dial peers found by Kademlia and mDNS ([`NetConfig::dial_discovered`]).
    pub dial_discovered: bool,
}

impl NodeConfig {
    /// The node of `trac run`'s settings: the start plan, the two keys, the contract of a new
    /// subnet (read from its source), both bootstrap lists merged; the timer every
    /// [`TIMER_EVERY`] when `--timer` is on, this build's protocol version, discovered peers
    /// dialled.
    pub fn new(
        config: &super::config::RunConfig,
        plan: StartPlan,
        peer_key: Keypair,
        msb_key: Keypair,
    ) -> anyhow::Result<NodeConfig> {
        let contract = match &plan.subnet {
            SubnetStart::Create { contract } => contract.load()?.into_owned(),
            SubnetStart::Existing { .. } => Vec::new(),
        };
        let mut bootstrap = config.peer_dht_bootstrap.clone();
        for addr in &config.msb_dht_bootstrap {
            if !bootstrap.contains(addr) {
                bootstrap.push(addr.clone());
            }
        }
        Ok(NodeConfig {
            plan,
            peer_key,
            msb_key,
            contract,
            subnet_channel: config.subnet_channel.clone(),
            listen: config.listen.clone(),
            bootstrap,
            mdns: config.mdns,
            protocol_version: crate::net::PROTOCOL_VERSION,
            timer: config.timer.then_some(TIMER_EVERY),
            sidechannel: config.sidechannel.clone(),
            dial_discovered: true,
        })
    }
}

/// One ledger's numbers, for `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerStats {
    /// The network id.
    pub network: Hash32,
    /// The ledger's status.
    pub status: LedgerStatus,
}

/// The node's numbers, for `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// The MSB ledger.
    pub msb: LedgerStats,
    /// The subnet ledger.
    pub subnet: LedgerStats,
    /// Connected, identified peers.
    pub peers: usize,
}

impl NodeStats {
    /// The `/stats` lines.
    pub fn render(&self) -> String {
        let line = |name: &str, l: &LedgerStats| {
            format!(
                "{name} {}: final height {}, latest height {}, root {}, entries {}, divergence {}, peers {}\n",
                l.network,
                l.status.final_height,
                l.status.latest_height,
                l.status.final_root,
                l.status.entries,
                if l.status.divergence.is_some() {
                    "YES"
                } else {
                    "no"
                },
                self.peers
            )
        };
        format!("{}{}", line("MSB", &self.msb), line("Subnet", &self.subnet))
    }
}

/// Work run by the pump with the node at hand (the ledgers, the tx flow, the validator);
/// what it returns goes back through a channel the closure captures.
pub type NodeTask = Box<dyn FnOnce(&mut Node) + Send>;

/// What the pump can be asked while it runs.
pub enum Command {
    /// The node's numbers.
    Stats(oneshot::Sender<NodeStats>),
    /// A subnet state value: `confirmed` view or not; `None` when absent.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Confirmed (final) view, or the unconfirmed one.
        confirmed: bool,
        /// Where the value goes (an error as text).
        reply: oneshot::Sender<Result<Option<Vec<u8>>, String>>,
    },
    /// Anything else (the interactive terminal's commands): runs on the pump. Messages the
    /// task produces are sent with [`Node::broadcast`].
    Run(NodeTask),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Stats(_) => f.write_str("Stats"),
            Command::Get { key, confirmed, .. } => f
                .debug_struct("Get")
                .field("key", &String::from_utf8_lossy(key))
                .field("confirmed", confirmed)
                .finish(),
            Command::Run(_) => f.write_str("Run"),
        }
    }
}

/// An async handle that runs work on the node's pump (for the RPC): each call sends a
/// [`Command::Run`] task and awaits its result. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    commands: mpsc::Sender<Command>,
}

/// The node's pump has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node has stopped")]
pub struct NodeStopped;

impl NodeClient {
    /// A client of the pump listening on `commands`.
    pub fn new(commands: mpsc::Sender<Command>) -> NodeClient {
        NodeClient { commands }
    }

    /// Runs `work` on the pump with the node at hand and returns what it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Node) -> T + Send + 'static,
    ) -> Result<T, NodeStopped> {
        let (reply, result) = oneshot::channel();
        let task: NodeTask = Box::new(move |node: &mut Node| {
            let _ = reply.send(work(node));
        });
        self.commands
            .send(Command::Run(task))
            .await
            .map_err(|_| NodeStopped)?;
        result.await.map_err(|_| NodeStopped)
    }
}

/// A started node: its ledgers and its network, ready to [`Node::run`].
pub struct Node {
    msb: Ledger<MsbMachine>,
    subnet: Ledger<SubnetMachine>,
    msb_genesis: MsbGenesis,
    subnet_genesis: SubnetGenesis,
    net: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    peer_key: Keypair,
    peers: BTreeSet<PeerId>,
    created_subnet: bool,
    txflow: TxFlow,
    validator: Validator,
    msb_key: Keypair,
    /// Outcomes of tracked forwarded submissions (tx hash, the refusal or `None` when no
    /// validator was reached), for the tx flow.
    forwarded_tx: mpsc::UnboundedSender<(Hash32, Option<Rejection>)>,
    forwarded_rx: Option<mpsc::UnboundedReceiver<(Hash32, Option<Rejection>)>>,
    /// The peer whose validator took the last forwarded submission (asked first next time).
    validator_peer: Arc<Mutex<Option<PeerId>>>,
    /// When this peer last asked writers to add it.
    auto_add_asked: Option<Instant>,
    /// Peers whose auto-add op this writer appended recently.
    auto_added: BTreeMap<PublicKey, Instant>,
    /// The peer store folder (its inbox).
    peer_store: std::path::PathBuf,
    /// The timer feature's interval, when on.
    timer: Option<Duration>,
    /// Peers connected to, most recent first, with their dialable addresses.
    known_peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// While catching up: the furthest entry range asked of a log (its start) and when.
    ahead: HashMap<(Hash32, PublicKey), (u64, Instant)>,
    /// The peer that last answered this node's requests of a network (asked next when a
    /// checkpoint applied in the background moves the ledger).
    answered: HashMap<Hash32, PeerId>,
    /// The sidechannel service.
    sidechannel: super::sidechannel::ScHandle,
    /// Held while the node runs.
    _lock: StoreLock,
}

/// A subnet's active contract and the runtime that runs it.
pub type ActiveContract = (Arc<crate::runtime::Contract>, Arc<crate::runtime::Runtime>);

/// The answer of a validator reached over the network: the tx hash, or its refusal (`None`:
/// no validator could be reached).
pub type ForwardOutcome = oneshot::Receiver<Result<Hash32, Option<Rejection>>>;

/// Where a user op went: this node's own validator answered, or it was forwarded to a
/// validator over the network whose answer will come through the receiver (`Err(None)`: no
/// validator could be reached).
pub enum Submission {
    /// This node's validator answered.
    Done(Result<Hash32, SubmitError>),
    /// Sent to peers' validators.
    Forwarded(ForwardOutcome),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("msb", &self.msb.network())
            .field("subnet", &self.subnet.network())
            .finish()
    }
}

/// The network on which the genesis of `id` is asked for and served.
pub fn genesis_channel(id: &Hash32) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"trac/genesis-request/1");
    hasher.update(&id.0);
    Hash32(*hasher.finalize().as_bytes())
}

fn open_store(dir: &Path) -> anyhow::Result<Arc<Store>> {
    Ok(Arc::new(
        Store::open(dir, StoreOptions::default())
            .with_context(|| format!("cannot open the store {}", dir.display()))?,
    ))
}

fn read_genesis<T: serde::de::DeserializeOwned + serde::Serialize>(
    path: &Path,
) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Ok(Some(codec::decode(&bytes).with_context(|| {
                format!("{} is corrupt", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The genesis a store's state records (`None` for a new store).
fn genesis_in_store<T>(
    store: &Store,
    read: impl FnOnce(&dyn crate::store::StateView) -> Result<Option<T>, crate::ledger::LedgerError>,
) -> anyhow::Result<Option<T>> {
    let txn = store.read()?;
    let overlay = crate::store::Overlay::new(&txn)?;
    Ok(read(&overlay)?)
}

fn write_genesis<T: serde::Serialize>(path: &Path, genesis: &T) -> anyhow::Result<()> {
    write_atomic(path, &codec::encode(genesis))?;
    Ok(())
}

/// Splits ops into entries within the ledger's limits.
pub(crate) fn entries_of(ops: Vec<Vec<u8>>, limits: &LedgerLimits) -> Vec<Vec<Vec<u8>>> {
    let max_bytes = CREATION_ENTRY_BYTES.min(limits.max_entry_bytes);
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        if !current.is_empty()
            && (current.len() >= limits.max_ops_per_entry || bytes + op.len() > max_bytes)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += op.len();
        current.push(op);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The peers of [`KNOWN_PEERS_FILE`], grouped by peer in file order; lines that are not
/// multiaddrs ending in `/p2p/<id>` are skipped.
fn read_known_peers(path: &Path) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for line in text.lines() {
        let Ok(addr) = line.trim().parse::<Multiaddr>() else {
            continue;
        };
        let Some(crate::net::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
            continue;
        };
        if let Some((_, addrs)) = peers.iter_mut().find(|(p, _)| *p == peer) {
            addrs.push(addr);
        } else if peers.len() < MAX_KNOWN_PEERS {
            peers.push((peer, vec![addr]));
        }
    }
    peers
}

/// Opens the subnet ledger of a stopped node's peer store (its persisted genesis) with `key`
/// as this node's writer key. The caller holds the store's [`StoreLock`].
pub fn open_subnet_ledger(
    peer_store: &Path,
    key: Keypair,
) -> anyhow::Result<Ledger<SubnetMachine>> {
    let store = open_store(peer_store)?;
    let genesis: SubnetGenesis = match read_genesis(&peer_store.join(SUBNET_GENESIS_FILE))? {
        Some(g) => g,
        None => genesis_in_store(&store, |s| SubnetMachine::genesis_in(s))?.ok_or_else(|| {
            anyhow!(
                "{} holds no subnet yet: start the node once first",
                peer_store.display()
            )
        })?,
    };
    let runtime = crate::subnet::replay::runtime(Some(
        &peer_store.join(crate::subnet::replay::CACHE_DIR_NAME),
    ))?;
    let id = genesis.id();
    Ledger::open(
        store,
        SubnetMachine::standard(genesis, runtime),
        id,
        Some(key),
        LedgerLimits::default(),
    )
    .context("cannot open the subnet ledger")
}

/// Asks connected peers for the genesis of `id` until one answers with a genesis that hashes
/// to it (`decode` checks that), or [`GENESIS_WAIT`] passes.
async fn fetch_genesis<T>(
    net: &NetHandle,
    id: &Hash32,
    what: &str,
    decode: impl Fn(&[u8]) -> Option<T>,
) -> anyhow::Result<T> {
    let channel = genesis_channel(id);
    let deadline = tokio::time::Instant::now() + GENESIS_WAIT;
    tracing::info!(%id, "asking peers for the {what} genesis");
    let mut refused_since: Option<tokio::time::Instant> = None;
    while tokio::time::Instant::now() < deadline {
        let peers = net.connected_peers().await.unwrap_or_default();
        // Peers that refused this node (another protocol version) will not hand anything
        // over: say so rather than wait out the deadline.
        let refused = net.stats().await.map_or(0, |s| s.refused_peers);
        if peers.is_empty() && refused > 0 {
            let since = *refused_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                bail!(
                    "cannot fetch the {what} genesis: the peers refused this node or were refused by it (see the warning above: protocol versions must match)"
                );
            }
        }
        for (peer, _) in peers {
            match net.send(peer, channel, Vec::new()).await {
                Ok(messages) => {
                    for message in messages {
                        if let Message::Entry(entry) = message
                            && let Some(op) = entry.body.ops.first()
                            && let Some(genesis) = decode(op)
                        {
                            tracing::info!(%id, %peer, "received the {what} genesis");
                            return Ok(genesis);
                        }
                    }
                }
                Err(e) => tracing::debug!(%peer, "genesis request failed: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!(
        "no peer handed over the genesis of the {what} {id} within {}s: check the bootstrap peers (--dht-bootstrap), or copy {} from a node of that {what} into the store folder",
        GENESIS_WAIT.as_secs(),
        if what == "MSB network" {
            MSB_GENESIS_FILE
        } else {
            SUBNET_GENESIS_FILE
        }
    )
}

impl Node {
    /// Opens the stores and ledgers (creating the dev MSB network and the subnet if the plan
    /// says so), starts the network and, for a joiner without a persisted genesis, fetches it
    /// from its peers. Must run inside a tokio runtime.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let layout = config.plan.layout.clone();
        layout.create()?;
        let lock = StoreLock::acquire(&layout.peer_store)?;
        let mut net_config = NetConfig::new(config.peer_key.clone());
        net_config.listen = config.listen.clone();
        net_config.bootstrap = config.bootstrap.clone();
        net_config.mdns = config.mdns;
        net_config.protocol_version = config.protocol_version;
        net_config.dial_discovered = config.dial_discovered;
        let (sc_frames, sc_inbound) = mpsc::channel(8192);
        net_config.sidechannel = Some(sc_frames);
        net_config.limits.max_sidechannel_frame_bytes = config.sidechannel.max_message_bytes;
        let known_peers = read_known_peers(&layout.peer_store.join(KNOWN_PEERS_FILE));
        net_config.known_peers = known_peers.iter().flat_map(|(_, a)| a.clone()).collect();
        let (net, events) = Net::start(net_config).context("cannot start the network")?;
        let sidechannel = super::sidechannel::start(
            config.peer_key.clone(),
            &config.sidechannel,
            &layout.peer_store,
            net.clone(),
            sc_inbound,
        )
        .context("cannot start the sidechannels")?;

        // MSB genesis: the persisted one, else created (dev) or fetched (joiner).
        let msb_file = layout.msb_store.join(MSB_GENESIS_FILE);
        let msb_store = open_store(&layout.msb_store)?;
        // The file, else the genesis recorded in the store's state (a store whose file was
        // lost), else none yet.
        let persisted: Option<MsbGenesis> = match read_genesis(&msb_file)? {
            Some(g) => Some(g),
            None => genesis_in_store(&msb_store, |s| MsbMachine::genesis_in(s))?,
        };
        let msb_genesis = match (&config.plan.msb, persisted) {
            (MsbStart::Existing { bootstrap, .. }, Some(g)) if g.id() != *bootstrap => bail!(
                "the MSB store {} holds MSB network {}, not {bootstrap}: use another --msb-store-name",
                layout.msb_store.display(),
                g.id()
            ),
            (_, Some(g)) => g,
            (MsbStart::CreateDev { faucet }, None) => {
                let g = MsbGenesis::dev(config.msb_key.public(), config.peer_key.public(), *faucet);
                write_genesis(&msb_file, &g)?;
                tracing::info!(network = %g.id(), "created a dev MSB network");
                g
            }
            (MsbStart::Existing { bootstrap, .. }, None) => {
                let id = *bootstrap;
                let g = fetch_genesis(&net, &id, "MSB network", |bytes| {
                    codec::decode::<MsbGenesis>(bytes)
                        .ok()
                        .filter(|g| g.id() == id)
                })
                .await?;
                write_genesis(&msb_file, &g)?;
                g
            }
        };
        if !msb_file.is_file() {
            write_genesis(&msb_file, &msb_genesis)?;
        }
        let msb_id = msb_genesis.id();
        layout.write_msb_network(&msb_id, &config.plan.msb_channel)?;
        let msb = Ledger::open(
            msb_store,
            MsbMachine::new(msb_genesis.clone()),
            msb_id,
            Some(config.msb_key.clone()),
            LedgerLimits::default(),
        )
        .context("cannot open the MSB ledger")?;

        // Subnet genesis.
        let subnet_file = layout.peer_store.join(SUBNET_GENESIS_FILE);
        let subnet_store = open_store(&layout.peer_store)?;
        let persisted: Option<SubnetGenesis> = match read_genesis(&subnet_file)? {
            Some(g) => Some(g),
            None => genesis_in_store(&subnet_store, |s| SubnetMachine::genesis_in(s))?,
        };
        let subnet_genesis = match (&config.plan.subnet, persisted) {
            (SubnetStart::Existing { bootstrap, .. }, Some(g)) if g.id() != *bootstrap => bail!(
                "the peer store {} holds subnet {}, not {bootstrap}: use another --peer-store-name",
                layout.peer_store.display(),
                g.id()
            ),
            (_, Some(g)) => g,
            (SubnetStart::Create { .. }, None) => {
                let g = SubnetGenesis::new(config.peer_key.public(), config.subnet_channel.clone());
                g.check().map_err(|e| anyhow!(e))?;
                write_genesis(&subnet_file, &g)?;
                tracing::info!(subnet = %g.id(), "created a subnet");
                g
            }
            (SubnetStart::Existing { bootstrap, .. }, None) => {
                let id = *bootstrap;
                let g = fetch_genesis(&net, &id, "subnet", |bytes| {
                    codec::decode::<SubnetGenesis>(bytes)
                        .ok()
                        .filter(|g| g.id() == id)
                })
                .await?;
                write_genesis(&subnet_file, &g)?;
                g
            }
        };
        if !subnet_file.is_file() {
            write_genesis(&subnet_file, &subnet_genesis)?;
        }
        let subnet_id = subnet_genesis.id();
        let runtime = crate::subnet::replay::runtime(Some(
            &layout
                .peer_store
                .join(crate::subnet::replay::CACHE_DIR_NAME),
        ))?;
        let mut subnet = Ledger::open(
            subnet_store,
            SubnetMachine::standard(subnet_genesis.clone(), runtime),
            subnet_id,
            Some(config.peer_key.clone()),
            LedgerLimits::default(),
        )
        .context("cannot open the subnet ledger")?;

        // The creator's first entries, once.
        let me = config.peer_key.public();
        let creator = subnet_genesis.creator == me;
        if creator && subnet.log_head(&me).0 == 0 {
            let indexers = msb
                .store()
                .read()
                .map_err(anyhow::Error::from)
                .and_then(|read| {
                    let overlay = crate::store::Overlay::new(&read)?;
                    Ok(crate::msb::indexer_set(&overlay)?)
                })
                .context("cannot read the MSB indexer set")?;
            let signer = OpSigner::new(config.peer_key.clone(), subnet_id);
            let mut ops = vec![encode_op(&SubnetOp::AddAdmin { key: me })];
            ops.push(signer.sign(
                Action::SetMsbTrust {
                    network: msb_id,
                    indexers,
                    scheme: SettlementScheme::Checkpointed,
                },
                CREATION_EXPIRY,
            ));
            ops.extend(deploy_ops(&signer, &config.contract, CREATION_EXPIRY));
            for batch in entries_of(ops, &LedgerLimits::default()) {
                subnet
                    .append(batch)
                    .context("cannot append the subnet's first entries")?;
            }
        }
        layout.write_subnet_bootstrap(&subnet_id)?;
        let txflow = TxFlow::open(&subnet, config.peer_key.clone())
            .context("cannot reload the pending transactions")?;

        // Events that arrived meanwhile stay queued for the pump (bounded by the net layer).
        let (forwarded_tx, forwarded_rx) = mpsc::unbounded_channel();
        Ok(Node {
            forwarded_tx,
            forwarded_rx: Some(forwarded_rx),
            peer_store: layout.peer_store.clone(),
            timer: config.timer,
            sidechannel,
            known_peers,
            ahead: HashMap::new(),
            answered: HashMap::new(),
            _lock: lock,
            validator_peer: Arc::new(Mutex::new(None)),
            auto_add_asked: None,
            auto_added: BTreeMap::new(),
            msb,
            subnet,
            msb_genesis,
            subnet_genesis,
            net,
            events,
            peer_key: config.peer_key,
            peers: BTreeSet::new(),
            created_subnet: creator,
            txflow,
            validator: Validator::new(config.msb_key.clone()),
            msb_key: config.msb_key,
        })
    }

    /// The MSB network id.
    pub fn msb_id(&self) -> Hash32 {
        self.msb.network()
    }

    /// The subnet id.
    pub fn subnet_id(&self) -> Hash32 {
        self.subnet.network()
    }

    /// The network handle.
    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    /// The MSB ledger.
    pub fn msb_mut(&mut self) -> &mut Ledger<MsbMachine> {
        &mut self.msb
    }

    /// The subnet ledger.
    pub fn subnet_mut(&mut self) -> &mut Ledger<SubnetMachine> {
        &mut self.subnet
    }

    /// The subnet ledger, the MSB access and the tx flow at once, for `/tx`. The MSB access
    /// is this node's MSB ledger with its validator when it is one, else with submissions
    /// forwarded ([`LocalMsb::forwarding`]). Messages left in the [`LocalMsb`] must be
    /// broadcast on MSB and forwarded submissions handed to [`Node::forward`].
    pub fn tx_parts(&mut self) -> (&mut Ledger<SubnetMachine>, LocalMsb<'_>, &mut TxFlow) {
        let access = if self.is_validator() {
            LocalMsb::new(&mut self.msb, &mut self.validator)
        } else {
            LocalMsb::forwarding(&mut self.msb)
        };
        (&mut self.subnet, access, &mut self.txflow)
    }

    /// Runs `work` on the tx parts ([`Node::tx_parts`]), then broadcasts the MSB entries it
    /// appended and forwards the submissions it queued for a peer's validator (tracked by the
    /// tx flow). Returns what `work` returned and, when it forwarded one, the outcome of its
    /// first forwarded submission.
    pub fn with_tx_parts<T>(
        &mut self,
        work: impl FnOnce(&mut Ledger<SubnetMachine>, &mut LocalMsb<'_>, &mut TxFlow) -> T,
    ) -> (T, Option<ForwardOutcome>) {
        let (result, messages, forwarded) = {
            let (subnet, mut access, flow) = self.tx_parts();
            let result = work(subnet, &mut access, flow);
            (result, access.take_messages(), access.take_forwarded())
        };
        self.push(self.msb.network(), messages);
        let mut first = None;
        for partial in forwarded {
            let outcome = self.forward(partial, true);
            if first.is_none() {
                first = Some(outcome);
            }
        }
        (result, first)
    }

    /// Whether this node's MSB key is a validator (latest MSB view).
    pub fn is_validator(&mut self) -> bool {
        let key = self.msb_key.public();
        matches!(
            self.msb.read(false, |s| crate::msb::account(s, &key)),
            Ok(Ok(account)) if account.has(ROLE_VALIDATOR)
        )
    }

    /// The subnet's active contract (latest view) and the runtime that runs it; `None` before
    /// any contract is deployed.
    pub fn active_contract(
        &mut self,
    ) -> Result<Option<ActiveContract>, crate::ledger::LedgerError> {
        self.subnet.read_with_machine(false, |state, machine| {
            machine
                .current_contract(state)
                .map(|c| c.map(|c| (c, machine.runtime().clone())))
        })?
    }

    /// The sidechannel service.
    pub fn sidechannel(&self) -> &super::sidechannel::ScHandle {
        &self.sidechannel
    }

    /// The MSB admin (from the MSB genesis).
    pub fn msb_admin(&self) -> PublicKey {
        self.msb_genesis.admin
    }

    /// The MSB node key (validator identity, MSB log writer).
    pub fn msb_key(&self) -> &Keypair {
        &self.msb_key
    }

    /// Hands a user op to an MSB validator: this node's own when it is one (appended and
    /// broadcast at once), else a peer's over the network.
    pub fn submit_user_op(&mut self, partial: PartialOp) -> Submission {
        if !self.is_validator() {
            return Submission::Forwarded(self.forward(partial, false));
        }
        let network = self.msb.network();
        let (result, messages) = {
            let mut access = LocalMsb::new(&mut self.msb, &mut self.validator);
            let result = crate::node::MsbAccess::submit(&mut access, partial);
            (result, access.take_messages())
        };
        self.broadcast(network, messages);
        Submission::Done(result)
    }

    /// Sends a user op to the validators among the connected peers (the one that took the
    /// last op first; a peer answering "not a validator" passes it on to the next) from a
    /// task. `track`: the outcome of a refused or undelivered op also goes to the tx flow
    /// ([`TxFlow::forward_failed`]).
    pub fn forward(&self, partial: PartialOp, track: bool) -> ForwardOutcome {
        let (reply, outcome) = oneshot::channel();
        let network = self.msb.network();
        let tx_hash = partial.body.tx_hash(&network);
        let preferred = self.validator_peer.lock().ok().and_then(|p| *p);
        let mut peers: Vec<PeerId> = preferred.into_iter().collect();
        peers.extend(self.peers.iter().filter(|p| Some(**p) != preferred));
        let net = self.net.clone();
        let remember = self.validator_peer.clone();
        let tracker = track.then(|| self.forwarded_tx.clone());
        let body = ServiceRequest::Submit(partial).encode();
        spawn(async move {
            let mut result = Err(None);
            for peer in peers {
                let answer = match net.call(peer, network, body.clone()).await {
                    Ok(bytes) => ServiceAnswer::decode(&bytes),
                    Err(e) => {
                        tracing::debug!(%peer, "submission not delivered: {e}");
                        continue;
                    }
                };
                result = match answer {
                    ServiceAnswer::Submitted(hash) => Ok(hash),
                    ServiceAnswer::Rejected(Rejection::NotValidator) => continue,
                    ServiceAnswer::Rejected(rejection) => Err(Some(rejection)),
                    other => {
                        tracing::debug!(%peer, ?other, "unexpected answer to a submission");
                        continue;
                    }
                };
                if let Ok(mut slot) = remember.lock() {
                    *slot = Some(peer);
                }
                break;
            }
            match &result {
                Ok(hash) => tracing::info!(tx = %hash, "submitted to a validator"),
                Err(reason) => {
                    tracing::info!(tx = %tx_hash, ?reason, "no validator took the op");
                    if let Some(tracker) = tracker {
                        let _ = tracker.send((tx_hash, reason.clone()));
                    }
                }
            }
            let _ = reply.send(result);
        });
        outcome
    }

    /// The peer key.
    pub fn peer_key(&self) -> &Keypair {
        &self.peer_key
    }

    /// Announces ledger messages (entries, checkpoints, acks) of `network` to every peer;
    /// requests among them are dropped (they are answered by peers, not announced). Call it
    /// from a [`Command::Run`] task (it needs the node's runtime). Without peers nothing is
    /// sent: the sync requests carry the log tips once peers connect.
    pub fn broadcast(&self, network: Hash32, messages: Vec<Message>) {
        let news: Vec<Message> = messages.into_iter().filter(|m| !is_want(m)).collect();
        self.push(network, news);
    }

    /// The subnet's channel (from its genesis).
    pub fn subnet_channel(&self) -> &str {
        &self.subnet_genesis.channel
    }

    /// Whether this node created the subnet.
    pub fn created_subnet(&self) -> bool {
        self.created_subnet
    }

    /// Whether this peer is a subnet writer in the unconfirmed view (`None` if unreadable).
    pub fn writable(&mut self) -> Option<bool> {
        let me = self.peer_key.public();
        if self.subnet_genesis.creator == me {
            return Some(true);
        }
        let key = keys::writer(&me);
        match self.subnet.read(false, |s| s.get(&key)) {
            Ok(Ok(value)) => Some(value.is_some()),
            _ => None,
        }
    }

    /// The bound listen addresses (waits up to 5 s for the listeners).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        for _ in 0..50 {
            match self.net.listen_addrs().await {
                Ok(addrs) if !addrs.is_empty() => return addrs,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => break,
            }
        }
        Vec::new()
    }

    /// The node's numbers.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            msb: LedgerStats {
                network: self.msb.network(),
                status: self.msb.status(),
            },
            subnet: LedgerStats {
                network: self.subnet.network(),
                status: self.subnet.status(),
            },
            peers: self.peers.len(),
        }
    }

    /// Runs the pump until `stop` resolves (or the network stops), then shuts the network
    /// down. The stores close when the node is dropped.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (answers_tx, mut answers) = mpsc::channel::<(PeerId, Hash32, Vec<Message>)>(256);
        let mut propose = tokio::time::interval(PROPOSE_EVERY);
        propose.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sync = tokio::time::interval(SYNC_EVERY);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut commands_open = true;
        // Without the timer feature its interval never fires (a day is never reached: it is
        // only polled with the feature on).
        let mut timer = tokio::time::interval(self.timer.unwrap_or(Duration::from_secs(86_400)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timer_on = self.timer.is_some();
        let (_, idle) = mpsc::unbounded_channel();
        let mut forwarded = self.forwarded_rx.take().unwrap_or(idle);
        // The subnet's checkpoints are applied on a thread of their own while the pump goes
        // on receiving; the thread reports each one done here.
        let (applied_tx, mut applied) = mpsc::unbounded_channel::<Hash32>();
        let subnet = self.subnet.network();
        if let Err(e) = self.subnet.apply_in_background(move || {
            let _ = applied_tx.send(subnet);
        }) {
            tracing::warn!(%subnet, "checkpoints are applied on the pump: {e}");
        }
        tokio::pin!(stop);
        // The creator's first entries go out as soon as peers ask (sync), and now.
        self.announce_tips();
        loop {
            // A checkpoint the applier has finished is concluded before anything else is
            // taken (`select!` picks among ready branches at random): the applier waits for
            // the next one meanwhile.
            while let Ok(network) = applied.try_recv() {
                self.take_applied(network, &answers_tx);
            }
            tokio::select! {
                _ = &mut stop => break,
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event, &answers_tx),
                    None => {
                        tracing::warn!("the network stopped");
                        break;
                    }
                },
                Some((peer, network, messages)) = answers.recv() => {
                    let before = self.progress(network);
                    self.answered.insert(network, peer);
                    self.take_answer(peer, network, messages, &answers_tx);
                    self.follow_up_if_moved(peer, network, before, &answers_tx);
                }
                Some(network) = applied.recv() => self.take_applied(network, &answers_tx),
                Some((tx_hash, rejection)) = forwarded.recv() => {
                    match self.txflow.forward_failed(&tx_hash, rejection) {
                        Ok(Some(outcome)) => tracing::info!(tx = %tx_hash, ?outcome, "transaction"),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(tx = %tx_hash, "cannot record the validator's answer: {e}"),
                    }
                }
                _ = propose.tick() => self.propose(),
                _ = timer.tick(), if timer_on => self.timer_tick(),
                _ = sync.tick() => {
                    self.sync(&answers_tx);
                    self.poll_txs();
                    self.ask_to_write();
                    self.drain_inbox();
                }
                command = commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => commands_open = false,
                },
            }
        }
        tracing::info!("stopping the node");
        self.net.shutdown().await;
        Ok(())
    }

    /// Pushes the tip of this node's own logs (new entries made before the pump started).
    fn announce_tips(&mut self) {
        for network in [self.msb.network(), self.subnet.network()] {
            let requests = match self.sync_requests(network) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%network, "sync requests failed: {e}");
                    continue;
                }
            };
            let entries: Vec<Message> = requests
                .into_iter()
                .filter(|m| matches!(m, Message::Entry(_)))
                .collect();
            self.push(network, entries);
        }
    }

    /// How far the ledger of `network` is: (latest verified height, entries stored).
    fn progress(&self, network: Hash32) -> (u64, u64) {
        let status = if network == self.msb.network() {
            self.msb.status()
        } else {
            self.subnet.status()
        };
        (status.latest_height, status.entries)
    }

    fn sync_requests(&self, network: Hash32) -> anyhow::Result<Vec<Message>> {
        if network == self.msb.network() {
            Ok(self.msb.sync_requests()?)
        } else {
            Ok(self.subnet.sync_requests()?)
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Run(task) => task(self),
            Command::Get {
                key,
                confirmed,
                reply,
            } => {
                let value = match self.subnet.read(confirmed, |s| s.get(&key)) {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(value);
            }
        }
    }

    /// Hands one message to the ledger of `network`; returns its answer (empty for an
    /// unknown network or a refused message, which is logged).
    fn handle(&mut self, network: Hash32, message: Message) -> Vec<Message> {
        let result = if network == self.msb.network() {
            self.msb.handle(message)
        } else if network == self.subnet.network() {
            self.subnet.handle(message)
        } else {
            return Vec::new();
        };
        result.unwrap_or_else(|e| {
            tracing::debug!(%network, "message refused: {e}");
            Vec::new()
        })
    }

    /// The answer to a genesis request on `channel`, if it names one of this node's networks.
    fn genesis_answer(&self, channel: &Hash32) -> Option<Vec<Message>> {
        let bytes = if *channel == genesis_channel(&self.msb.network()) {
            codec::encode(&self.msb_genesis)
        } else if *channel == genesis_channel(&self.subnet.network()) {
            codec::encode(&self.subnet_genesis)
        } else {
            return None;
        };
        let entry = LogEntry::sign(
            &self.peer_key,
            channel,
            0,
            Hash32::ZERO,
            Vec::new(),
            vec![bytes],
        );
        Some(vec![Message::Entry(entry)])
    }

    fn on_event(
        &mut self,
        event: NetEvent,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        match event {
            NetEvent::Listening(addr) => tracing::info!(%addr, "listening"),
            NetEvent::PeerConnected(peer, key, addrs) => {
                tracing::info!(%peer, "peer connected");
                self.peers.insert(peer);
                self.remember_peer(peer, addrs);
                self.faucet(&key);
                // Catch up with the new peer at once.
                for network in [self.msb.network(), self.subnet.network()] {
                    if let Ok(requests) = self.sync_requests(network) {
                        self.ask(peer, network, requests, answers);
                    }
                }
            }
            NetEvent::PeerDisconnected(peer) => {
                tracing::info!(%peer, "peer disconnected");
                self.peers.remove(&peer);
            }
            NetEvent::Refused { peer, reason } => {
                tracing::warn!(%peer, "refused: {reason}");
            }
            NetEvent::Request {
                peer,
                network,
                messages,
                reply,
            } => {
                if let Some(answer) = self.genesis_answer(&network) {
                    let _ = reply.send(answer);
                    return;
                }
                if network != self.msb.network() && network != self.subnet.network() {
                    // Dropping the reply refuses the request.
                    return;
                }
                let mut answer = Vec::new();
                for message in messages {
                    let want = is_want(&message);
                    let out = self.handle(network, message);
                    if want {
                        answer.extend(out);
                    } else {
                        self.route(Some(peer), network, out, answers);
                    }
                }
                let _ = reply.send(answer);
            }
            NetEvent::Call {
                peer,
                network,
                body,
                reply,
            } => {
                let answer = self.serve(peer, network, &body);
                let _ = reply.send(answer.encode());
            }
            NetEvent::Pushed {
                peer,
                network,
                messages,
            } => {
                for message in messages {
                    self.feed(Some(peer), network, message, answers);
                }
            }
        }
    }

    /// The requests that follow an answer that moved a ledger: entry ranges are asked
    /// [`AHEAD_RANGES`] at a time per log, each in a request of its own (the peer reads and sends the next range
    /// while this node stores the current one; an early range waits among the orphans), the
    /// rest in one request. A range asked more than [`AHEAD_FOR`] ago counts as lost.
    fn follow_up(
        &mut self,
        peer: PeerId,
        network: Hash32,
        requests: Vec<Message>,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        let span = crate::ledger::MAX_ENTRIES_PER_ANSWER;
        let mut rest = Vec::new();
        for message in requests {
            let Message::WantEntries { writer, from } = message else {
                rest.push(message);
                continue;
            };
            let now = Instant::now();
            let key = (network, writer);
            let furthest = self
                .ahead
                .get(&key)
                .filter(|(_, at)| at.elapsed() < AHEAD_FOR)
                .map(|(start, _)| *start);
            let ranges = match furthest {
                // `from` is on its way: ask for the range after the furthest one.
                Some(start) if start >= from => vec![start + span],
                _ => (0..AHEAD_RANGES).map(|i| from + i * span).collect(),
            };
            self.ahead
                .insert(key, (*ranges.last().unwrap_or(&from), now));
            for start in ranges {
                let want = Message::WantEntries {
                    writer,
                    from: start,
                };
                self.ask(peer, network, vec![want], answers);
            }
        }
        self.ask(peer, network, rest, answers);
    }

    /// Handles a peer's answer to this node's requests: its entries in one batch
    /// ([`Ledger::receive_entries`]: one signature batch, one transaction, not re-announced),
    /// its other messages one by one; what they produce is routed once.
    fn take_answer(
        &mut self,
        peer: PeerId,
        network: Hash32,
        messages: Vec<Message>,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        let (entries, others): (Vec<Message>, Vec<Message>) = messages
            .into_iter()
            .partition(|m| matches!(m, Message::Entry(_)));
        let entries: Vec<LogEntry> = entries
            .into_iter()
            .filter_map(|m| match m {
                Message::Entry(entry) => Some(entry),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        if !entries.is_empty() {
            let result = if network == self.msb.network() {
                self.msb.receive_entries(entries)
            } else if network == self.subnet.network() {
                self.subnet.receive_entries(entries)
            } else {
                Ok(Vec::new())
            };
            match result {
                Ok(messages) => out.extend(messages),
                Err(e) => tracing::warn!(%network, "entries of an answer not stored: {e}"),
            }
        }
        for message in others {
            if is_want(&message) {
                let answer = self.handle(network, message);
                self.ask(peer, network, answer, answers);
            } else {
                out.extend(self.handle(network, message));
            }
        }
        // Requests go to the peer that answered (once each), news to everyone.
        let mut seen = Vec::new();
        out.retain(|m| {
            if !is_want(m) {
                return true;
            }
            let fresh = !seen.contains(m);
            if fresh {
                seen.push(m.clone());
            }
            fresh
        });
        self.route(Some(peer), network, out, answers);
    }

    /// Concludes a checkpoint the applier thread of `network`'s ledger has applied and routes
    /// what that produced (requests to the peer that last answered, or to every peer); if
    /// the ledger moved, follows up with that peer as after an answer.
    fn take_applied(
        &mut self,
        network: Hash32,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        let before = self.progress(network);
        let result = if network == self.msb.network() {
            self.msb.take_applied()
        } else if network == self.subnet.network() {
            self.subnet.take_applied()
        } else {
            return;
        };
        let out = result.unwrap_or_else(|e| {
            tracing::warn!(%network, "applied checkpoint not concluded: {e}");
            Vec::new()
        });
        let peer = self
            .answered
            .get(&network)
            .copied()
            .filter(|p| self.peers.contains(p));
        self.route(peer, network, out, answers);
        if let Some(peer) = peer {
            self.follow_up_if_moved(peer, network, before, answers);
        }
    }

    /// Catching up: when `network`'s ledger moved from `before` (an answer taken, a checkpoint
    /// concluded), the next requests go to `peer` at once rather than at the next sync tick.
    fn follow_up_if_moved(
        &mut self,
        peer: PeerId,
        network: Hash32,
        before: (u64, u64),
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        if self.progress(network) != before
            && let Ok(requests) = self.sync_requests(network)
        {
            self.follow_up(peer, network, requests, answers);
        }
    }

    /// Handles an announced (or answered) message and routes what the ledger returns.
    fn feed(
        &mut self,
        peer: Option<PeerId>,
        network: Hash32,
        message: Message,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        if is_want(&message) {
            // A request inside an announcement or answer: answer it to the sender.
            let out = self.handle(network, message);
            if let Some(peer) = peer
                && !out.is_empty()
            {
                self.ask(peer, network, out, answers);
            }
            return;
        }
        let out = self.handle(network, message);
        self.route(peer, network, out, answers);
    }

    /// Sends what a ledger returned: requests to `peer` (or every peer), the rest to all.
    fn route(
        &mut self,
        peer: Option<PeerId>,
        network: Hash32,
        out: Vec<Message>,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        if out.is_empty() {
            return;
        }
        let (wants, news): (Vec<Message>, Vec<Message>) = out.into_iter().partition(is_want);
        self.push(network, news);
        if !wants.is_empty() {
            let targets: Vec<PeerId> = match peer {
                Some(p) => vec![p],
                None => self.peers.iter().copied().collect(),
            };
            for target in targets {
                self.ask(target, network, wants.clone(), answers);
            }
        }
    }

    /// Announces `messages` to every peer (from a task: never waits here).
    fn push(&self, network: Hash32, messages: Vec<Message>) {
        if messages.is_empty() || self.peers.is_empty() {
            return;
        }
        let net = self.net.clone();
        spawn(async move {
            if let Err(e) = net.push(network, messages).await {
                tracing::debug!(%network, "push failed: {e}");
            }
        });
    }

    /// Sends a request to `peer` from a task; its answer comes back through `answers`.
    fn ask(
        &self,
        peer: PeerId,
        network: Hash32,
        messages: Vec<Message>,
        answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>,
    ) {
        if messages.is_empty() {
            return;
        }
        let net = self.net.clone();
        let answers = answers.clone();
        spawn(async move {
            match net.send(peer, network, messages).await {
                Ok(answer) if !answer.is_empty() => {
                    let _ = answers.send((peer, network, answer)).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%peer, %network, "request failed: {e}"),
            }
        });
    }

    /// Records a connected peer's addresses in [`KNOWN_PEERS_FILE`] (when they changed).
    fn remember_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .filter_map(|a| a.with_p2p(peer).ok())
            .collect();
        if addrs.is_empty() || self.known_peers.first() == Some(&(peer, addrs.clone())) {
            return;
        }
        self.known_peers.retain(|(p, _)| *p != peer);
        self.known_peers.insert(0, (peer, addrs));
        self.known_peers.truncate(MAX_KNOWN_PEERS);
        let text: String = self
            .known_peers
            .iter()
            .flat_map(|(_, addrs)| addrs.iter().map(|a| format!("{a}\n")))
            .collect();
        if let Err(e) = write_atomic(&self.peer_store.join(KNOWN_PEERS_FILE), text.as_bytes()) {
            tracing::warn!("cannot record the known peers: {e}");
        }
    }

    fn propose(&mut self) {
        let now = now_ms();
        let msb = self.msb.propose(now);
        let subnet = self.subnet.propose(now);
        for (network, result) in [(self.msb.network(), msb), (self.subnet.network(), subnet)] {
            match result {
                Ok(out) => {
                    if !out.is_empty() {
                        tracing::debug!(%network, messages = out.len(), "proposed");
                    }
                    let (_, news): (Vec<Message>, Vec<Message>) =
                        out.into_iter().partition(is_want);
                    self.push(network, news);
                }
                Err(e) => tracing::warn!(%network, "proposing failed: {e}"),
            }
        }
    }

    /// On a dev network with a faucet whose admin this node is, grants a newly seen peer its
    /// TNK once (an op in the admin's MSB log; the state refuses a second grant anyway).
    fn faucet(&mut self, peer: &PublicKey) {
        let me = self.msb_key.public();
        if self.msb_genesis.faucet.is_none() || self.msb_genesis.admin != me || *peer == me {
            return;
        }
        let key = crate::msb::keys::faucet(peer);
        match self.msb.read(false, |s| s.get(&key)) {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(_))) => return,
            Ok(Err(e)) => return tracing::warn!("cannot read the faucet record: {e}"),
            Err(e) => return tracing::warn!("cannot read the faucet record: {e}"),
        }
        let op = crate::msb::ops::encode_op(&MsbOp::Faucet { to: *peer });
        match self.msb.append(vec![op]) {
            Ok(entry) => {
                tracing::info!(%peer, "faucet grant appended");
                self.push(self.msb.network(), vec![Message::Entry(entry)]);
            }
            Err(e) => tracing::warn!(%peer, "faucet grant failed: {e}"),
        }
    }

    /// Advances the pending transactions of this peer (`/tx`): settled ones are appended to
    /// the subnet log and announced.
    fn poll_txs(&mut self) {
        if self.txflow.pending().is_empty() {
            return;
        }
        let (report, _) = self.with_tx_parts(|subnet, access, flow| flow.poll(subnet, access));
        match report {
            Ok(report) => {
                for tx in &report.txs {
                    tracing::info!(tx = %tx.tx_hash, outcome = ?tx.outcome, "transaction");
                }
                self.push(self.subnet.network(), report.messages);
            }
            Err(e) => tracing::warn!("polling the pending transactions failed: {e}"),
        }
    }

    /// The timer feature (`--timer`): on the subnet admin's node, while it is a writer,
    /// appends a `timer` feature entry `currentTime` = now (ms) that the contract applies.
    fn timer_tick(&mut self) {
        let me = self.peer_key.public();
        let admin = self.subnet.read(false, |s| SubnetMachine::admin(s));
        if !matches!(admin, Ok(Ok(Some(admin))) if admin == me) {
            tracing::debug!("timer: this peer is not the subnet admin");
            return;
        }
        if self.writable() != Some(true) {
            println!("Peer running features not writable.");
            return;
        }
        let expires = self.subnet.status().latest_height + super::terminal::OP_EXPIRY;
        let op = OpSigner::new(self.peer_key.clone(), self.subnet.network()).sign(
            Action::Feature {
                feature: "timer".to_string(),
                key: "currentTime".to_string(),
                value: serde_bytes::ByteBuf::from(codec::encode(&now_ms())),
            },
            expires,
        );
        match self.subnet.append(vec![op]) {
            Ok(entry) => self.push(self.subnet.network(), vec![Message::Entry(entry)]),
            Err(e) => println!("Timer feature stopped: {e}"),
        }
    }

    /// Deploys the components tools dropped in the inbox ([`crate::node::inbox`]) as
    /// `/deploy_contract` would, and records each outcome for the tool.
    fn drain_inbox(&mut self) {
        for path in inbox::pending(&self.peer_store) {
            let command = crate::terminal::Command::DeployContract { file: path.clone() };
            let outcome = match super::terminal::start(self, command) {
                super::terminal::Answer::Now(outcome) => outcome,
                super::terminal::Answer::Later(_) => Err("unexpected deferred answer".into()),
            };
            match &outcome {
                Ok(text) => tracing::info!(file = %path.display(), "inbox deploy: {text}"),
                Err(e) => tracing::warn!(file = %path.display(), "inbox deploy refused: {e}"),
            }
            inbox::finish(&path, &outcome);
        }
    }

    /// Answers a peer's service call ([`crate::node::service`]).
    fn serve(&mut self, peer: PeerId, network: Hash32, body: &[u8]) -> ServiceAnswer {
        let request = match ServiceRequest::decode(body) {
            Ok(request) => request,
            Err(refusal) => return refusal,
        };
        match request {
            ServiceRequest::Submit(partial) if network == self.msb.network() => {
                if !self.is_validator() {
                    return ServiceAnswer::Rejected(Rejection::NotValidator);
                }
                match self.submit_user_op(partial) {
                    Submission::Done(Ok(hash)) => ServiceAnswer::Submitted(hash),
                    Submission::Done(Err(SubmitError::Rejected(r))) => ServiceAnswer::Rejected(r),
                    Submission::Done(Err(SubmitError::Node(e))) => {
                        tracing::warn!(%peer, "a forwarded submission failed here: {e}");
                        ServiceAnswer::Refused(format!("the validator's node failed: {e}"))
                    }
                    Submission::Forwarded(_) => ServiceAnswer::Rejected(Rejection::NotValidator),
                }
            }
            ServiceRequest::AutoAddWriter(op) if network == self.subnet.network() => {
                match self.append_auto_add(peer, op.into_vec()) {
                    Ok(answer) => answer,
                    Err(reason) => ServiceAnswer::Refused(reason),
                }
            }
            _ => ServiceAnswer::Refused(format!("no such service on network {network}")),
        }
    }

    /// A writer lends its log to a peer's own `autoAddWriter` op while auto-add is on.
    fn append_auto_add(&mut self, peer: PeerId, op: Vec<u8>) -> Result<ServiceAnswer, String> {
        let caller = crate::net::public_key_of(&peer)
            .ok_or_else(|| "the caller's identity is not a peer key".to_string())?;
        check_auto_add(&self.subnet.network(), &caller, &op)?;
        if self.writable() != Some(true) {
            return Err("this peer is not a writer".to_string());
        }
        let (enabled, writer, banned) = self
            .subnet
            .read(false, |s| -> Result<_, crate::ledger::LedgerError> {
                Ok((
                    SubnetMachine::auto_add_writers(s)?,
                    s.get(&keys::writer(&caller))?.is_some(),
                    SubnetMachine::is_banned(s, &caller)?,
                ))
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if writer {
            return Ok(ServiceAnswer::Appended);
        }
        if !enabled {
            return Err("auto-add of writers is off on this subnet".to_string());
        }
        if banned {
            return Err(format!("{caller} was removed and cannot re-add itself"));
        }
        let now = Instant::now();
        self.auto_added
            .retain(|_, at| now.duration_since(*at) < AUTO_ADD_MEMORY);
        if self.auto_added.contains_key(&caller) {
            return Ok(ServiceAnswer::Appended);
        }
        let entry = self
            .subnet
            .append(vec![op])
            .map_err(|e| format!("cannot append: {e}"))?;
        self.auto_added.insert(caller, now);
        tracing::info!(%caller, "auto-add request appended");
        self.push(self.subnet.network(), vec![Message::Entry(entry)]);
        Ok(ServiceAnswer::Appended)
    }

    /// While this peer is not a writer and the subnet's auto-add is on, asks the connected
    /// peers (every [`AUTO_ADD_EVERY`]) to append its signed `autoAddWriter` op.
    fn ask_to_write(&mut self) {
        // While catching up, the view is behind (and rebuilding it after every stored answer
        // would cost as much as applying the entries again).
        if self.peers.is_empty()
            || self.subnet.catching_up()
            || self
                .auto_add_asked
                .is_some_and(|at| at.elapsed() < AUTO_ADD_EVERY)
            || self.writable() != Some(false)
        {
            return;
        }
        let me = self.peer_key.public();
        let wanted = self.subnet.read(false, |s| {
            Ok::<_, crate::ledger::LedgerError>(
                SubnetMachine::auto_add_writers(s)? && !SubnetMachine::is_banned(s, &me)?,
            )
        });
        if !matches!(wanted, Ok(Ok(true))) {
            return;
        }
        self.auto_add_asked = Some(Instant::now());
        let expires = self.subnet.status().latest_height + super::terminal::OP_EXPIRY;
        let op = OpSigner::new(self.peer_key.clone(), self.subnet.network())
            .sign(Action::AutoAddWriter, expires);
        let body = ServiceRequest::AutoAddWriter(serde_bytes::ByteBuf::from(op)).encode();
        let network = self.subnet.network();
        let peers: Vec<PeerId> = self.peers.iter().copied().collect();
        let net = self.net.clone();
        spawn(async move {
            for peer in peers {
                match net.call(peer, network, body.clone()).await {
                    Ok(bytes) => match ServiceAnswer::decode(&bytes) {
                        ServiceAnswer::Appended => {
                            tracing::info!(%peer, "a writer appended this peer's auto-add request");
                            return;
                        }
                        other => tracing::debug!(%peer, ?other, "auto-add request not taken"),
                    },
                    Err(e) => tracing::debug!(%peer, "auto-add request failed: {e}"),
                }
            }
        });
    }

    fn sync(&mut self, answers: &mpsc::Sender<(PeerId, Hash32, Vec<Message>)>) {
        let peers: Vec<PeerId> = self.peers.iter().copied().collect();
        if peers.is_empty() {
            return;
        }
        for network in [self.msb.network(), self.subnet.network()] {
            match self.sync_requests(network) {
                Ok(requests) => {
                    for peer in &peers {
                        self.ask(*peer, network, requests.clone(), answers);
                    }
                }
                Err(e) => tracing::warn!(%network, "sync requests failed: {e}"),
            }
        }
    }
}

/// Spawns on the current tokio runtime; outside one (never on the pump) the work is dropped
/// with a warning instead of panicking.
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => tracing::warn!("network work outside the node's runtime was dropped"),
    }
}

fn is_want(message: &Message) -> bool {
    matches!(
        message,
        Message::WantEntries { .. } | Message::WantCheckpoints { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_ops_are_split_within_the_ledger_limits() {
        let limits = LedgerLimits::default();
        let small: Vec<Vec<u8>> = (0..600).map(|i| vec![i as u8; 10]).collect();
        let sizes: Vec<usize> = entries_of(small, &limits).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![256, 256, 88]);

        let big: Vec<Vec<u8>> = (0..10).map(|_| vec![0; 1 << 20]).collect();
        let entries = entries_of(big, &limits);
        assert_eq!(entries.len(), 4);
        for entry in &entries {
            assert!(entry.iter().map(Vec::len).sum::<usize>() <= limits.max_entry_bytes);
        }
        assert!(entries_of(Vec::new(), &limits).is_empty());
    }

    #[test]
    fn the_node_can_move_to_another_task() {
        fn is_send<T: Send>() {}
        is_send::<Node>();
        is_send::<Command>();
    }

    #[test]
    fn genesis_channels_differ_from_the_ids() {
        let id = Hash32([7; 32]);
        assert_ne!(genesis_channel(&id), id);
        assert_ne!(genesis_channel(&id), genesis_channel(&Hash32([8; 32])));
    }
}
