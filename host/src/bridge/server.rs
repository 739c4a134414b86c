//! The SC-Bridge server: axum's WebSocket upgrade behind the Origin, lock-out and client-count
//! checks, and one task per client that reads its requests, answers them on the sidechannel
//! service and forwards the service's notices through a byte-bounded outbox.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use super::protocol::{self, Parsed, Request};
use super::{
    AUTH_TIMEOUT, FAILURE_WINDOW, Filter, MAX_AUTH_FAILURES, MAX_FAILURES_PER_ADDRESS, Settings,
};
use crate::crypto::PublicKey;
use crate::node::now_ms;
use crate::node::sidechannel::{ScHandle, ScNotice, ScStopped};
use crate::sidechannel::{Invite, JoinOutcome, ScError, Welcome};
use crate::terminal::{Command, Outcome};

/// Runs one terminal line (the node's dispatcher; blocking: called off the runtime).
pub type CliRunner = Arc<dyn Fn(&str) -> Outcome + Send + Sync>;

/// What the bridge serves.
#[derive(Clone)]
pub struct BridgeContext {
    /// The sidechannel service.
    pub sidechannel: ScHandle,
    /// This node's peer key (in `auth_ok`).
    pub peer: PublicKey,
    /// The `info` payload (the startup banner's values).
    pub info: Value,
    /// The terminal's dispatcher for `cli` (used only with `--sc-bridge-cli 1`).
    pub cli: Option<CliRunner>,
}

/// A running bridge.
#[derive(Debug)]
pub struct Bridge {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Bridge {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every client and stops listening.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Wrong tokens per address, for the lock-out.
#[derive(Debug, Default)]
struct Failures {
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Failures {
    /// Forgets failures older than the window; whether `ip` is locked out.
    fn locked(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.by_address.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        self.by_address
            .get(&ip)
            .is_some_and(|times| times.len() >= MAX_FAILURES_PER_ADDRESS)
    }

    fn record(&mut self, ip: IpAddr, now: Instant) {
        let times = self.by_address.entry(ip).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES_PER_ADDRESS {
            times.pop_front();
        }
    }
}

/// State shared by the clients.
struct Shared {
    settings: Settings,
    context: BridgeContext,
    token_digest: Option<[u8; 32]>,
    clients: AtomicUsize,
    failures: Mutex<Failures>,
    /// `cli` commands run one at a time.
    cli_turn: tokio::sync::Mutex<()>,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn debug(&self, text: impl FnOnce() -> String) {
        if self.settings.debug {
            eprintln!("[sc-bridge] {}", text());
        }
    }

    /// Whether `token` is the configured one (constant time over the digests).
    fn token_matches(&self, token: &str) -> bool {
        let Some(expected) = &self.token_digest else {
            return false;
        };
        let given = blake3::hash(token.as_bytes());
        bool::from(given.as_bytes().ct_eq(expected))
    }

    fn locked(&self, ip: IpAddr) -> bool {
        self.failures
            .lock()
            .map(|mut f| f.locked(ip, Instant::now()))
            .unwrap_or(true)
    }

    fn record_failure(&self, ip: IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.record(ip, Instant::now());
        }
    }
}

/// A client's place, released when its connection ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        let left = self.0.clients.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.debug(|| format!("clients {left}"));
    }
}

/// Starts the bridge on the current runtime (the settings must have a token).
pub async fn start(settings: &Settings, context: BridgeContext) -> anyhow::Result<Bridge> {
    let token = settings
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "SC-Bridge requires --sc-bridge-token (auth is mandatory); or --sc-bridge-token-file / SC_BRIDGE_TOKEN"
            )
        })?;
    let bind = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind} for the SC-Bridge: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        context,
        token_digest: Some(*blake3::hash(token.as_bytes()).as_bytes()),
        clients: AtomicUsize::new(0),
        failures: Mutex::new(Failures::default()),
        cli_turn: tokio::sync::Mutex::new(()),
        stop: stopped.clone(),
    });
    let app = Router::new().fallback(upgrade).with_state(shared);
    let mut shutdown = stopped;
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
        })
        .await;
        if let Err(e) = served {
            tracing::warn!("the SC-Bridge stopped: {e}");
        }
    });
    tracing::info!(%addr, "SC-Bridge listening");
    Ok(Bridge { addr, stop, task })
}

