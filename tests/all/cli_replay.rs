//! `trac replay` and `trac log export|import` as real processes, against subnet stores built
//! in temporary directories; divergence detection at the library level.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;
use trac_host::bundled;
use trac_host::codec::json::json_to_msgpack;
use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::ledger::replay::{ReplayOptions, replay};
use trac_host::ledger::{AppliedOp, Ledger, LedgerError, Message, StateMachine};
use trac_host::store::{StateAccess, Store, StoreError, StoreOptions, StoreRead};
use trac_host::subnet::ops::deploy_ops;
use trac_host::subnet::{
    Action, Attestation, OpSigner, Settlement, SettlementScheme, SubnetMachine, SubnetOp, TxOp,
    encode_op,
};

use crate::subnet_support::{MSB_NETWORK, genesis, key, msb_indexer, open_node, runtime};
use crate::support::{Outcome, tempdir, trac};

/// The tx hash of the traced `submitSomething`.
const SUBMIT_TX: Hash32 = Hash32([0x52; 32]);

/// A subnet built in `<dir>/store` by its creator (the only indexer), checkpoint by
/// checkpoint, remembering each checkpoint's root and op range.
struct Built {
    dir: TempDir,
    ledger: Option<Ledger<SubnetMachine>>,
    time: u64,
    /// `roots[h]`: the confirmed root after checkpoint `h` (`roots[0]`: genesis).
    roots: Vec<Hash32>,
    /// `positions[h]`: the position after checkpoint `h`'s ops.
    positions: Vec<u64>,
}

impl Built {
    fn new() -> Built {
        let dir = tempdir();
        let ledger = open_node(&dir.path().join("store"), Some(&key(1)));
        let status = ledger.status();
        Built {
            dir,
            ledger: Some(ledger),
            time: 1_700_000_000_000,
            roots: vec![status.final_root],
            positions: vec![0],
        }
    }

