//! The `sidechannel` suite: signed 1 KiB sidechannel messages between two processes on
//! loopback, each running the network layer ([`Net`]: TCP + Noise + Yamux,
//! `/trac/sidechannel/2`) and a sidechannel [`Engine`] — no node, no terminal.
//!
//! - **Two processes.** The suite is the sender. For each scenario it starts a copy of its own
//!   executable as the receiver (`trac bench sidechannel --serve <policy>`, a hidden flag), with
//!   the scenario's policy: the receiver listens on 127.0.0.1 (a random port), prints its
//!   address on stdout and serves until its stdin closes. The sender dials it; both engines
//!   hold the other as their only neighbour; every message goes on the entry channel
//!   ([`ENTRY_CHANNEL`], exempt from welcomes, subject to proof of work and rate limits).
//! - **Messages**: JSON text of exactly [`MESSAGE_BYTES`] bytes, `{"seq":…,"t":…,"pad":"…"}`,
//!   where `t` is the wall-clock time (ns since the epoch) read just before `Engine::send`, so
//!   the latency includes signing and proof of work. The sender's engine signs (and solves the
//!   proof of work inline), [`NetHandle::sidechannel_send`] queues the frame. Both sides run on
//!   tokio worker tasks of the runtime a node runs on ([`crate::node::runtime`]), as the
//!   node's sidechannel service does.
//! - **One-way latency**: the receiver's engine checks every frame (size, rate, encoding,
//!   time window, duplicates, proof of work, the author's signature) in
//!   [`Engine::receive`]; for every delivery it reads the same clock (both processes run on one
//!   machine) and prints `seq`, the one-way latency and the time `Engine::receive` took. The
//!   receiver's stdout is the control channel (a pipe, outside the measured path).
//! - **Sequential** scenarios send one message, wait until the receiver reports it, then send
//!   the next at the next tick of a fixed rate (the JavaScript baselines were measured at 10 and
//!   20 messages/s), after [`WARMUP`] messages that are not counted. The rows under a scenario
//!   split its latency: `Engine::send` (sender), the network (from the frame queued to the
//!   frame taken by the receiver's engine task) and `Engine::receive` (receiver).
//! - **Sustained** scenarios keep at most [`WINDOW`] messages sent but not yet reported by the
//!   receiver (the network layer drops the oldest queued frames of a slow peer, so an unbounded
//!   flood would measure drops, not delivery), and time `count` messages from the first send
//!   to the receiver's report of the last. The receiver's rate limiter is off there (the
//!   default, 64 kB/s per neighbour, would hold 1 KiB messages to about 47/s).
//! - **Honesty checks**: messages arrive in order, each exactly once; at the end the receiver's
//!   engine has delivered every message with its signature verified and dropped no frame, its
//!   network dropped no inbound frame and the sender's network dropped no queued frame.
//! - **Memory**: `VmRSS` and `VmHWM` of both processes (`/proc/<pid>/status`) at the end of the
//!   sustained run without proof of work.
//!
//! Only when the suite runs inside the `trac` executable (it starts a copy of itself).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail, ensure};
use tokio::sync::mpsc;

use super::Measurement;
use super::child::{ChildGuard, memory_kib};
use crate::crypto::Keypair;
use crate::net::{
    Multiaddr, Net, NetConfig, NetEvent, NetHandle, PeerId, ScInbound, ScInboundKind, peer_id_of,
    public_key_of,
};
use crate::sidechannel::{ENTRY_CHANNEL, Engine, Outbound, PersistedState, Settings};

/// Length of every message (JSON text), bytes.
pub const MESSAGE_BYTES: usize = 1024;

/// Messages sent (and received) before the measured ones of each scenario.
const WARMUP: u64 = 20;

/// Messages sent but not yet reported by the receiver, at most, in the sustained runs.
const WINDOW: u64 = 1024;

/// Frames the receiver's network may hand over before its engine takes them (the node's
/// capacity: `node::runner` uses the same).
const INBOUND_CAPACITY: usize = 8192;

/// Frames the receiver takes from its inbound channel before it flushes its reports.
const DRAIN_BATCH: usize = 256;

/// Where both processes listen.
const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// How long the sender waits for any report of the receiver before it gives up.
const PATIENCE: Duration = Duration::from_secs(15);