/// Checks the Origin, the lock-out and the client count, then upgrades.
async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !shared.settings.origin_allowed(origin) {
            shared.debug(|| format!("refused origin {origin:?} from {peer}"));
            return (StatusCode::FORBIDDEN, "Origin not allowed.").into_response();
        }
    }
    if shared.locked(peer.ip()) {
        shared.debug(|| format!("refused {peer}: too many failed auth attempts"));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed auth attempts; try again later.",
        )
            .into_response();
    }
    let before = shared.clients.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(shared.clone());
    if before >= shared.settings.max_clients {
        drop(slot);
        return (StatusCode::SERVICE_UNAVAILABLE, "Too many clients.").into_response();
    }
    shared.debug(|| format!("clients {}", before + 1));
    let max = shared.settings.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let ip = peer.ip();
            Client::new(shared, ip).run(socket).await;
            drop(slot);
        })
}

/// Messages on their way to one client, bounded in bytes: events beyond the bound are
/// dropped (and counted), replies wait for room.
#[derive(Clone)]
struct Outbox {
    queue: mpsc::UnboundedSender<String>,
    bytes: Arc<AtomicUsize>,
    room: Arc<Notify>,
    budget: usize,
}

impl Outbox {
    fn new(budget: usize) -> (Outbox, mpsc::UnboundedReceiver<String>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let outbox = Outbox {
            queue,
            bytes: Arc::new(AtomicUsize::new(0)),
            room: Arc::new(Notify::new()),
            budget,
        };
        (outbox, receiver)
    }

    fn enqueue(&self, text: String) {
        self.bytes.fetch_add(text.len(), Ordering::SeqCst);
        let _ = self.queue.send(text);
    }

    /// Queues `text` if it fits (anything fits an empty queue); false when it does not (the
    /// client is behind).
    fn offer(&self, text: String) -> bool {
        let queued = self.bytes.load(Ordering::SeqCst);
        if queued > 0 && queued + text.len() > self.budget {
            return false;
        }
        self.enqueue(text);
        true
    }

    /// Whether the queue is under its budget.
    fn has_room(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) < self.budget
    }

    /// `text` was written to the socket.
    fn sent(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::SeqCst);
        self.room.notify_waiters();
    }
}

/// One connected client.
struct Client {
    shared: Arc<Shared>,
    ip: IpAddr,
    authed: bool,
    failures: u32,
    filter: Filter,
    channels: BTreeSet<String>,
    /// Events not delivered because the client was behind, not yet reported.
    lagged: u64,
    outbox: Outbox,
    outgoing: Option<mpsc::UnboundedReceiver<String>>,
    /// The service's notices (drained even while a reply waits, so that a stalled client
    /// never holds the service's backlog).
    notices: broadcast::Receiver<ScNotice>,
}

/// Whether the client loop goes on.
enum Flow {
    Continue,
    Close(u16, &'static str),
}

impl Client {
    fn new(shared: Arc<Shared>, ip: IpAddr) -> Client {
        let (outbox, outgoing) = Outbox::new(shared.settings.client_queue_bytes);
        let filter = Filter::parse(&shared.settings.filter);
        let notices = shared.context.sidechannel.subscribe();
        Client {
            shared,
            ip,
            authed: false,
            failures: 0,
            filter,
            channels: BTreeSet::new(),
            lagged: 0,
            outbox,
            outgoing: Some(outgoing),
            notices,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let Some(mut outgoing) = self.outgoing.take() else {
            return;
        };
        let (close_tx, mut close_rx) = mpsc::channel::<(u16, &'static str)>(1);
        let writer_outbox = self.outbox.clone();
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    text = outgoing.recv() => {
                        let Some(text) = text else { break };
                        let len = text.len();
                        let sent = sink.send(Message::Text(text.into())).await;
                        writer_outbox.sent(len);
                        if sent.is_err() {
                            break;
                        }
                    }
                    close = close_rx.recv() => {
                        // Flush what is queued, then close.
                        while let Ok(text) = outgoing.try_recv() {
                            let len = text.len();
                            let sent = sink.send(Message::Text(text.into())).await;
                            writer_outbox.sent(len);
                            if sent.is_err() {
                                return;
                            }
                        }
                        if let Some((code, reason)) = close {
                            let frame = CloseFrame { code, reason: reason.into() };
                            let _ = sink.send(Message::Close(Some(frame))).await;
                        }
                        let _ = sink.close().await;
                        return;
                    }
                }
            }
        });