    fn ledger(&mut self) -> &mut Ledger<SubnetMachine> {
        self.ledger.as_mut().expect("the ledger is open")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn id(&self) -> Hash32 {
        genesis().id()
    }

    fn signer(&self, keypair: &Keypair) -> OpSigner {
        OpSigner::new(keypair.clone(), self.id())
    }

    fn signed(&self, keypair: &Keypair, action: Action) -> Vec<u8> {
        self.signer(keypair)
            .sign(action, self.roots.len() as u64 + 1_000)
    }

    /// Appends `ops` as one entry and checkpoints it (final at once).
    fn apply(&mut self, ops: Vec<Vec<u8>>) {
        self.ledger().append(ops).expect("append");
        self.time += 1_000;
        let time = self.time;
        let out = self.ledger().propose(time).expect("propose");
        assert!(out.iter().any(|m| matches!(m, Message::Checkpoint(_))));
        let status = self.ledger().status();
        assert_eq!(status.final_height as usize, self.roots.len());
        self.roots.push(status.final_root);
        self.positions.push(status.position);
    }

    /// Deploys `component` (the first one: with the admin and the MSB trust).
    fn deploy(&mut self, component: &[u8], first: bool) {
        let admin = key(1);
        let mut ops = Vec::new();
        if first {
            ops.push(encode_op(&SubnetOp::AddAdmin {
                key: admin.public(),
            }));
            ops.push(self.signed(
                &admin,
                Action::SetMsbTrust {
                    network: MSB_NETWORK,
                    indexers: vec![msb_indexer().public()],
                    scheme: SettlementScheme::Attested,
                },
            ));
        }
        let expires = self.roots.len() as u64 + 1_000;
        ops.extend(deploy_ops(&self.signer(&admin), component, expires));
        self.apply(ops);
    }

    /// A settled tx op.
    fn tx(&self, requester: &PublicKey, tx: Hash32, function: &str, args: &Value) -> Vec<u8> {
        let args = json_to_msgpack(args).expect("msgpack args");
        let settlement = Settlement {
            tx_hash: tx,
            requester: *requester,
            validator: key(201).public(),
            subnet: self.id(),
            content: TxOp::content_hash(&self.id(), function, &args),
        };
        encode_op(&SubnetOp::Tx(TxOp {
            function: function.into(),
            args: serde_bytes::ByteBuf::from(args),
            settlement: serde_bytes::ByteBuf::from(Attestation::sign(
                &msb_indexer(),
                &MSB_NETWORK,
                settlement,
            )),
        }))
    }

    fn post(&self, author: &Keypair, text: &str) -> Vec<u8> {
        self.signed(
            author,
            Action::PostMessage {
                text: text.into(),
                attachments: vec![],
                reply_to: None,
            },
        )
    }

    fn final_root(&self) -> Hash32 {
        *self.roots.last().expect("genesis root")
    }

    /// Closes the ledger so that other processes (or a replay) read a settled store.
    fn close(&mut self) {
        self.ledger = None;
    }
}

/// Intercom, txs, chat, then an upgrade to the registry mid-log and a registry tx.
fn busy_subnet() -> Built {
    let mut b = Built::new();
    let alice = key(2);
    let bob = key(3);
    b.deploy(bundled::INTERCOM, true); // 1
    let op = b.tx(
        &alice.public(),
        Hash32([0x11; 32]),
        "storeSomething",
        &Value::Null,
    );
    b.apply(vec![op]); // 2
    let op = b.tx(
        &alice.public(),
        SUBMIT_TX,
        "submitSomething",
        &json!({"op": "do_something", "some_key": "x"}),
    );
    b.apply(vec![op]); // 3
    let on = b.signed(&key(1), Action::SetChatStatus { enabled: true });
    let hello = b.post(&alice, "hello");
    let hi = b.post(&bob, "hi alice");
    b.apply(vec![on, hello, hi]); // 4
    let op = b.tx(
        &bob.public(),
        Hash32([0x13; 32]),
        "submitSomething",
        &json!({"op": "do_something", "some_key": "y"}),
    );
    b.apply(vec![op]); // 5
    b.deploy(bundled::REGISTRY, false); // 6
    let op = b.tx(
        &bob.public(),
        Hash32([0x14; 32]),
        "claim",
        &json!({"name": "bob", "target": "somewhere"}),
    );
    let post = b.post(&alice, "after the upgrade");
    b.apply(vec![op, post]); // 7
    b.close();
    b
}

fn json_out(out: &Outcome) -> Value {
    let stdout = out.success();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Arguments as owned strings (paths included).
fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    parts
        .iter()
        .map(|p| p.as_ref().to_string_lossy().into_owned())
        .collect()
}

fn run(cwd: &Path, parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Outcome {
    let owned = args(parts);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    trac(cwd, &refs).run()
}

/// A clean failure: exit code 1, one `error:` line on stderr, no panic.
#[track_caller]
fn clean_failure(out: &Outcome, needle: &str) {
    let stderr = out.failure(1);
    assert!(!stderr.contains("panicked"), "{out:#?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {out:#?}");
    assert!(lines[0].starts_with("error: "), "{out:#?}");
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in: {out:#?}"
    );
    // No cause is printed twice (an error both showing and chaining its source).
    let parts: Vec<&str> = lines[0].split(": ").filter(|p| p.len() > 12).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "repeated {part:?}: {out:#?}"
        );
    }
}

fn store_root(dir: &Path) -> Hash32 {
    let store = Store::open(dir, StoreOptions::default()).expect("open store");
    store.state_root().expect("root")
}