/// The sidechannel settings a scenario changes; everything else is [`Settings::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    /// Proof-of-work difficulty in leading zero bits; 0 turns proof of work off.
    pow: u8,
    /// Rate-limiter refill per neighbour, bytes/s; 0 turns the limiter off.
    rate_bytes: u64,
}

impl Policy {
    /// The defaults: proof of work of 12 bits, 64 kB/s per neighbour.
    fn default_policy() -> Policy {
        let defaults = Settings::default();
        Policy {
            pow: if defaults.pow {
                defaults.pow_difficulty
            } else {
                0
            },
            rate_bytes: defaults.rate_bytes,
        }
    }

    /// The spec given to `--serve`.
    fn spec(&self) -> String {
        format!("pow={},rate={}", self.pow, self.rate_bytes)
    }

    /// Parses a `--serve` spec (`pow=<bits>,rate=<bytes/s>`).
    fn parse(spec: &str) -> anyhow::Result<Policy> {
        let mut policy = Policy::default_policy();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid policy {part:?}: expected key=value"))?;
            match key {
                "pow" => {
                    policy.pow = value
                        .parse()
                        .with_context(|| format!("invalid pow difficulty {value:?}"))?
                }
                "rate" => {
                    policy.rate_bytes = value
                        .parse()
                        .with_context(|| format!("invalid rate {value:?}"))?
                }
                other => bail!("unknown policy key {other:?} (expected pow or rate)"),
            }
        }
        Ok(policy)
    }

    /// The engine settings of this policy.
    fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            pow: self.pow > 0,
            pow_difficulty: if self.pow > 0 {
                self.pow
            } else {
                defaults.pow_difficulty
            },
            rate_bytes: self.rate_bytes,
            quiet: true,
            ..defaults
        }
    }

    /// For people: `PoW 12 bits, rate limit on`.
    fn describe(&self) -> String {
        let pow = match self.pow {
            0 => "PoW off".to_string(),
            bits => format!("PoW {bits} bits"),
        };
        let rate = match self.rate_bytes {
            0 => "rate limit off",
            _ => "rate limit on",
        };
        format!("{pow}, {rate}")
    }
}

/// Wall-clock time in nanoseconds since the epoch (the clock both processes share).
fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock time in milliseconds (the engine's `now`).
fn now_ms() -> u64 {
    wall_nanos() / 1_000_000
}

/// A message of exactly [`MESSAGE_BYTES`] bytes carrying `seq` and the send time `t`.
fn probe(seq: u64, t: u64) -> String {
    let head = format!(r#"{{"seq":{seq},"t":{t},"pad":""#);
    let pad = MESSAGE_BYTES.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// What the receiver reads back from a message.
#[derive(serde::Deserialize)]
struct Probe {
    seq: u64,
    t: u64,
}

/// A tokio runtime for either process: the one a node runs on.
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::node::runtime().context("cannot start the async runtime")
}

/// Starts the network of one side on 127.0.0.1; `inbound` receives the sidechannel frames.
fn start_net(
    keypair: Keypair,
    inbound: mpsc::Sender<ScInbound>,
) -> anyhow::Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
    let mut config = NetConfig::new(keypair);
    config.listen = vec![LISTEN.parse().context("invalid listen address")?];
    config.mdns = false;
    config.dial_discovered = false;
    config.sidechannel = Some(inbound);
    Net::start(config).context("cannot start the network")
}

/// Queues the frames an engine returned for their neighbours.
async fn forward(net: &NetHandle, outbound: Outbound) -> anyhow::Result<()> {
    for (key, frame) in outbound {
        let peer = peer_id_of(&key).context("a neighbour key that is no peer id")?;
        net.sidechannel_send(peer, frame)
            .await
            .context("cannot queue a sidechannel frame")?;
    }
    Ok(())
}

// ---- the receiver (child process) ----------------------------------------------------------

/// The receiver process (`trac bench sidechannel --serve <policy>`): listens on 127.0.0.1 with
/// the sidechannel policy `spec` (`pow=<bits>,rate=<bytes/s>`; 0 turns either off), prints
/// `listening <address>`, then for every message its engine delivers a line
/// `d <seq> <one-way latency, ns> <Engine::receive time, ns> <send → frame taken by the
/// engine's task, ns>`. It answers the line `stats` on stdin with `stats <delivered> <frames
/// dropped by the engine> <frames dropped by the network> <drop reasons>`; the end of stdin
/// stops it.
pub fn serve(spec: &str) -> anyhow::Result<()> {
    let policy = Policy::parse(spec)?;
    tokio_runtime()?.block_on(on_worker(receiver(policy)))
}

/// Runs `task` on a worker of the runtime, as the node runs its services: a task a worker
/// wakes (the swarm handing over a frame, say) then usually runs on that worker at once,
/// where the thread blocked in `block_on` would have to be woken.
async fn on_worker<T: Send + 'static>(
    task: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::spawn(task)
        .await
        .map_err(|e| anyhow!("the benchmark task failed: {e}"))?
}

