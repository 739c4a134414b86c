//! The `catchup` suite: a fresh joiner catching up with a subnet log of [`ENTRIES`] entries.
//!
//! - **The source**: a node created as `trac run` creates one (dev MSB network, subnet with
//!   the bundled Intercom; its creation checkpoint made final by its pump), stopped; then its
//!   subnet log is extended directly through its store (LMDB without fsync, to build it
//!   quickly; not timed): one entry turning chat on, then [`ENTRIES`] entries of one signed
//!   chat message each (`PostMessage` by the admin, which Intercom's message hook sees),
//!   checkpointed every [`PER_CHECKPOINT`] entries (the ledger's limit per checkpoint) as a
//!   sequencer that fell behind would (the creator is the sole indexer, so each checkpoint is
//!   final at once). The suite checks that every message was applied (`msgl`).
//! - **Through two nodes** (the figure): the source restarted as a node (listening on
//!   127.0.0.1, mDNS off) with its pump running, and a joiner with new stores whose start plan
//!   names the source's subnet and MSB network and the source's address as bootstrap
//!   (`--subnet-bootstrap`, `--msb-bootstrap`, `--dht-bootstrap`). Each node runs its pump on
//!   a thread of its own with a tokio runtime of its own; stores are fsynced as in `trac run`.
//!   The clock runs from the joiner's start (configuration, keystores, `Node::start` with the
//!   genesis of both networks fetched from the source) until its subnet ledger, polled every
//!   10 ms through the command channel, has the source's final height and entry count; the
//!   suite then checks that the final state roots agree. A joiner that makes no progress for
//!   [`STALL`], or is not done after [`NODE_PATIENCE`], is reported as such (with how far it
//!   got and its rate until then) instead of failing the suite.
//! - **Engine only** (contrast): the same catch-up ledger to ledger in one thread, without
//!   the network: a fresh joiner ledger (fsync, then without) asks the source ledger what
//!   [`Ledger::sync_requests`] and its answers ask for, one request per log and per kind per
//!   round trip (the wants an answer raises are merged), and handles every answer. This is
//!   the ceiling of the node's catch-up with the ledger engine as it is.
//! - **Breakdown**: on the source's last 10,000 entries, what a joiner pays per entry: the
//!   entry signature verified alone (as `Ledger::handle` does) or in batches of 1,000, the
//!   entry stored in one fsynced transaction of its own (as `Ledger::handle` does) or one per
//!   1,000, and applying the log (a replay of the source's store, without entry signatures or
//!   fsync).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::Measurement;
use super::startup::{PATIENCE, Running, flags, start};
use crate::codec;
use crate::crypto::{BatchItem, Keypair, PublicKey, SignedHash, keystore, verify_batch};
use crate::ledger::replay::{ReplayOptions, replay};
use crate::ledger::{Ledger, LedgerLimits, LedgerStatus, LogEntry, Message};
use crate::node::config::RunConfig;
use crate::node::inbox::StoreLock;
use crate::node::now_ms;
use crate::node::runner::SUBNET_GENESIS_FILE;
use crate::store::{Store, StoreOptions};
use crate::subnet::replay::CACHE_DIR_NAME;
use crate::subnet::{Action, OpSigner, SubnetGenesis, SubnetMachine, keys};

/// Chat-message entries the source's subnet log holds beyond its creation entries and the
/// entry that turns chat on (the figures count all of them).
pub const ENTRIES: u64 = 100_000;
/// Entries per checkpoint of the source (the ledger's default limit per checkpoint).
pub const PER_CHECKPOINT: u64 = 10_000;
/// A joiner without progress for this long is reported as stalled.
pub const STALL: Duration = Duration::from_secs(30);
/// Expiry (checkpoint height) of the source's signed ops.
const EXPIRES: u64 = 1_000;
/// How long the catch-up through nodes may take at most.
pub const NODE_PATIENCE: Duration = Duration::from_secs(60);
/// How long the engine-only catch-up may take at most.
const ENGINE_PATIENCE: Duration = Duration::from_secs(600);