#[test]
fn cli_replay_reproduces_the_roots_of_a_subnet_with_txs_chat_and_an_upgrade() {
    let b = busy_subnet();
    let work = tempdir();
    let cwd = work.path();
    let cache = cwd.join("cache");
    let store = b.store();
    let root = b.final_root().to_hex();

    // Text summary.
    let out = run(
        cwd,
        &[&"replay", &"--store", &store, &"--cache-dir", &cache],
    );
    let stdout = out.success();
    assert!(
        stdout.contains(&format!("final root   {root}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("checkpoints  7 replayed (the store's final height is 7)"),
        "{stdout}"
    );
    assert!(stdout.contains("ops/s"), "{stdout}");
    assert!(stdout.contains("time "), "{stdout}");
    assert!(!stdout.contains("divergent"), "{stdout}");

    // JSON, verified.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--verify",
            &"--json",
        ],
    );
    let doc = json_out(&out);
    assert_eq!(doc["final_root"], json!(root), "{doc}");
    assert_eq!(doc["source_root"], json!(root), "{doc}");
    assert_eq!(doc["matches_source"], json!(true), "{doc}");
    assert_eq!(doc["checkpoints"], json!(7), "{doc}");
    assert_eq!(doc["ops"], json!(b.positions[7]), "{doc}");
    assert_eq!(doc["entries"], json!(7), "{doc}");
    assert_eq!(doc["divergence"], Value::Null, "{doc}");
    assert!(
        out.stderr.is_empty(),
        "no progress bar off a terminal: {out:#?}"
    );

    // --verify in text.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--verify",
        ],
    );
    assert!(
        out.success().contains(
            "verified     signatures ok; the final root matches the store's confirmed root"
        ),
        "{out:#?}"
    );

    // --to stops early, at that checkpoint's root.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--to",
            &"3",
            &"--json",
        ],
    );
    let doc = json_out(&out);
    assert_eq!(doc["checkpoints"], json!(3), "{doc}");
    assert_eq!(doc["final_root"], json!(b.roots[3].to_hex()), "{doc}");
    assert_eq!(doc["ops"], json!(b.positions[3]), "{doc}");
    assert_eq!(doc["matches_source"], Value::Null, "{doc}");

    // --into keeps the rebuilt store, which has the source's root; it must be new or empty.
    let into = cwd.join("rebuilt");
    let out = run(cwd, &[&"replay", &"--store", &store, &"--into", &into]);
    assert!(
        out.success()
            .contains(&format!("kept         {}", into.display())),
        "{out:#?}"
    );
    assert_eq!(store_root(&into), b.final_root());
    let out = run(cwd, &[&"replay", &"--store", &store, &"--into", &into]);
    clean_failure(&out, "is not empty");
    let file = cwd.join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = run(cwd, &[&"replay", &"--store", &store, &"--into", &file]);
    clean_failure(&out, "is not a directory");

    // A store whose confirmed state was changed behind the ledger's back: every checkpoint
    // still replays, but --verify sees that the rebuilt root is not the store's.
    {
        let source = Store::open(&store, StoreOptions::default()).expect("open");
        let mut batch = source.write().expect("write");
        batch.state_put(b"tampered", b"1").expect("put");
        batch.commit().expect("commit");
    }
    let out = run(
        cwd,
        &[&"replay", &"--store", &store, &"--cache-dir", &cache],
    );
    out.success();
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--verify",
        ],
    );
    clean_failure(&out, "differs from the store's confirmed root");
    assert!(
        out.stdout
            .contains("verified     signatures ok; the final root DIFFERS"),
        "{out:#?}"
    );
}

