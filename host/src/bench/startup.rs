//! The `startup` suite: how soon the node of `trac run` is ready, and what it holds in memory
//! once idle.
//!
//! Everything runs in a temp working directory laid out as `trac run` lays it out
//! (`stores/peer`, `stores/peer-msb`), listening on 127.0.0.1 (a random port), mDNS off, and
//! goes through what `trac run` does before its banner: a tokio runtime, the configuration and
//! start plan ([`RunConfig::resolve`], [`StartPlan::resolve`]), both keystores, [`Node::start`]
//! and the bound listen addresses. The node is *ready* once `Node::start` has returned and its
//! listen addresses are known.
//!
//! - **Cold start**: new stores: two (unencrypted) keystores created, the dev MSB network and a
//!   subnet with the bundled Intercom created. Then, with the pump running, until the subnet's
//!   creation checkpoint is final: its first proposal applies the deploy ops and compiles
//!   Intercom (the compile cache is empty) into the cache under the peer store.
//! - **Warm start** (the headline): [`RUNS`] restarts of those stores, unencrypted keystores,
//!   compile cache warm. Each run stops its node (the pump with a stop future that is already
//!   resolved: the network is shut down) and drops it, closing LMDB, before the next.
//! - **Key decryption**: unlocking an encrypted keystore (Argon2id with the default cost), which
//!   a start with encrypted keystores adds per keystore (`trac run` unlocks two).
//! - **Intercom compile**: a new contract runtime with an empty compile cache loading the
//!   bundled component (validation, instrumentation, compilation), then another new runtime
//!   loading it from the disk cache.
//! - **Process**: the `trac` executable itself started as `trac run` in that working directory
//!   (a warm start of the same stores; stdin a pipe kept open), timed until it prints
//!   `Node running.`, left idle [`IDLE`] with its pump running, then its `VmRSS` read from
//!   `/proc/<pid>/status` (a fresh process, so nothing this suite allocated counts); then
//!   `/help` on its terminal (which loads Intercom from the disk cache and calls it, as the
//!   first use of the app does) and [`IDLE`] more, `VmRSS` and `VmHWM` again; stopped with
//!   SIGTERM. The banner must name the subnet created above (a warm start of the same stores).
//!   Only when the suite runs inside `trac`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use tokio::sync::{mpsc, oneshot};

use super::Measurement;
use super::child::{ChildGuard, memory_kib};
use crate::bundled::INTERCOM;
use crate::crypto::keystore::{self, KdfParams};
use crate::crypto::{Hash32, Keypair};
use crate::net::Multiaddr;
use crate::node::config::{RunConfig, RunFlags, StartPlan, load_or_create_keypair};
use crate::node::runner::{Command, Node, NodeConfig, NodeStats};
use crate::runtime::{Limits, LoadSource, Runtime, RuntimeConfig};
use crate::subnet::keys;
use crate::subnet::replay::CACHE_DIR_NAME;

/// Warm starts measured.
pub const RUNS: usize = 10;
/// How long the `trac run` process idles before its memory is read.
pub const IDLE: Duration = Duration::from_secs(2);
/// `trac run` processes started (each idles [`IDLE`]).
const PROCESS_RUNS: usize = 3;
/// Unlocks of the encrypted keystore measured.
const UNLOCKS: usize = 5;
/// Cold compiles of Intercom measured (each with a new, empty cache).
const COMPILES: usize = 3;
/// How long a node may take to start, settle or stop.
pub(super) const PATIENCE: Duration = Duration::from_secs(60);
/// Where the bench nodes listen.
const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";
/// The passphrase of the encrypted keystore.
const PASSPHRASE: &str = "correct horse battery staple";

/// The `trac run` flags of a node working in `dir` (stores under `dir/stores`), listening on
/// 127.0.0.1 without mDNS.
pub(super) fn flags(dir: &Path) -> RunFlags {
    let stores = dir.join("stores").display().to_string();
    RunFlags {
        peer_stores_directory: Some(stores.clone()),
        msb_stores_directory: Some(stores),
        listen: Some(LISTEN.into()),
        mdns: Some("0".into()),
        ..RunFlags::default()
    }
}