/// Lines from stdin, until it closes.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    rx
}

async fn receiver(policy: Policy) -> anyhow::Result<()> {
    let keypair = Keypair::generate();
    let mut engine = Engine::new(
        keypair.clone(),
        policy.settings(),
        PersistedState::default(),
    );
    let (frames_tx, mut frames) = mpsc::channel(INBOUND_CAPACITY);
    let (net, mut events) = start_net(keypair, frames_tx)?;
    let addr = loop {
        match events.recv().await {
            Some(NetEvent::Listening(addr)) => break addr,
            Some(_) => {}
            None => bail!("the receiver's network stopped before it listened"),
        }
    };
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout());
    writeln!(out, "listening {addr}").context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    let mut commands = stdin_lines();
    let mut neighbours = HashSet::new();
    loop {
        tokio::select! {
            inbound = frames.recv() => {
                let Some(inbound) = inbound else { break };
                let mut next = Some(inbound);
                let mut taken = 0;
                while let Some(inbound) = next.take() {
                    take(&mut engine, &net, &mut neighbours, inbound, &mut out).await?;
                    taken += 1;
                    if taken < DRAIN_BATCH {
                        next = frames.try_recv().ok();
                    }
                }
                out.flush().context("cannot write to stdout")?;
            }
            // Neighbours come and go on the sidechannel's own channel, in order with the frames.
            event = events.recv() => if event.is_none() { break },
            command = commands.recv() => match command.as_deref() {
                Some("stats") => {
                    let stats = engine.stats();
                    let net_stats = net.stats().await.context("the receiver's network stopped")?;
                    let drops: u64 = stats.drops.values().sum();
                    let reasons: Vec<String> = stats
                        .drops
                        .iter()
                        .map(|(reason, n)| format!("{reason}={n}"))
                        .collect();
                    let reasons = if reasons.is_empty() { "-".to_string() } else { reasons.join(",") };
                    writeln!(
                        out,
                        "stats {} {drops} {} {reasons}",
                        stats.delivered, net_stats.dropped_events
                    )
                    .context("cannot write to stdout")?;
                    out.flush().context("cannot write to stdout")?;
                }
                Some("") => {}
                Some(other) => bail!("unknown command {other:?}"),
                None => break,
            },
        }
    }
    net.shutdown().await;
    Ok(())
}

/// What the receiver's network handed over, as the node's sidechannel service takes it: a
/// neighbour starts once per connection (from its first frame or its connection, whichever
/// comes first); frames go to [`deliver`].
async fn take(
    engine: &mut Engine,
    net: &NetHandle,
    neighbours: &mut HashSet<PeerId>,
    inbound: ScInbound,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if inbound.kind == ScInboundKind::Disconnected {
        neighbours.remove(&inbound.peer);
        engine.peer_disconnected(&inbound.key);
        return Ok(());
    }
    if neighbours.insert(inbound.peer) {
        let outbound = engine.peer_connected(inbound.key, now_ms());
        forward(net, outbound).await?;
    }
    match inbound.kind {
        ScInboundKind::Frame => deliver(engine, net, inbound, out).await,
        ScInboundKind::Connected | ScInboundKind::Disconnected => Ok(()),
    }
}