#[test]
fn cli_replay_traces_one_transaction() {
    let b = busy_subnet();
    let work = tempdir();
    let cwd = work.path();
    let cache = cwd.join("cache");
    let store = b.store();
    let alice = key(2).public().to_hex();

    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--trace",
            &SUBMIT_TX.to_hex(),
        ],
    );
    let stdout = out.success();
    assert!(
        stdout.contains(&format!("trace        {}\n", SUBMIT_TX.to_hex())),
        "{stdout}"
    );
    assert!(
        stdout.contains("function     submitSomething\n"),
        "{stdout}"
    );
    assert!(stdout.contains("result       ok {"), "{stdout}");
    assert!(
        stdout.contains(&format!("write        submitted_by/{alice} = ")),
        "{stdout}"
    );
    assert!(stdout.contains("event        submitted 0x"), "{stdout}");
    assert!(
        stdout.contains("debug        submitted by trac1"),
        "{stdout}"
    );
    let fuel = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fuel         "))
        .unwrap_or_else(|| panic!("no fuel line: {stdout}"));
    assert!(
        fuel.parse::<u64>().expect("fuel is a number") > 0,
        "{stdout}"
    );

    // The same as JSON.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--trace",
            &SUBMIT_TX.to_hex(),
            &"--json",
        ],
    );
    let doc = json_out(&out);
    let trace = &doc["trace"];
    assert_eq!(trace["function"], json!("submitSomething"), "{doc}");
    assert_eq!(trace["result"]["some_key"], json!("x"), "{doc}");
    assert_eq!(trace["events"][0]["topic"], json!("submitted"), "{doc}");
    assert_eq!(
        trace["writes"][0]["key"],
        json!(format!("submitted_by/{alice}")),
        "{doc}"
    );
    assert_eq!(trace["writes"][0]["len"], json!(2), "msgpack \"x\": {doc}");
    assert!(trace["fuel"].as_u64().unwrap() > 0, "{doc}");

    // A transaction that reads: its reads are listed.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--trace",
            &Hash32([0x11; 32]).to_hex(),
        ],
    );
    let stdout = out.success();
    assert!(stdout.contains("function     storeSomething\n"), "{stdout}");
    assert!(
        stdout.contains("read         something absent\n"),
        "{stdout}"
    );
    assert!(stdout.contains("write        something = "), "{stdout}");

    // A transaction that never applied, and a hash that is not one.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &store,
            &"--cache-dir",
            &cache,
            &"--trace",
            &Hash32([0x99; 32]).to_hex(),
        ],
    );
    clean_failure(&out, "was not applied");
    let out = run(cwd, &[&"replay", &"--store", &store, &"--trace", &"zz"]);
    clean_failure(&out, "is not a transaction hash");
}