/// What `trac run` does before [`Node::start`]: resolves the configuration (ignoring the
/// process environment) and the start plan, persists joined bootstraps, loads (or creates) both
/// keystores with `passphrase` and reads the contract of a new subnet.
pub(super) fn node_config(flags: &RunFlags, passphrase: &str) -> anyhow::Result<NodeConfig> {
    let config = RunConfig::resolve(flags, |_| None).context("invalid node configuration")?;
    let plan = StartPlan::resolve(&config).context("cannot resolve the start plan")?;
    plan.persist_joined()
        .context("cannot create the store folders")?;
    let peer = load_or_create_keypair(&plan.layout.peer_keystore(), passphrase)
        .context("cannot load the peer keystore")?;
    let msb = load_or_create_keypair(&plan.layout.msb_keystore(), passphrase)
        .context("cannot load the MSB keystore")?;
    NodeConfig::new(&config, plan, peer.keypair, msb.keypair)
}

/// The runtime `trac run` builds.
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::node::runtime().context("cannot start the async runtime")
}

/// The node's bound listen addresses, asked every millisecond until there are some (at most
/// 5 s).
async fn bound_addrs(node: &Node) -> anyhow::Result<Vec<Multiaddr>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let addrs = node
            .net()
            .listen_addrs()
            .await
            .map_err(|e| anyhow!("the network stopped: {e}"))?;
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the node had no listen address within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A node started and ready, with the time each phase took.
pub(super) struct Started {
    /// Its runtime.
    pub runtime: tokio::runtime::Runtime,
    /// The node.
    pub node: Node,
    /// Its bound listen addresses.
    pub addrs: Vec<Multiaddr>,
    /// When the start began.
    pub began: Instant,
    /// Runtime, configuration, keystores.
    pub prepare: Duration,
    /// [`Node::start`].
    pub start: Duration,
    /// Until the listen addresses were known.
    pub listen: Duration,
}

impl Started {
    /// From the beginning until ready.
    pub fn total(&self) -> Duration {
        self.prepare + self.start + self.listen
    }
}

/// Starts the node of `flags` as `trac run` does, until it is ready.
pub(super) fn start(flags: &RunFlags, passphrase: &str) -> anyhow::Result<Started> {
    let began = Instant::now();
    let runtime = tokio_runtime()?;
    let config = node_config(flags, passphrase)?;
    let prepared = Instant::now();
    let node = runtime
        .block_on(Node::start(config))
        .context("the node did not start")?;
    let started = Instant::now();
    let addrs = runtime.block_on(bound_addrs(&node))?;
    let listening = Instant::now();
    Ok(Started {
        runtime,
        node,
        addrs,
        began,
        prepare: prepared - began,
        start: started - prepared,
        listen: listening - started,
    })
}

/// A node whose pump runs on a thread of its own (as `trac run` drives it: `block_on` on one
/// thread, the network on the runtime's workers), reachable through its command channel.
pub(super) struct Running {
    runtime: tokio::runtime::Runtime,
    commands: mpsc::Sender<Command>,
    stop: oneshot::Sender<()>,
    pump: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Runs the pump of a started node.
    pub fn spawn(started: Started) -> anyhow::Result<Running> {
        let Started { runtime, node, .. } = started;
        let (commands, receiver) = mpsc::channel(16);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = runtime.handle().clone();
        let pump = std::thread::Builder::new()
            .name("bench-node".into())
            .stack_size(crate::runtime::CALL_THREAD_STACK)
            .spawn(move || {
                handle.block_on(node.run(receiver, async move {
                    let _ = stopped.await;
                }))
            })
            .context("cannot start the pump thread")?;
        Ok(Running {
            runtime,
            commands,
            stop,
            pump,
        })
    }

    /// Asks the pump for the node's numbers.
    pub fn stats(&self) -> anyhow::Result<NodeStats> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .blocking_send(Command::Stats(reply))
            .map_err(|_| anyhow!("the node's pump stopped"))?;
        answer
            .blocking_recv()
            .map_err(|_| anyhow!("the node's pump stopped"))
    }

    /// A subnet state value (the confirmed view).
    pub fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .blocking_send(Command::Get {
                key: key.to_vec(),
                confirmed: true,
                reply,
            })
            .map_err(|_| anyhow!("the node's pump stopped"))?;
        answer
            .blocking_recv()
            .map_err(|_| anyhow!("the node's pump stopped"))?
            .map_err(|e| anyhow!("reading the subnet state failed: {e}"))
    }

    /// Polls the node's numbers every `every` until `done` holds (at most `patience`).
    pub fn wait_for(
        &self,
        what: &str,
        every: Duration,
        patience: Duration,
        done: impl Fn(&NodeStats) -> bool,
    ) -> anyhow::Result<NodeStats> {
        let deadline = Instant::now() + patience;
        loop {
            let stats = self.stats()?;
            if done(&stats) {
                return Ok(stats);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} did not happen within {} s; last stats:\n{}",
                    patience.as_secs(),
                    stats.render()
                );
            }
            std::thread::sleep(every);
        }
    }

    /// Stops the pump (the network shuts down), drops the node (its stores close) and the
    /// runtime.
    pub fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let result = self
            .pump
            .join()
            .map_err(|_| anyhow!("the node's pump panicked"))?;
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        result
    }
}