/// Hands one frame to the engine and reports what it delivered.
async fn deliver(
    engine: &mut Engine,
    net: &NetHandle,
    frame: ScInbound,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let arrived = wall_nanos();
    let started = Instant::now();
    let received = engine.receive(frame.key, &frame.frame, now_ms());
    let took = started.elapsed();
    let at = wall_nanos();
    for delivery in &received.deliveries {
        ensure!(delivery.verified, "a delivery without a verified signature");
        let probe: Probe =
            serde_json::from_str(&delivery.message).context("a message that is no probe")?;
        let latency = at as i128 - i128::from(probe.t);
        let arrival = arrived as i128 - i128::from(probe.t);
        writeln!(
            out,
            "d {} {latency} {} {arrival}",
            probe.seq,
            took.as_nanos()
        )
        .context("cannot write to stdout")?;
    }
    forward(net, received.outbound).await
}

// ---- the sender (this process) -------------------------------------------------------------

/// What the receiver reports.
#[derive(Debug)]
enum Report {
    /// It listens there.
    Listening(Multiaddr),
    /// It delivered message `seq`.
    Delivered {
        seq: u64,
        /// One-way latency (send clock to delivery clock), ns; negative only if the clock
        /// stepped back.
        latency_ns: i128,
        /// What `Engine::receive` took, ns.
        receive_ns: u64,
        /// From the send clock to the frame taken by the receiver's engine task, ns.
        arrival_ns: i128,
    },
    /// Its counters.
    Stats(ReceiverStats),
}

/// The receiver's counters at the end of a scenario.
#[derive(Debug)]
struct ReceiverStats {
    /// Messages its engine delivered.
    delivered: u64,
    /// Frames its engine dropped.
    drops: u64,
    /// Inbound frames its network dropped (the engine did not keep up).
    dropped_events: u64,
    /// The engine's drop reasons (`reason=n,…`, `-` for none).
    reasons: String,
}

fn parse_report(line: &str) -> anyhow::Result<Report> {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or("");
    let mut field = |name: &str| {
        words
            .next()
            .ok_or_else(|| anyhow!("the receiver's report {line:?} lacks {name}"))
    };
    let report = match kind {
        "listening" => Report::Listening(
            field("an address")?
                .parse()
                .with_context(|| format!("invalid address in {line:?}"))?,
        ),
        "d" => Report::Delivered {
            seq: field("seq")?.parse().context("invalid seq")?,
            latency_ns: field("latency")?.parse().context("invalid latency")?,
            receive_ns: field("receive time")?
                .parse()
                .context("invalid receive time")?,
            arrival_ns: field("arrival")?.parse().context("invalid arrival")?,
        },
        "stats" => Report::Stats(ReceiverStats {
            delivered: field("delivered")?.parse().context("invalid count")?,
            drops: field("drops")?.parse().context("invalid count")?,
            dropped_events: field("dropped events")?.parse().context("invalid count")?,
            reasons: field("reasons")?.to_string(),
        }),
        _ => bail!("unexpected line from the receiver: {line:?}"),
    };
    Ok(report)
}

/// The receiver process and its reports.
struct Receiver {
    pid: u32,
    stdin: Option<ChildStdin>,
    reports: mpsc::UnboundedReceiver<anyhow::Result<Report>>,
    // Last, so that the process is killed after stdin is closed.
    child: ChildGuard,
}

impl Receiver {
    /// Starts `exe bench sidechannel --serve <policy>` and waits for its address.
    async fn spawn(exe: &Path, policy: Policy) -> anyhow::Result<(Receiver, Multiaddr)> {
        let mut child = std::process::Command::new(exe)
            .args(["bench", "sidechannel", "--serve", &policy.spec()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let pid = child.id();
        let child = ChildGuard(Some(child));
        let stdout = stdout.ok_or_else(|| anyhow!("the receiver has no stdout"))?;
        let (tx, reports) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("bench-sc-reports".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let report = line
                        .context("cannot read the receiver's stdout")
                        .and_then(|l| parse_report(&l));
                    let failed = report.is_err();
                    if tx.send(report).is_err() || failed {
                        break;
                    }
                }
            })
            .context("cannot start the report reader")?;
        let mut receiver = Receiver {
            pid,
            stdin,
            reports,
            child,
        };
        match receiver.next().await? {
            Report::Listening(addr) => Ok((receiver, addr)),
            other => bail!("the receiver reported {other:?} before its address"),
        }
    }