#[test]
fn cli_log_export_then_import_reproduces_every_root() {
    let b = busy_subnet();
    let work = tempdir();
    let cwd = work.path();
    let cache = cwd.join("cache");
    let file = cwd.join("subnet.traclog");
    let out = run(cwd, &[&"log", &"export", &file, &"--store", &b.store()]);
    let stdout = out.success();
    assert!(stdout.contains("entries      7\n"), "{stdout}");
    assert!(stdout.contains("checkpoints  7\n"), "{stdout}");
    assert!(stdout.contains("final height 7\n"), "{stdout}");
    let size = std::fs::metadata(&file).expect("exported file").len();
    assert!(
        stdout.contains(&format!("bytes        {size}\n")),
        "{stdout}"
    );

    let imported = cwd.join("imported");
    let out = run(
        cwd,
        &[
            &"log",
            &"import",
            &file,
            &"--store",
            &imported,
            &"--cache-dir",
            &cache,
        ],
    );
    let stdout = out.success();
    assert!(stdout.contains("checkpoints  7\n"), "{stdout}");
    assert!(stdout.contains("final height 7\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("final root   {}\n", b.final_root())),
        "{stdout}"
    );

    // The imported store replays to the same final root, checkpoint by checkpoint.
    let out = run(
        cwd,
        &[
            &"replay",
            &"--store",
            &imported,
            &"--cache-dir",
            &cache,
            &"--verify",
            &"--json",
        ],
    );
    let doc = json_out(&out);
    assert_eq!(doc["final_root"], json!(b.final_root().to_hex()), "{doc}");
    assert_eq!(doc["matches_source"], json!(true), "{doc}");
    assert_eq!(doc["checkpoints"], json!(7), "{doc}");

    // Every checkpoint of the imported store is the source's, roots included.
    let source = open_node(&b.store(), None);
    let copy = open_node(&imported, None);
    for height in 1..=7 {
        let a = source.checkpoint(height).expect("read").expect("stored");
        let c = copy.checkpoint(height).expect("read").expect("stored");
        assert_eq!(a, c, "checkpoint {height}");
        assert_eq!(c.body.state_root, b.roots[height as usize]);
    }
    drop((source, copy));

    // A non-empty target is refused.
    let out = run(cwd, &[&"log", &"import", &file, &"--store", &imported]);
    clean_failure(&out, "is not empty");
}

#[test]
fn cli_log_import_refuses_damaged_files_cleanly() {
    let b = busy_subnet();
    let work = tempdir();
    let cwd = work.path();
    let cache = cwd.join("cache");
    let file = cwd.join("subnet.traclog");
    run(cwd, &[&"log", &"export", &file, &"--store", &b.store()]).success();
    let bytes = std::fs::read(&file).expect("read export");

    let import = |name: &str, content: &[u8]| -> (Outcome, PathBuf) {
        let damaged = cwd.join(format!("{name}.traclog"));
        std::fs::write(&damaged, content).expect("write damaged file");
        let target = cwd.join(format!("{name}-store"));
        let out = run(
            cwd,
            &[
                &"log",
                &"import",
                &damaged,
                &"--store",
                &target,
                &"--cache-dir",
                &cache,
            ],
        );
        (out, target)
    };

    // One byte flipped in the middle, and at a few other places.
    for (i, at) in [bytes.len() / 2, bytes.len() / 3, bytes.len() * 3 / 4, 40]
        .into_iter()
        .enumerate()
    {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        let (out, target) = import(&format!("flipped{i}"), &damaged);
        clean_failure(&out, "import failed: ");
        assert!(!target.exists(), "the partial store is removed: {out:#?}");
    }

    // Truncated.
    let (out, target) = import("truncated", &bytes[..bytes.len() / 2]);
    clean_failure(&out, "truncated");
    assert!(!target.exists());
    let (out, _) = import("no-end", &bytes[..bytes.len() - 4]);
    clean_failure(&out, "truncated");

    // Not an archive at all.
    let mut wrong = bytes.clone();
    wrong[..8].copy_from_slice(b"NOTALOG!");
    let (out, _) = import("magic", &wrong);
    clean_failure(&out, "not a log archive");
    let (out, _) = import("empty", b"");
    clean_failure(&out, "not a log archive");

    // Missing file.
    let out = run(
        cwd,
        &[
            &"log",
            &"import",
            &cwd.join("absent.traclog"),
            &"--store",
            &cwd.join("absent-store"),
        ],
    );
    clean_failure(&out, "absent.traclog");
}

#[test]
fn cli_replay_and_log_refuse_bad_stores_cleanly() {
    let work = tempdir();
    let cwd = work.path();
    let missing = cwd.join("missing");
    let out = run(cwd, &[&"replay", &"--store", &missing]);
    clean_failure(&out, "no store at");
    assert!(!missing.exists(), "a missing store is not created");
    let out = run(
        cwd,
        &[
            &"log",
            &"export",
            &cwd.join("x.traclog"),
            &"--store",
            &missing,
        ],
    );
    clean_failure(&out, "no store at");
    assert!(!cwd.join("x.traclog").exists());

    // A store that is not a subnet's.
    let plain = cwd.join("plain");
    {
        let store = Store::open(&plain, StoreOptions::default()).expect("open");
        let mut batch = store.write().expect("write");
        batch.state_put(b"k", b"v").expect("put");
        batch.commit().expect("commit");
    }
    let out = run(cwd, &[&"replay", &"--store", &plain]);
    clean_failure(&out, "is not a subnet store");
    let out = run(
        cwd,
        &[
            &"log",
            &"export",
            &cwd.join("y.traclog"),
            &"--store",
            &plain,
        ],
    );
    clean_failure(&out, "is not a subnet store");

    // A data file that is not LMDB.
    let garbage = cwd.join("garbage");
    std::fs::create_dir_all(&garbage).expect("mkdir");
    std::fs::write(garbage.join("data.mdb"), vec![0x42; 10_000]).expect("write");
    let out = run(cwd, &[&"replay", &"--store", &garbage]);
    clean_failure(&out, "garbage");

    // Usage errors: exit status 2.
    trac(cwd, &["replay"]).run().failure(2);
    let out = run(cwd, &[&"replay", &"--store", &plain, &"--to", &"soon"]);
    out.failure(2);
    trac(cwd, &["log", "import", "f"]).run().failure(2);
}

/// The subnet machine with one extra write at one position: a node that computes another
/// state there.
struct Skewed {
    inner: SubnetMachine,
    at: u64,
}

impl StateMachine for Skewed {
    fn genesis(&self, state: &mut dyn StateAccess) -> Result<(), StoreError> {
        StateMachine::genesis(&self.inner, state)
    }
    fn is_writer(&self, state: &dyn StateAccess, writer: &PublicKey) -> Result<bool, StoreError> {
        self.inner.is_writer(state, writer)
    }
    fn indexers(&self, state: &dyn StateAccess) -> Result<Vec<PublicKey>, StoreError> {
        self.inner.indexers(state)
    }
    fn prepare(&self, ops: &[&[u8]]) {
        self.inner.prepare(ops)
    }
    fn apply(
        &self,
        state: &mut dyn StateAccess,
        op: &AppliedOp<'_>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        let receipt = self.inner.apply(state, op)?;
        if op.position == self.at {
            state.put(b"skew", b"1")?;
        }
        Ok(receipt)
    }
}

#[test]
fn cli_replay_library_names_the_first_divergent_checkpoint_and_its_ops() {
    let b = busy_subnet();
    let source = Store::open(&b.store(), StoreOptions::default()).expect("open source");
    // An op of checkpoint 5 (the second submitSomething): positions[4]..positions[5].
    let at = b.positions[4];
    assert!(b.positions[5] > at);
    let machine = Skewed {
        inner: SubnetMachine::standard(genesis(), runtime()),
        at,
    };
    let scratch = tempdir();
    let target = Store::open(scratch.path(), StoreOptions::default()).expect("open target");
    let mut seen = Vec::new();
    let report = replay(
        &source,
        &b.id(),
        &machine,
        &target,
        &ReplayOptions::default(),
        &mut |p| seen.push(p.height),
    )
    .expect("replay");
    let d = report.divergence.expect("a divergence");
    assert_eq!(d.height, 5);
    assert_eq!(d.first_position, b.positions[4]);
    assert_eq!(d.end_position, b.positions[5]);
    assert_eq!(d.expected, b.roots[5]);
    assert_ne!(d.computed, b.roots[5]);
    assert!(d.receipts_match, "the receipts are the same");
    // Everything before it matched and was kept.
    assert_eq!(report.height, 4);
    assert_eq!(report.root, b.roots[4]);
    assert_eq!(report.ops, b.positions[4]);
    assert_eq!(seen, vec![1, 2, 3, 4]);
    assert_eq!(target.state_root().expect("root"), b.roots[4]);
    assert!(
        target
            .read()
            .expect("read")
            .state_get(b"skew")
            .expect("get")
            .is_none(),
        "the divergent checkpoint is not committed"
    );

    // The unmodified machine replays the same store to the end.
    let scratch = tempdir();
    let target = Store::open(scratch.path(), StoreOptions::default()).expect("open target");
    let machine = SubnetMachine::standard(genesis(), runtime());
    let report = replay(
        &source,
        &b.id(),
        &machine,
        &target,
        &ReplayOptions {
            to: None,
            verify_signatures: true,
        },
        &mut |_| {},
    )
    .expect("replay");
    assert_eq!(report.divergence, None);
    assert_eq!(report.height, 7);
    assert_eq!(report.root, b.final_root());
}