/// The subnet genesis persisted in the peer store of the node working in `dir`, and that
/// peer store.
fn subnet_of(dir: &Path) -> anyhow::Result<(SubnetGenesis, std::path::PathBuf)> {
    let layout = RunConfig::resolve(&flags(dir), |_| None)?.layout();
    let file = layout.peer_store.join(SUBNET_GENESIS_FILE);
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok((codec::decode(&bytes)?, layout.peer_store))
}

/// Opens the subnet ledger of `genesis` in the store at `store_dir` (its compile cache
/// inside).
fn open_ledger(
    store_dir: &Path,
    genesis: &SubnetGenesis,
    keypair: Option<Keypair>,
    sync: bool,
) -> anyhow::Result<Ledger<SubnetMachine>> {
    let store = Arc::new(Store::open(
        store_dir,
        StoreOptions {
            sync,
            ..StoreOptions::default()
        },
    )?);
    let runtime = crate::subnet::replay::runtime(Some(&store_dir.join(CACHE_DIR_NAME)))?;
    Ok(Ledger::open(
        store,
        SubnetMachine::standard(genesis.clone(), runtime),
        genesis.id(),
        keypair,
        LedgerLimits::default(),
    )?)
}

/// Proposes checkpoints on the source's ledger until every entry is in a final one.
fn checkpoint_all(ledger: &mut Ledger<SubnetMachine>) -> anyhow::Result<()> {
    loop {
        let out = ledger.propose(now_ms())?;
        let status = ledger.status();
        ensure!(
            status.final_height == status.latest_height,
            "source checkpoint {} is not final",
            status.latest_height
        );
        if out.is_empty() {
            return Ok(());
        }
    }
}

/// Creates the source node in `dir`, makes its creation final, stops it and extends its
/// subnet log (see the module documentation). Returns how long the extension took.
fn build_source(dir: &Path) -> anyhow::Result<Duration> {
    let source = Running::spawn(start(&flags(dir), "")?)?;
    source.wait_for(
        "the subnet's creation checkpoint",
        Duration::from_millis(5),
        PATIENCE,
        |s| s.subnet.status.final_height >= 1,
    )?;
    source.stop()?;

    let began = Instant::now();
    let (genesis, peer_store) = subnet_of(dir)?;
    // As a node would: nobody else may open the store meanwhile.
    let _lock = StoreLock::acquire(&peer_store)?;
    let layout = RunConfig::resolve(&flags(dir), |_| None)?.layout();
    let key = keystore::unlock(&layout.peer_keystore(), "")?;
    let mut ledger = open_ledger(&peer_store, &genesis, Some(key.clone()), false)?;
    let signer = OpSigner::new(key, genesis.id());
    ledger.append(vec![
        signer.sign(Action::SetChatStatus { enabled: true }, EXPIRES),
    ])?;
    for i in 0..ENTRIES {
        let op = signer.sign(
            Action::PostMessage {
                text: format!("catch-up message {i}"),
                attachments: Vec::new(),
                reply_to: None,
            },
            EXPIRES,
        );
        ledger.append(vec![op])?;
        if (i + 1) % PER_CHECKPOINT == 0 {
            checkpoint_all(&mut ledger)?;
        }
    }
    checkpoint_all(&mut ledger)?;
    let messages: u64 = ledger
        .read(true, |s| s.get(keys::MSGL.as_bytes()))??
        .map(|bytes| rmp_serde::from_slice(&bytes))
        .transpose()?
        .unwrap_or(0);
    ensure!(
        messages == ENTRIES,
        "the source applied {messages} chat messages, not {ENTRIES}"
    );
    drop(ledger);
    // Written without fsync: flushed now, so that the kernel does not write the log back to
    // the disk while the catch-up is timed (the joiner's fsyncs would queue behind it).
    std::fs::File::open(peer_store.join("data.mdb"))
        .and_then(|file| file.sync_all())
        .context("cannot flush the source's store")?;
    Ok(began.elapsed())
}

/// How the catch-up through nodes ended, and when (from the joiner's start).
enum Ending {
    /// The joiner has everything.
    Complete(Duration),
    /// No progress for [`STALL`] after this.
    Stalled(Duration),
    /// Still progressing when [`NODE_PATIENCE`] ran out.
    TimedOut(Duration),
}