        let hello = json!({
            "type": "hello",
            "entryChannel": crate::sidechannel::ENTRY_CHANNEL,
            "filter": self.filter.raw(),
            "requiresAuth": true,
        });
        self.outbox.enqueue(hello.to_string());
        let mut stop = self.shared.stop.clone();
        let deadline = tokio::time::sleep(AUTH_TIMEOUT);
        tokio::pin!(deadline);
        let flow = loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Flow::Close(code, reason) = self.frame(text.as_str()).await {
                            break Some((code, reason));
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.reply(protocol::error(None, protocol::BINARY)).await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        self.shared.debug(|| format!("client {}: {e}", self.ip));
                        break Some((close_code::SIZE, "Frame too large or invalid."));
                    }
                },
                notice = self.notices.recv(), if self.authed => {
                    if !self.absorb(notice) {
                        break Some((close_code::AWAY, "The node is stopping."));
                    }
                }
                () = &mut deadline, if !self.authed => {
                    self.reply(protocol::error(None, protocol::AUTH_TIMEOUT)).await;
                    break Some((close_code::POLICY, protocol::AUTH_TIMEOUT));
                }
                _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => {
                    break Some((close_code::AWAY, "The node is stopping."));
                }
            }
        };
        let _ = close_tx
            .send(flow.unwrap_or((close_code::NORMAL, "")))
            .await;
        drop(close_tx);
        let _ = writer.await;
    }

    /// Queues a reply once the client's queue is under its budget (a client that does not
    /// read stops being served); notices arriving meanwhile are counted as lost.
    async fn reply(&mut self, value: Value) {
        loop {
            let room = self.outbox.room.notified();
            if self.outbox.has_room() {
                break;
            }
            tokio::select! {
                () = room => {}
                notice = self.notices.recv(), if self.authed => {
                    if !self.absorb(notice) {
                        break;
                    }
                }
            }
        }
        self.outbox.enqueue(value.to_string());
    }

    /// Takes one notice from the service; false when the service has stopped.
    fn absorb(&mut self, notice: Result<ScNotice, broadcast::error::RecvError>) -> bool {
        match notice {
            Ok(notice) => self.notice(&notice),
            Err(broadcast::error::RecvError::Lagged(n)) => self.lagged += n,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
        true
    }

    /// Forwards a notice, subject to the subscriptions and the filter.
    fn notice(&mut self, notice: &ScNotice) {
        let value = match notice {
            ScNotice::Message(delivery) => {
                self.shared.debug(|| {
                    format!(
                        "recv {}: {}",
                        crate::terminal::sanitize(&delivery.channel),
                        crate::terminal::sanitize(&delivery.message)
                    )
                });
                if !self.channels.is_empty() && !self.channels.contains(&delivery.channel) {
                    return;
                }
                let filtered = self.shared.settings.filter_channels.is_empty()
                    || self
                        .shared
                        .settings
                        .filter_channels
                        .contains(&delivery.channel);
                if filtered
                    && !self
                        .filter
                        .matches(&protocol::message_text(&delivery.message))
                {
                    self.shared.debug(|| "filtered".to_string());
                    return;
                }
                protocol::message_event(delivery)
            }
            other => match protocol::notice_event(other) {
                Some(value) => value,
                None => return,
            },
        };
        if self.lagged > 0 {
            let report = json!({ "type": "lagged", "dropped": self.lagged }).to_string();
            if !self.outbox.offer(report) {
                self.lagged += 1;
                return;
            }
            self.lagged = 0;
        }
        if self.outbox.offer(value.to_string()) {
            self.shared.debug(|| "emit".to_string());
        } else {
            self.lagged += 1;
        }
    }

    /// Handles one text frame.
    async fn frame(&mut self, text: &str) -> Flow {
        let Parsed { id, request } = match protocol::parse(text) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.reply(protocol::error(None, error)).await;
                return Flow::Continue;
            }
        };
        if let Request::Auth { token } = request {
            return self.auth(id, &token).await;
        }
        if !self.authed {
            self.reply(protocol::error(id, protocol::UNAUTHORIZED))
                .await;
            return Flow::Continue;
        }
        // A client that fell behind learns it at its next request at the latest.
        if self.lagged > 0 {
            let report = json!({ "type": "lagged", "dropped": self.lagged });
            self.lagged = 0;
            self.reply(report).await;
        }
        let answer = self.request(id, request).await;
        self.reply(answer).await;
        Flow::Continue
    }

    async fn auth(&mut self, id: Option<i64>, token: &str) -> Flow {
        if self.shared.token_matches(token) {
            self.authed = true;
            self.shared
                .debug(|| format!("client {} authenticated", self.ip));
            let peer = self.shared.context.peer;
            let answer = protocol::reply(
                "auth_ok",
                id,
                json!({
                    "peer": peer.to_hex(),
                    "address": peer.address(),
                    "entryChannel": crate::sidechannel::ENTRY_CHANNEL,
                    "filter": self.filter.raw(),
                    "cli": self.shared.settings.cli,
                }),
            );
            self.reply(answer).await;
            return Flow::Continue;
        }
        self.failures += 1;
        self.shared.record_failure(self.ip);
        self.shared
            .debug(|| format!("client {}: wrong token ({})", self.ip, self.failures));
        self.reply(protocol::error(id, protocol::UNAUTHORIZED))
            .await;
        if self.failures >= MAX_AUTH_FAILURES || self.shared.locked(self.ip) {
            self.reply(protocol::error(id, protocol::TOO_MANY_FAILURES))
                .await;
            return Flow::Close(close_code::POLICY, protocol::TOO_MANY_FAILURES);
        }
        Flow::Continue
    }

    /// Answers an authenticated request.
    async fn request(&mut self, id: Option<i64>, request: Request) -> Value {
        let sc = &self.shared.context.sidechannel;
        let not_ready = |_: ScStopped| protocol::error(id, protocol::NOT_READY);
        match request {
            Request::Auth { .. } => protocol::error(id, protocol::UNAUTHORIZED),
            Request::Ping => protocol::reply("pong", id, json!({ "ts": now_ms() })),
            Request::SetFilter { filter } => {
                self.filter = Filter::parse(&filter);
                protocol::reply("filter_set", id, json!({ "filter": self.filter.raw() }))
            }
            Request::ClearFilter => {
                self.filter = Filter::default();
                protocol::reply("filter_set", id, json!({ "filter": "" }))
            }
            Request::Subscribe { channels } => {
                self.channels.extend(channels);
                protocol::reply("subscribed", id, json!({ "channels": self.channels }))
            }
            Request::Unsubscribe { channels } => {
                for channel in &channels {
                    self.channels.remove(channel);
                }
                protocol::reply("subscribed", id, json!({ "channels": self.channels }))
            }
            Request::Send {
                channel,
                message,
                invite,
                welcome,
            } => self
                .send(id, channel, message, invite, welcome)
                .await
                .unwrap_or_else(|e| e),
            Request::Join {
                channel,
                invite,
                welcome,
                owner,
            } => self
                .join(id, channel, invite, welcome, owner)
                .await
                .unwrap_or_else(|e| e),
            Request::Leave { channel } => {
                if channel.is_empty() {
                    return protocol::error(id, protocol::MISSING_CHANNEL);
                }
                let name = channel.clone();
                let left = sc
                    .attempt(move |engine, now| engine.leave(&channel, now).map(|out| ((), out)))
                    .await;
                self.channels.remove(&name);
                match left {
                    Err(e) => not_ready(e),
                    Ok(Ok(())) => {
                        protocol::reply("left", id, json!({ "channel": name, "ok": true }))
                    }
                    Ok(Err(ScError::EntryChannel | ScError::NotJoined(_))) => {
                        protocol::reply("left", id, json!({ "channel": name, "ok": false }))
                    }
                    Ok(Err(e)) => protocol::error(id, &format!("Leave failed: {e}.")),
                }
            }
            Request::Open {
                channel,
                via,
                invite,
                welcome,
            } => self
                .open(id, channel, via, invite, welcome)
                .await
                .unwrap_or_else(|e| e),
            Request::Stats => {
                let stats = sc.run(|engine, _| (engine.stats(), Vec::new())).await;
                match stats {
                    Err(e) => not_ready(e),
                    Ok(stats) => {
                        let drops: serde_json::Map<String, Value> = stats
                            .drops
                            .iter()
                            .map(|(reason, n)| (format!("{reason:?}"), json!(n)))
                            .collect();
                        protocol::reply(
                            "stats",
                            id,
                            json!({
                                "channels": stats.channels.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                                "connectionCount": stats.neighbours,
                                "sidechannelStarted": true,
                                "sent": stats.sent,
                                "received": stats.received,
                                "delivered": stats.delivered,
                                "relayed": stats.relayed,
                                "drops": drops,
                                "bridgeClients": self.shared.clients.load(Ordering::SeqCst),
                            }),
                        )
                    }
                }
            }
            Request::Info => {
                protocol::reply("info", id, json!({ "info": self.shared.context.info }))
            }
            Request::Cli { command } => self.cli(id, command).await,
            Request::Unknown(kind) => protocol::error(id, &format!("Unknown type: {kind}")),
        }
    }

    /// `join`: with the invite, welcome and owner given.
    async fn join(
        &self,
        id: Option<i64>,
        channel: String,
        invite: Option<Value>,
        welcome: Option<Value>,
        owner: Option<Value>,
    ) -> Result<Value, Value> {
        let (invite, welcome) = target(id, &channel, invite, welcome)?;
        let owner = owner
            .map(|o| {
                o.as_str()
                    .and_then(|hex| PublicKey::from_hex(&hex.trim().to_ascii_lowercase()).ok())
                    .ok_or_else(|| protocol::error(id, protocol::INVALID_OWNER))
            })
            .transpose()?;
        let name = channel.clone();
        let outcome = self
            .shared
            .context
            .sidechannel
            .attempt(move |engine, now| engine.join(&channel, invite, welcome, owner, now))
            .await
            .map_err(|_| protocol::error(id, protocol::NOT_READY))?
            .map_err(|e| protocol::error(id, &format!("Join denied: {e}.")))?;
        let role = match outcome {
            JoinOutcome::Member => "member",
            JoinOutcome::Relay => "relay",
        };
        Ok(protocol::reply(
            "joined",
            id,
            json!({ "channel": name, "role": role }),
        ))
    }

    /// `open`: asks the neighbours on `via` (default: the entry channel) to join `channel`.
    async fn open(
        &self,
        id: Option<i64>,
        channel: String,
        via: Option<String>,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Result<Value, Value> {
        let (invite, welcome) = target(id, &channel, invite, welcome)?;
        let name = channel.clone();
        let asked_via = via.clone();
        self.shared
            .context
            .sidechannel
            .attempt(move |engine, now| {
                engine
                    .open(&channel, via.as_deref(), invite, welcome, now)
                    .map(|out| ((), out))
            })
            .await
            .map_err(|_| protocol::error(id, protocol::NOT_READY))?
            .map_err(|e| protocol::error(id, &format!("Open request denied: {e}.")))?;
        Ok(protocol::reply(
            "open_requested",
            id,
            json!({ "channel": name, "via": asked_via }),
        ))
    }

    /// `send`: joins when needed (with the invite or welcome given), signs, solves the proof
    /// of work off the service's task, and fans out.
    async fn send(
        &self,
        id: Option<i64>,
        channel: String,
        message: Value,
        invite: Option<Value>,
        welcome: Option<Value>,
    ) -> Result<Value, Value> {
        let (invite, welcome) = target(id, &channel, invite, welcome)?;
        let sc = &self.shared.context.sidechannel;
        let not_ready = |_: ScStopped| protocol::error(id, protocol::NOT_READY);
        let denied = |e: ScError| protocol::error(id, &format!("Send denied: {e}."));
        let json = message.to_string();
        let name = channel.clone();
        let pending = sc
            .run(move |engine, now| {
                let mut out = Vec::new();
                let mut invite = invite;
                // A welcome is offered by joining with it (and the invite, if any).
                if let Some(welcome) = welcome {
                    match engine.join(&channel, invite.take(), Some(welcome), None, now) {
                        Ok((_, joined)) => out = joined,
                        Err(e) => return (Err(e), out),
                    }
                }
                let prepared =
                    engine
                        .prepare_send(&channel, &json, invite, now)
                        .map(|(pending, more)| {
                            out.extend(more);
                            pending
                        });
                (prepared, out)
            })
            .await
            .map_err(not_ready)?
            .map_err(denied)?;
        let solved = tokio::task::spawn_blocking(move || pending.solve())
            .await
            .map_err(|_| protocol::error(id, protocol::NOT_READY))?;
        let (frame, recipients) = sc
            .attempt(move |engine, _| {
                engine.finish_send(solved).map(|(frame, out)| {
                    let n = out.len();
                    ((frame, n), out)
                })
            })
            .await
            .map_err(not_ready)?
            .map_err(denied)?;
        Ok(protocol::reply(
            "sent",
            id,
            json!({
                "channel": name,
                "messageId": frame.id_hex(),
                "recipients": recipients,
            }),
        ))
    }

    /// `cli`: one terminal line through the node's dispatcher, one at a time.
    async fn cli(&self, id: Option<i64>, command: String) -> Value {
        let runner = match (&self.shared.context.cli, self.shared.settings.cli) {
            (Some(runner), true) => runner.clone(),
            _ => return protocol::error(id, protocol::CLI_DISABLED),
        };
        if command.is_empty() {
            return protocol::error(id, protocol::MISSING_COMMAND);
        }
        if let Ok(parsed) = Command::parse(&command)
            && matches!(parsed, Command::Exit | Command::GetKeys)
        {
            let message = format!("{} is not available over the bridge.", parsed.name());
            return cli_result(id, &command, Err(message));
        }
        let _turn = self.shared.cli_turn.lock().await;
        let line = command.clone();
        let outcome = tokio::task::spawn_blocking(move || runner(&line)).await;
        match outcome {
            Ok(outcome) => cli_result(id, &command, outcome.result),
            Err(_) => cli_result(id, &command, Err("the command failed".to_string())),
        }
    }
}