/// Stops a started node at once: the pump runs with a stop future already resolved (the
/// network shuts down), then the node and its runtime are dropped.
fn stop_at_once(started: Started) -> anyhow::Result<()> {
    let Started { runtime, node, .. } = started;
    let (_commands, receiver) = mpsc::channel(1);
    runtime.block_on(node.run(receiver, std::future::ready(())))?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// A quantile of `samples` in milliseconds, with an optional target.
fn millis(name: &str, samples: &mut [Duration], q: f64, target: Option<&str>) -> Measurement {
    let mut m = Measurement::latency_millis(name, samples, q);
    m.target = target.map(str::to_string);
    m
}

/// The largest of `samples` in milliseconds.
fn max_millis(name: &str, samples: &[Duration]) -> Measurement {
    let max = samples.iter().max().copied().unwrap_or_default();
    Measurement::value(name, max.as_secs_f64() * 1e3, "ms", samples.len() as u64)
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let work = tempfile::tempdir().context("cannot create a temp dir")?;
    let dir = work.path();
    let flags = flags(dir);
    let mut out = Vec::new();

    // Cold: new stores, the compile cache empty.
    let cold = start(&flags, "")?;
    ensure!(
        cold.node.created_subnet(),
        "the cold start did not create a subnet"
    );
    let began = cold.began;
    let cold_ready = cold.total();
    let subnet = cold.node.subnet_id();
    tracing::info!(
        prepare = ?cold.prepare,
        start = ?cold.start,
        listen = ?cold.listen,
        "cold start ready"
    );
    let running = Running::spawn(cold)?;
    running.wait_for(
        "the subnet's creation checkpoint",
        Duration::from_millis(2),
        PATIENCE,
        |s| s.subnet.status.final_height >= 1,
    )?;
    let cold_final = began.elapsed();
    ensure!(
        running.get(keys::CONTRACT_CURRENT.as_bytes())?.is_some(),
        "Intercom is not active after the creation checkpoint"
    );
    running.stop()?;
    let cache = dir.join("stores/peer").join(CACHE_DIR_NAME);
    let cached = std::fs::read_dir(&cache)
        .with_context(|| format!("no compile cache at {}", cache.display()))?
        .count();
    ensure!(cached > 0, "the compile cache {} is empty", cache.display());
    out.push(Measurement::value(
        "cold start (new stores, cold compile): start → ready",
        cold_ready.as_secs_f64() * 1e3,
        "ms",
        1,
    ));
    out.push(Measurement::value(
        "… → subnet creation final (Intercom compiled and active)",
        cold_final.as_secs_f64() * 1e3,
        "ms",
        1,
    ));

    // Warm: the same stores again and again.
    let mut total = Vec::with_capacity(RUNS);
    let mut phases: [Vec<Duration>; 3] = Default::default();
    for run in 0..RUNS {
        let warm = start(&flags, "")?;
        ensure!(
            warm.node.created_subnet(),
            "warm start {run} opened another subnet"
        );
        total.push(warm.total());
        phases[0].push(warm.prepare);
        phases[1].push(warm.start);
        phases[2].push(warm.listen);
        stop_at_once(warm)?;
    }
    let [prepare, node_start, listen] = &mut phases;
    out.push(millis(
        "warm start (compile cache warm, unencrypted keys): start → ready, p50",
        &mut total,
        0.5,
        Some("<= 150 ms (JS: 2.1 s)"),
    ));
    out.push(max_millis("… max", &total));
    out.push(millis(
        "… tokio runtime, configuration, 2 keystores, p50",
        prepare,
        0.5,
        None,
    ));
    out.push(millis("… Node::start, p50", node_start, 0.5, None));
    out.push(millis("… listen addresses known, p50", listen, 0.5, None));

    // The real process, fresh: start time and idle memory.
    out.extend(process_runs(dir, &subnet)?);

    // Key decryption.
    out.extend(key_decryption(dir)?);

    // Intercom's compile.
    out.extend(compile()?);
    Ok(out)
}

/// Unlocking an encrypted keystore, and an unencrypted one for contrast.
fn key_decryption(dir: &Path) -> anyhow::Result<Vec<Measurement>> {
    let path = dir.join("encrypted-keypair.json");
    let keypair = Keypair::generate();
    keystore::create(&path, &keypair, PASSPHRASE, KdfParams::DEFAULT, false)?;
    let mut encrypted = Vec::with_capacity(UNLOCKS);
    for _ in 0..UNLOCKS {
        let start = Instant::now();
        let unlocked = keystore::unlock(&path, PASSPHRASE)?;
        encrypted.push(start.elapsed());
        ensure!(
            unlocked.public() == keypair.public(),
            "the keystore unlocked to another key"
        );
    }
    let plain_path = dir.join("stores/peer/keypair.json");
    let mut plain = Vec::with_capacity(UNLOCKS);
    for _ in 0..UNLOCKS {
        let start = Instant::now();
        keystore::unlock(&plain_path, "")?;
        plain.push(start.elapsed());
    }
    let kdf = KdfParams::DEFAULT;
    Ok(vec![
        millis(
            &format!(
                "key decryption: unlock 1 encrypted keystore (Argon2id {} MiB, {} passes), p50",
                kdf.m_cost_kib / 1024,
                kdf.t_cost
            ),
            &mut encrypted,
            0.5,
            None,
        ),
        Measurement::latency_micros("… an unencrypted keystore (contrast), p50", &mut plain, 0.5),
    ])
}

/// Intercom compiled with an empty cache, then loaded from the disk cache by a new runtime.
fn compile() -> anyhow::Result<Vec<Measurement>> {
    let limits = Limits::default();
    let mut engine = Vec::with_capacity(COMPILES);
    let mut cold = Vec::with_capacity(COMPILES);
    let mut disk = Vec::with_capacity(COMPILES);
    for _ in 0..COMPILES {
        let cache = tempfile::tempdir().context("cannot create a temp dir")?;
        let config = RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeConfig::default()
        };
        let start = Instant::now();
        let runtime = Runtime::new(config.clone())?;
        engine.push(start.elapsed());
        let start = Instant::now();
        let (_, source) = runtime.load_traced(INTERCOM, &limits)?;
        cold.push(start.elapsed());
        ensure!(
            source == LoadSource::Compiled,
            "expected a cold compile, got {source:?}"
        );
        let fresh = Runtime::new(config)?;
        let start = Instant::now();
        let (_, source) = fresh.load_traced(INTERCOM, &limits)?;
        disk.push(start.elapsed());
        ensure!(
            source == LoadSource::Disk,
            "expected a disk-cache hit, got {source:?}"
        );
    }
    Ok(vec![
        millis(
            &format!(
                "Intercom ({} KiB) cold compile: validate + instrument + compile, p50",
                INTERCOM.len() / 1024
            ),
            &mut cold,
            0.5,
            None,
        ),
        millis(
            "… load from the disk cache (new runtime), p50",
            &mut disk,
            0.5,
            None,
        ),
        millis(
            "… new contract runtime (engine, linker), p50",
            &mut engine,
            0.5,
            None,
        ),
    ])
}