/// Whether `mine` has everything `theirs` has final.
fn caught_up(mine: &LedgerStatus, theirs: &LedgerStatus) -> bool {
    mine.final_height >= theirs.final_height && mine.entries >= theirs.entries
}

/// Fails unless `mine` ended where `theirs` is.
fn check_same(mine: &LedgerStatus, theirs: &LedgerStatus) -> anyhow::Result<()> {
    ensure!(
        mine.final_height == theirs.final_height
            && mine.entries == theirs.entries
            && mine.position == theirs.position
            && mine.final_root == theirs.final_root
            && mine.divergence.is_none(),
        "the joiner ended elsewhere: {mine:?}, the source: {theirs:?}"
    );
    Ok(())
}

/// The catch-up through two nodes over loopback.
fn through_nodes(source_dir: &Path, joiner_dir: &Path) -> anyhow::Result<Vec<Measurement>> {
    let started = start(&flags(source_dir), "")?;
    let address = started
        .addrs
        .first()
        .context("the source has no listen address")?
        .to_string();
    let (msb, subnet) = (started.node.msb_id(), started.node.subnet_id());
    let source = Running::spawn(started)?;
    let theirs = source.stats()?.subnet.status;
    ensure!(
        theirs.final_height == theirs.latest_height && theirs.entries > ENTRIES,
        "the source's log is not final: {theirs:?}"
    );

    let mut joiner_flags = flags(joiner_dir);
    joiner_flags.subnet_bootstrap = Some(subnet.to_hex());
    joiner_flags.msb_bootstrap = Some(msb.to_hex());
    joiner_flags.dht_bootstrap = Some(address);
    let joiner = start(&joiner_flags, "")?;
    let began = joiner.began;
    let ready = joiner.total();
    let joiner = Running::spawn(joiner)?;
    let mut progress = (0, 0);
    let mut progressed = began;
    let (mine, ending) = loop {
        let mine = joiner.stats()?.subnet.status;
        let now = Instant::now();
        if caught_up(&mine, &theirs) {
            break (mine, Ending::Complete(now - began));
        }
        if (mine.entries, mine.final_height) != progress {
            progress = (mine.entries, mine.final_height);
            progressed = now;
        } else if now - progressed > STALL {
            break (mine, Ending::Stalled(progressed - began));
        }
        if now - began > NODE_PATIENCE {
            break (mine, Ending::TimedOut(now - began));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    joiner.stop()?;
    source.stop()?;
    let mut out = Vec::new();
    let unfinished = |elapsed: Duration, how: String| {
        tracing::warn!(entries = mine.entries, of = theirs.entries, "{how}");
        Measurement::throughput(
            format!(
                "catch-up by a joiner node over loopback: {how} at {} of {} entries (final \
                 height {} of {}); rate until then",
                mine.entries, theirs.entries, mine.final_height, theirs.final_height
            ),
            mine.entries,
            elapsed,
        )
        .with_unit("entries/s")
        .target(">= 20000 entries/s")
    };
    match ending {
        Ending::Complete(elapsed) => {
            check_same(&mine, &theirs)?;
            out.push(
                Measurement::throughput(
                    format!(
                        "catch-up of {} subnet log entries by a fresh joiner node over loopback",
                        mine.entries
                    ),
                    mine.entries,
                    elapsed,
                )
                .with_unit("entries/s")
                .target(">= 20000 entries/s"),
            );
            out.push(Measurement::value(
                "… joiner start → final height and entries match the source's",
                elapsed.as_secs_f64(),
                "s",
                1,
            ));
        }
        Ending::Stalled(elapsed) => {
            out.push(unfinished(elapsed, "STALLED".into()));
            out.push(Measurement::value(
                format!(
                    "… joiner start → its last progress (none for {} s after)",
                    STALL.as_secs()
                ),
                elapsed.as_secs_f64(),
                "s",
                1,
            ));
        }
        Ending::TimedOut(elapsed) => {
            out.push(unfinished(
                elapsed,
                format!("NOT DONE after {} s", NODE_PATIENCE.as_secs()),
            ));
        }
    }
    out.push(Measurement::value(
        "… joiner start → ready (genesis fetched from the source)",
        ready.as_secs_f64() * 1e3,
        "ms",
        1,
    ));
    out.push(Measurement::value(
        format!(
            "… joiner's entry count at the end (source: {})",
            theirs.entries
        ),
        mine.entries as f64,
        "entries",
        1,
    ));
    Ok(out)
}

/// The wants a batch of answers raised, merged: one `WantEntries` per writer (from the
/// joiner's current head) and one `WantCheckpoints` (from its next height).
fn merged_wants(
    joiner: &Ledger<SubnetMachine>,
    writers: &BTreeSet<PublicKey>,
    checkpoints: bool,
) -> Vec<Message> {
    let mut wants: Vec<Message> = writers
        .iter()
        .map(|writer| Message::WantEntries {
            writer: *writer,
            from: joiner.log_head(writer).0,
        })
        .collect();
    if checkpoints {
        wants.push(Message::WantCheckpoints {
            from: joiner.status().latest_height + 1,
        });
    }
    wants
}

/// The same catch-up ledger to ledger in one thread (see the module documentation).
fn engine_only(source_dir: &Path, sync: bool) -> anyhow::Result<Measurement> {
    let (genesis, peer_store) = subnet_of(source_dir)?;
    let mut source = open_ledger(&peer_store, &genesis, None, false)?;
    let theirs = source.status();
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let began = Instant::now();
    let mut joiner = open_ledger(dir.path(), &genesis, Some(Keypair::generate()), sync)?;
    let mut requests: Vec<Message> = joiner
        .sync_requests()?
        .into_iter()
        .filter(is_want)
        .collect();
    let mut rounds = 0u64;
    while !caught_up(&joiner.status(), &theirs) {
        ensure!(
            began.elapsed() < ENGINE_PATIENCE,
            "the engine-only catch-up took over {} s",
            ENGINE_PATIENCE.as_secs()
        );
        if requests.is_empty() {
            bail!(
                "the joiner ledger asks for nothing but is behind: {:?} vs {theirs:?}",
                joiner.status()
            );
        }
        rounds += 1;
        let mut answers = Vec::new();
        for request in requests {
            answers.extend(source.handle(request)?);
        }
        let mut writers = BTreeSet::new();
        let mut checkpoints = false;
        for message in answers {
            for out in joiner.handle(message)? {
                match out {
                    Message::WantEntries { writer, .. } => {
                        writers.insert(writer);
                    }
                    Message::WantCheckpoints { .. } => checkpoints = true,
                    _ => {}
                }
            }
        }
        requests = merged_wants(&joiner, &writers, checkpoints);
        if requests.is_empty() && !caught_up(&joiner.status(), &theirs) {
            requests = joiner
                .sync_requests()?
                .into_iter()
                .filter(is_want)
                .collect();
        }
    }
    let elapsed = began.elapsed();
    let mine = joiner.status();
    check_same(&mine, &theirs)?;
    tracing::info!(rounds, ?elapsed, sync, "engine-only catch-up");
    Ok(Measurement::throughput(
        format!(
            "contrast: engine only, ledger to ledger in process (no network, wants merged per \
             answer), {}",
            if sync { "fsync" } else { "no fsync" }
        ),
        mine.entries,
        elapsed,
    )
    .with_unit("entries/s"))
}

/// Entries whose signatures the breakdown verifies.
const BREAKDOWN_ENTRIES: u64 = 10_000;
/// Entries committed one per transaction with fsync in the breakdown.
const BREAKDOWN_COMMITS: u64 = 2_000;
/// Entries per batch (verification, commit) in the breakdown: one answer to `WantEntries`.
const ANSWER: usize = 1_000;

/// Microseconds per item.
fn per_entry(name: &str, elapsed: Duration, items: u64) -> Measurement {
    Measurement::value(
        name,
        elapsed.as_secs_f64() * 1e6 / items.max(1) as f64,
        "µs/entry",
        items,
    )
}

/// Where a joiner's time per entry goes: its signature (alone or batch-verified), its commit
/// (one transaction per entry or per answer, fsync), and applying the log (a replay of the
/// source's store: order, apply, roots, without entry signatures or fsync).
fn breakdown(source_dir: &Path) -> anyhow::Result<Vec<Measurement>> {
    let (genesis, peer_store) = subnet_of(source_dir)?;
    let source = open_ledger(&peer_store, &genesis, None, false)?;
    let network = source.network();
    let creator = genesis.creator;
    let first = source
        .log_head(&creator)
        .0
        .saturating_sub(BREAKDOWN_ENTRIES);
    let mut entries = Vec::with_capacity(BREAKDOWN_ENTRIES as usize);
    for seq in first..first + BREAKDOWN_ENTRIES {
        entries.push(
            source
                .entry(&creator, seq)?
                .with_context(|| format!("the source lacks entry {seq}"))?,
        );
    }
    let n = entries.len() as u64;
    let limits = LedgerLimits::default();
    let mut out = Vec::new();

    let start = Instant::now();
    for entry in &entries {
        entry.verify(&network, &limits)?;
    }
    out.push(per_entry(
        "breakdown: LogEntry::verify, one at a time (as Ledger::handle does)",
        start.elapsed(),
        n,
    ));
    let start = Instant::now();
    for chunk in entries.chunks(ANSWER) {
        let signed: Vec<SignedHash> = chunk
            .iter()
            .map(|e| (e.body.writer, e.hash(&network), e.signature))
            .collect();
        verify_batch(&BatchItem::from_triples(&signed))?;
    }
    out.push(per_entry(
        "breakdown: the same signatures batch-verified, 1,000 per batch (hash included)",
        start.elapsed(),
        n,
    ));

    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    let table = store.table::<Vec<u8>, LogEntry>("bench.entries")?;
    let key = |entry: &LogEntry| {
        let mut key = entry.body.writer.0.to_vec();
        key.extend_from_slice(&entry.body.seq.to_be_bytes());
        key
    };
    let start = Instant::now();
    for entry in &entries[..BREAKDOWN_COMMITS as usize] {
        let mut batch = store.write()?;
        batch.put(&table, &key(entry), entry)?;
        batch.commit()?;
    }
    out.push(per_entry(
        "breakdown: store an entry, one fsynced transaction per entry (as Ledger::handle does)",
        start.elapsed(),
        BREAKDOWN_COMMITS,
    ));
    let start = Instant::now();
    for chunk in entries.chunks(ANSWER) {
        let mut batch = store.write()?;
        for entry in chunk {
            batch.put(&table, &key(entry), entry)?;
        }
        batch.commit()?;
    }
    out.push(per_entry(
        "breakdown: store entries, one fsynced transaction per 1,000",
        start.elapsed(),
        n,
    ));
    drop(store);

    let target_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let target = Store::open(
        target_dir.path(),
        StoreOptions {
            sync: false,
            ..StoreOptions::default()
        },
    )?;
    let runtime = crate::subnet::replay::runtime(Some(&target_dir.path().join(CACHE_DIR_NAME)))?;
    let machine = SubnetMachine::standard(genesis.clone(), runtime);
    let status = source.status();
    let start = Instant::now();
    let report = replay(
        source.store(),
        &network,
        &machine,
        &target,
        &ReplayOptions {
            to: None,
            verify_signatures: false,
        },
        &mut |_| {},
    )?;
    let elapsed = start.elapsed();
    ensure!(
        report.divergence.is_none() && report.root == status.final_root,
        "the replay of the source's log diverged"
    );
    out.push(per_entry(
        "breakdown: apply (replay of the source's log: order, apply, roots; Intercom compiled)",
        elapsed,
        status.entries,
    ));
    Ok(out)
}

fn is_want(message: &Message) -> bool {
    matches!(
        message,
        Message::WantEntries { .. } | Message::WantCheckpoints { .. }
    )
}

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Measurement>> {
    let source_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let joiner_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let build = build_source(source_dir.path())?;
    tracing::info!(?build, entries = ENTRIES, "source log built");
    let mut out = through_nodes(source_dir.path(), joiner_dir.path())?;
    for sync in [true, false] {
        out.push(engine_only(source_dir.path(), sync)?);
    }
    out.extend(breakdown(source_dir.path())?);
    out.push(Measurement::value(
        format!(
            "building the source's log ({ENTRIES} chat entries, a checkpoint per \
             {PER_CHECKPOINT}, no fsync; not timed above)"
        ),
        build.as_secs_f64(),
        "s",
        ENTRIES,
    ));
    Ok(out)
}