    /// The next report (waits at most [`PATIENCE`]).
    async fn next(&mut self) -> anyhow::Result<Report> {
        match tokio::time::timeout(PATIENCE, self.reports.recv()).await {
            Ok(Some(report)) => report,
            Ok(None) => bail!("the receiver process stopped reporting (it exited)"),
            Err(_) => bail!("the receiver reported nothing for {} s", PATIENCE.as_secs()),
        }
    }

    /// A report that is already there.
    fn try_next(&mut self) -> Option<anyhow::Result<Report>> {
        self.reports.try_recv().ok()
    }

    /// The next report, which must be the delivery of `seq`.
    async fn delivered(&mut self, seq: u64) -> anyhow::Result<Delivered> {
        delivery(self.next().await?, seq)
    }

    /// Asks for the receiver's counters, closes its stdin and waits for it to exit.
    async fn finish(mut self) -> anyhow::Result<ReceiverStats> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("the receiver has no stdin"))?;
        writeln!(stdin, "stats").context("cannot write to the receiver")?;
        stdin.flush().context("cannot write to the receiver")?;
        let stats = match self.next().await? {
            Report::Stats(stats) => stats,
            other => bail!("the receiver reported {other:?} instead of its counters"),
        };
        drop(self.stdin.take());
        let child = self
            .child
            .0
            .as_mut()
            .ok_or_else(|| anyhow!("the receiver is gone"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().context("cannot wait for the receiver")? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "the receiver did not exit within 5 s of the end of its stdin"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        ensure!(status.success(), "the receiver exited with {status}");
        Ok(stats)
    }
}

/// The times of one delivery.
struct Delivered {
    /// From the send clock (before `Engine::send`) to the delivery.
    one_way: Duration,
    /// What `Engine::receive` took.
    receive: Duration,
    /// From the send clock to the frame taken by the receiver's engine task.
    arrival: Duration,
}

/// Checks that `report` is the delivery of `seq`.
fn delivery(report: Report, seq: u64) -> anyhow::Result<Delivered> {
    let nanos = |ns: i128| Duration::from_nanos(ns.clamp(0, i128::from(u64::MAX)) as u64);
    match report {
        Report::Delivered {
            seq: got,
            latency_ns,
            receive_ns,
            arrival_ns,
        } => {
            ensure!(
                got == seq,
                "the receiver delivered message {got} where {seq} was next"
            );
            Ok(Delivered {
                one_way: nanos(latency_ns),
                receive: Duration::from_nanos(receive_ns),
                arrival: nanos(arrival_ns),
            })
        }
        other => bail!("the receiver reported {other:?} where message {seq} was next"),
    }
}

/// The sending side: its network and engine, connected to the receiver.
struct Sender {
    engine: Engine,
    net: NetHandle,
    peer: PeerId,
    /// Size of the last frame sent, bytes.
    frame_bytes: usize,
}