/// One `trac run` process in `dir`: the time until it prints `Node running.`, then its memory
/// after [`IDLE`], then after `/help` (Intercom loaded and called) and another [`IDLE`].
struct ProcessRun {
    ready: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    /// After `/help` and another [`IDLE`].
    used_rss_kib: u64,
}

/// Runs `trac run` once in `dir`; fails unless it reopens the stores of `subnet`.
fn process_run(exe: &Path, dir: &Path, subnet: &Hash32) -> anyhow::Result<ProcessRun> {
    let started = Instant::now();
    let child = std::process::Command::new(exe)
        .arg("run")
        .args(["--listen", LISTEN, "--mdns", "0"])
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let mut guard = ChildGuard(Some(child));
    let child = guard
        .0
        .as_mut()
        .ok_or_else(|| anyhow!("the child is gone"))?;
    let pid = child.id();
    // Kept open while the node runs: at end of input the terminal stops reading.
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let (lines_tx, lines) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let deadline = started + PATIENCE;
    let mut banner_subnet = None;
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("Node running.") => break started.elapsed(),
            Ok(line) => {
                // A warm start: no keystore created, the same subnet reopened.
                ensure!(
                    !line.starts_with("created the"),
                    "`trac run` did not find the warm stores: {line}"
                );
                if let Some(id) = line.strip_prefix("Peer subnet bootstrap: ") {
                    banner_subnet = Some(id.trim().to_string());
                }
            }
            Err(_) => {
                drop(guard);
                let stderr = errors.join().unwrap_or_default();
                bail!("`trac run` did not print \"Node running.\"; its stderr:\n{stderr}");
            }
        }
    };
    ensure!(
        banner_subnet.as_deref() == Some(subnet.to_hex().as_str()),
        "`trac run` opened subnet {banner_subnet:?}, not {subnet}"
    );
    std::thread::sleep(IDLE);
    let (rss_kib, _) = memory_kib(&pid.to_string())?;
    // `/help` lists the app's commands: Intercom is loaded (from the disk cache) and called.
    let mut stdin = stdin.ok_or_else(|| anyhow!("no stdin pipe"))?;
    stdin
        .write_all(b"/help\n")
        .and_then(|()| stdin.flush())
        .context("cannot write to `trac run`")?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("Prints this help.") => break,
            Ok(_) => {}
            Err(_) => bail!("`trac run` did not answer /help"),
        }
    }
    std::thread::sleep(IDLE);
    let (used_rss_kib, hwm_kib) = memory_kib(&pid.to_string())?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    ensure!(status.success(), "kill -TERM {pid} failed: {status}");
    let wait_until = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        ensure!(
            Instant::now() < wait_until,
            "`trac run` did not stop within {} s of SIGTERM",
            PATIENCE.as_secs()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(stdin);
    let stderr = errors.join().unwrap_or_default();
    ensure!(
        exit.success(),
        "`trac run` exited with {exit} after SIGTERM; its stderr:\n{stderr}"
    );
    Ok(ProcessRun {
        ready,
        rss_kib,
        hwm_kib,
        used_rss_kib,
    })
}