/// `{type: "cli_result", command, ok, output, error, result}`.
fn cli_result(id: Option<i64>, command: &str, result: Result<String, String>) -> Value {
    let lines = |text: &str| -> Vec<String> {
        crate::terminal::sanitize_block(text)
            .lines()
            .map(str::to_string)
            .collect()
    };
    match result {
        Ok(out) => protocol::reply(
            "cli_result",
            id,
            json!({ "command": command, "ok": true, "output": lines(&out), "error": null, "result": null }),
        ),
        Err(message) => protocol::reply(
            "cli_result",
            id,
            json!({
                "command": command,
                "ok": false,
                "output": [],
                "error": crate::terminal::sanitize_block(&message),
                "result": null,
            }),
        ),
    }
}

/// Checks a request's channel (`Missing channel.`) and decodes its invite and welcome.
#[allow(clippy::result_large_err)]
fn target(
    id: Option<i64>,
    channel: &str,
    invite: Option<Value>,
    welcome: Option<Value>,
) -> Result<(Option<Invite>, Option<Welcome>), Value> {
    if channel.is_empty() {
        return Err(protocol::error(id, protocol::MISSING_CHANNEL));
    }
    blobs(id, invite, welcome)
}

/// Decodes the invite and welcome of a request.
#[allow(clippy::result_large_err)]
fn blobs(
    id: Option<i64>,
    invite: Option<Value>,
    welcome: Option<Value>,
) -> Result<(Option<Invite>, Option<Welcome>), Value> {
    let invite = invite
        .map(|v| {
            protocol::blob_text(&v)
                .and_then(|t| Invite::from_base64(t).ok())
                .ok_or_else(|| protocol::error(id, protocol::INVALID_INVITE))
        })
        .transpose()?;
    let welcome = welcome
        .map(|v| {
            protocol::blob_text(&v)
                .and_then(|t| Welcome::from_base64(t).ok())
                .ok_or_else(|| protocol::error(id, protocol::INVALID_WELCOME))
        })
        .transpose()?;
    Ok((invite, welcome))
}