impl Sender {
    /// Starts a network, dials `addr` and takes the receiver as its neighbour.
    async fn connect(policy: Policy, addr: Multiaddr) -> anyhow::Result<Sender> {
        let keypair = Keypair::generate();
        let engine = Engine::new(
            keypair.clone(),
            policy.settings(),
            PersistedState::default(),
        );
        // No frame comes back; the connection changes do, and are read as the node reads them.
        let (inbound, mut inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
        let (net, mut events) = start_net(keypair, inbound)?;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        tokio::spawn(async move { while inbound_rx.recv().await.is_some() {} });
        let peer = net
            .dial(addr.clone())
            .await
            .with_context(|| format!("cannot dial the receiver at {addr}"))?;
        let key = public_key_of(&peer)
            .ok_or_else(|| anyhow!("the receiver's peer id {peer} holds no key"))?;
        let mut sender = Sender {
            engine,
            net,
            peer,
            frame_bytes: 0,
        };
        let outbound = sender.engine.peer_connected(key, now_ms());
        forward(&sender.net, outbound).await?;
        Ok(sender)
    }

    /// Sends message `seq` stamped with the time now; returns what `Engine::send` took.
    async fn send(&mut self, seq: u64) -> anyhow::Result<Duration> {
        let t = wall_nanos();
        let message = probe(seq, t);
        let started = Instant::now();
        let (_, outbound) = self
            .engine
            .send(ENTRY_CHANNEL, &message, None, t / 1_000_000)
            .with_context(|| format!("cannot send message {seq}"))?;
        let took = started.elapsed();
        ensure!(
            outbound.len() == 1,
            "message {seq} went to {} neighbours, not 1",
            outbound.len()
        );
        for (_, frame) in outbound {
            self.frame_bytes = frame.len();
            self.net
                .sidechannel_send(self.peer, frame)
                .await
                .context("cannot queue a sidechannel frame")?;
        }
        Ok(took)
    }

    /// Fails if the sender's network dropped frames; stops it.
    async fn finish(self) -> anyhow::Result<()> {
        let stats = self
            .net
            .stats()
            .await
            .context("the sender's network stopped")?;
        self.net.shutdown().await;
        ensure!(
            stats.dropped_pushes == 0,
            "the sender's network dropped {} queued frames",
            stats.dropped_pushes
        );
        Ok(())
    }
}

/// Fails unless the receiver delivered `expected` messages and dropped nothing.
fn check_receiver(stats: &ReceiverStats, expected: u64) -> anyhow::Result<()> {
    ensure!(
        stats.delivered == expected,
        "the receiver delivered {} of {expected} messages",
        stats.delivered
    );
    ensure!(
        stats.drops == 0 && stats.dropped_events == 0,
        "the receiver dropped {} frames in its engine ({}) and {} in its network",
        stats.drops,
        stats.reasons,
        stats.dropped_events
    );
    Ok(())
}

// ---- scenarios ------------------------------------------------------------------------------

/// A quantile (0..=1) of `samples` in milliseconds.
fn millis(name: &str, samples: &mut [Duration], q: f64, target: Option<&str>) -> Measurement {
    let mut m = Measurement::latency_micros(name, samples, q);
    m.value /= 1_000.0;
    m.unit = "ms";
    m.target = target.map(str::to_string);
    m
}

/// A figure in any unit, from one sample.
fn figure(name: &str, value: f64, unit: &'static str) -> Measurement {
    Measurement {
        name: name.to_string(),
        value,
        unit,
        samples: 1,
        target: None,
    }
}

/// `count` messages, one every `1 / rate` s, each delivered before the next is sent.
async fn sequential(
    exe: &Path,
    policy: Policy,
    count: u64,
    rate: u32,
    target: Option<&str>,
) -> anyhow::Result<Vec<Measurement>> {
    let (mut receiver, addr) = Receiver::spawn(exe, policy).await?;
    let mut sender = Sender::connect(policy, addr).await?;
    let gap = Duration::from_secs(1) / rate;
    let mut latency = Vec::with_capacity(count as usize);
    let mut send = Vec::with_capacity(count as usize);
    let mut receive = Vec::with_capacity(count as usize);
    let mut network = Vec::with_capacity(count as usize);
    let start = tokio::time::Instant::now();
    for seq in 0..WARMUP + count {
        tokio::time::sleep_until(start + gap * seq as u32).await;
        let took = sender.send(seq).await?;
        let delivered = receiver
            .delivered(seq)
            .await
            .with_context(|| format!("message {seq}"))?;
        if seq >= WARMUP {
            latency.push(delivered.one_way);
            send.push(took);
            receive.push(delivered.receive);
            network.push(delivered.arrival.saturating_sub(took));
        }
    }
    let frame_bytes = sender.frame_bytes;
    sender.finish().await?;
    check_receiver(&receiver.finish().await?, WARMUP + count)?;
    let name = format!("{}, {rate} msg/s: one-way", policy.describe());
    Ok(vec![
        millis(&format!("{name} p50"), &mut latency, 0.5, target),
        millis(&format!("{name} p99"), &mut latency, 0.99, None),
        millis("… Engine::send (sign, PoW), p50", &mut send, 0.5, None),
        millis(
            "… network: sent → frame at the receiver's engine task, p50",
            &mut network,
            0.5,
            None,
        ),
        millis(
            "… Engine::receive (checks, verify), p50",
            &mut receive,
            0.5,
            None,
        ),
        figure(
            "… frame on the wire (1 KiB message)",
            frame_bytes as f64,
            "bytes",
        ),
    ])
}

/// `count` messages as fast as [`WINDOW`] allows: throughput, latency under load and, when
/// `memory`, both processes' memory at the end.
async fn sustained(
    exe: &Path,
    policy: Policy,
    count: u64,
    target: Option<&str>,
    memory: bool,
) -> anyhow::Result<Vec<Measurement>> {
    let (mut receiver, addr) = Receiver::spawn(exe, policy).await?;
    let mut sender = Sender::connect(policy, addr).await?;
    let mut latency = Vec::with_capacity(count as usize);
    // The warm-up messages go one at a time.
    for seq in 0..WARMUP {
        sender.send(seq).await?;
        receiver.delivered(seq).await?;
    }
    let end = WARMUP + count;
    let mut sent = WARMUP;
    let mut delivered = WARMUP;
    let start = Instant::now();
    while delivered < end {
        while sent < end && sent - delivered < WINDOW {
            sender.send(sent).await?;
            sent += 1;
            // One send at a time, as the node's service runs commands: the network task
            // gets its turn (with proof of work, the loop would otherwise hold the worker).
            tokio::task::yield_now().await;
        }
        let mut report = Some(receiver.next().await);
        while let Some(next) = report {
            let times = delivery(next?, delivered)
                .with_context(|| format!("after {} of {count} messages", delivered - WARMUP))?;
            latency.push(times.one_way);
            delivered += 1;
            report = receiver.try_next();
        }
    }
    let elapsed = start.elapsed();
    let memory = if memory {
        Some((memory_kib("self")?, memory_kib(&receiver.pid.to_string())?))
    } else {
        None
    };
    sender.finish().await?;
    check_receiver(&receiver.finish().await?, end)?;
    let name = format!("{}, {count} msgs, window {WINDOW}", policy.describe());
    let mut throughput = Measurement::throughput(
        format!("{name}: delivered, signatures verified"),
        count,
        elapsed,
    );
    throughput.unit = "msg/s";
    throughput.target = target.map(str::to_string);
    let mut results = vec![
        throughput,
        millis("… one-way under load, p50", &mut latency, 0.5, None),
        millis("… one-way under load, p99", &mut latency, 0.99, None),
    ];
    if let Some(((sender_rss, sender_hwm), (receiver_rss, receiver_hwm))) = memory {
        let mib = |kib: u64| kib as f64 / 1024.0;
        results.extend([
            figure("… RSS of the sender at the end", mib(sender_rss), "MiB"),
            figure("… peak RSS of the sender", mib(sender_hwm), "MiB"),
            figure("… RSS of the receiver at the end", mib(receiver_rss), "MiB"),
            figure("… peak RSS of the receiver", mib(receiver_hwm), "MiB"),
        ]);
    }
    Ok(results)
}

/// The `trac` executable running this suite, if it is one (not a test binary).
fn trac_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_stem()?.to_str()?;
    name.starts_with("trac").then_some(exe)
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let exe = trac_executable().ok_or_else(|| {
        anyhow!("the sidechannel suite starts a copy of `trac`: run it from the `trac` executable")
    })?;
    let default_policy = Policy::default_policy();
    let no_pow = Policy {
        pow: 0,
        ..default_policy
    };
    let unlimited = Policy {
        pow: 0,
        rate_bytes: 0,
    };
    let pow_unlimited = Policy {
        rate_bytes: 0,
        ..default_policy
    };
    tokio_runtime()?.block_on(on_worker(async move {
        let exe = exe.as_path();
        let mut results = sequential(exe, default_policy, 200, 10, Some("<= 5 ms"))
            .await
            .context("default policy, sequential")?;
        results.extend(
            sequential(exe, no_pow, 1_000, 20, Some("<= 0.5 ms"))
                .await
                .context("PoW off, sequential")?,
        );
        results.extend(
            sustained(exe, unlimited, 50_000, Some(">= 10000 msg/s"), true)
                .await
                .context("PoW off, sustained")?,
        );
        results.extend(
            sustained(exe, pow_unlimited, 5_000, None, false)
                .await
                .context("PoW 12 bits, sustained")?,
        );
        Ok(results)
    }))
}