/// The `trac` executable running this suite, if it is one (not a test binary).
fn trac_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_stem()?.to_str()?;
    name.starts_with("trac").then_some(exe)
}

/// [`PROCESS_RUNS`] `trac run` processes on the warm stores in `dir`.
fn process_runs(dir: &Path, subnet: &Hash32) -> anyhow::Result<Vec<Measurement>> {
    let Some(exe) = trac_executable() else {
        tracing::warn!("not running inside `trac`: the process figures are skipped");
        return Ok(Vec::new());
    };
    let mut ready = Vec::with_capacity(PROCESS_RUNS);
    let mut rss = Vec::with_capacity(PROCESS_RUNS);
    let mut hwm = Vec::with_capacity(PROCESS_RUNS);
    let mut used = Vec::with_capacity(PROCESS_RUNS);
    for _ in 0..PROCESS_RUNS {
        let run = process_run(&exe, dir, subnet)?;
        ready.push(run.ready);
        rss.push(run.rss_kib);
        hwm.push(run.hwm_kib);
        used.push(run.used_rss_kib);
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let n = PROCESS_RUNS as u64;
    Ok(vec![
        millis(
            "`trac run` process, warm: spawn → \"Node running.\", p50",
            &mut ready,
            0.5,
            None,
        ),
        max_millis("… max", &ready),
        Measurement::value(
            format!(
                "idle RSS of `trac run` after {} s, max of {n}",
                IDLE.as_secs()
            ),
            mib(rss.iter().copied().max().unwrap_or(0)),
            "MiB",
            n,
        )
        .target("<= 40 MB = 38.1 MiB (JS: 96 MiB)"),
        Measurement::value(
            format!(
                "… RSS after `/help` (Intercom loaded and called) and {} s more, max",
                IDLE.as_secs()
            ),
            mib(used.iter().copied().max().unwrap_or(0)),
            "MiB",
            n,
        ),
        Measurement::value(
            "… peak RSS (VmHWM) over the whole run, max",
            mib(hwm.iter().copied().max().unwrap_or(0)),
            "MiB",
            n,
        ),
    ])
}
