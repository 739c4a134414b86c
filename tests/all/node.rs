//! `trac run` as real processes of `trac-under-test` on 127.0.0.1: an admin node creates a
//! dev MSB network (with a faucet) and a subnet, a second node joins both through the admin
//! (fetching the genesis from it) and replicates them, SIGTERM stops both cleanly, and
//! restarts reopen the same subnet and MSB network.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::support::tempdir;

/// How long a node may take to start, sync or stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running node process.
struct NodeProc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
    seen: Vec<String>,
}

impl NodeProc {
    fn start(cwd: &Path, args: &[&str]) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trac-under-test"))
            .arg("run")
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "0"])
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn trac-under-test");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        NodeProc {
            child,
            stdin,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest of it.
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the node");
        self.stdin.flush().expect("flush");
    }

    /// `/stats`: (final height, root) of the MSB and of the subnet, and the peer count.
    fn stats(&mut self) -> ((u64, String), (u64, String), usize) {
        self.send("/stats");
        let msb = self.expect_line("MSB ");
        let subnet = self.expect_line("Subnet ");
        let parse = |line: &str| {
            let field = |name: &str| {
                line.split(", ")
                    .find_map(|part| {
                        part.find(name)
                            .map(|at| part[at + name.len()..].trim().to_string())
                    })
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
            };
            (
                field("final height ").parse::<u64>().expect("height"),
                field("root "),
                field("peers ").parse::<usize>().expect("peers"),
            )
        };
        let (mh, mr, peers) = parse(&msb);
        let (sh, sr, _) = parse(&subnet);
        ((mh, mr), (sh, sr), peers)
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code and stderr.
    fn terminate(self) -> (Option<i32>, String) {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit; returns the exit code and
    /// stderr.
    fn signal(mut self, signal: &str) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the node did not stop after {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (code, self.stderr.join().unwrap_or_default())
    }
}

/// The banner's values the test needs: (MSB id, subnet id, host:port of the first listen
/// address).
fn banner(node: &mut NodeProc) -> (String, String, String) {
    let msb = node.expect_line("MSB network bootstrap:");
    let subnet = node.expect_line("Peer subnet bootstrap:");
    let listen = node.expect_line("Listen addresses:");
    let first = listen.split(", ").next().expect("an address").to_string();
    // /ip4/127.0.0.1/tcp/<port>
    let port = first.rsplit('/').next().expect("a port").to_string();
    node.expect_line("Node running.");
    (msb, subnet, format!("127.0.0.1:{port}"))
}

#[test]
fn a_joiner_replicates_the_admins_subnet_and_msb_and_nodes_stop_and_restart_cleanly() {
    let a = tempdir();
    let b = tempdir();
    // A faucet: the admin grants the joiner TNK when it connects, so MSB has a checkpoint.
    let mut admin = NodeProc::start(a.path(), &["--msb-faucet", "10"]);
    let (msb, subnet, addr) = banner(&mut admin);
    assert_eq!(msb.len(), 64, "{msb}");
    assert_eq!(subnet.len(), 64, "{subnet}");
    assert!(a.path().join("stores/peer/subnet-genesis.bin").is_file());
    assert!(a.path().join("stores/peer-msb/msb-genesis.bin").is_file());

    // The creator's first entry (admin, MSB trust, Intercom) is final at once.
    let deadline = Instant::now() + PATIENCE;
    let admin_stats = loop {
        let stats = admin.stats();
        if stats.1.0 >= 1 {
            break stats;
        }
        assert!(Instant::now() < deadline, "the subnet never checkpointed");
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut joiner = NodeProc::start(
        b.path(),
        &[
            "--subnet-bootstrap",
            &subnet,
            "--msb-bootstrap",
            &msb,
            "--dht-bootstrap",
            &addr,
        ],
    );
    let (jmsb, jsubnet, _) = banner(&mut joiner);
    assert_eq!((&jmsb, &jsubnet), (&msb, &subnet));
    // The joiner reaches the admin's final heights and roots: the subnet's, and the MSB's
    // once the faucet grant is final.
    let deadline = Instant::now() + PATIENCE;
    let admin_stats = loop {
        let theirs = admin.stats();
        let mine = joiner.stats();
        if theirs.0.0 >= 1 && mine.0 == theirs.0 && mine.1 == theirs.1 && mine.2 >= 1 {
            break theirs;
        }
        assert!(
            Instant::now() < deadline,
            "the joiner did not catch up: {mine:?} vs {theirs:?} (first: {admin_stats:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The joiner sees the contract the admin deployed.
    joiner.send("/get --key contract/current");
    let current = joiner.expect_line("contract/current:");
    assert!(current.contains("\"intercom\""), "{current}");
    assert!(b.path().join("stores/peer/subnet-genesis.bin").is_file());

    let (code, stderr) = joiner.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = admin.terminate();
    assert_eq!(code, Some(0), "{stderr}");

    // The joiner restarts alone, without flags: the persisted ids and genesis files reopen
    // both networks with what it had replicated. Without the genesis files too: the stores'
    // state records both (and the files are written again).
    let subnet_file = b.path().join("stores/peer/subnet-genesis.bin");
    let msb_file = b.path().join("stores/peer-msb/msb-genesis.bin");
    std::fs::remove_file(&subnet_file).expect("remove");
    std::fs::remove_file(&msb_file).expect("remove");
    let mut joiner = NodeProc::start(b.path(), &[]);
    let (jmsb, jsubnet, _) = banner(&mut joiner);
    assert_eq!((&jmsb, &jsubnet), (&msb, &subnet));
    let stats = joiner.stats();
    assert_eq!(
        (stats.0, stats.1),
        (admin_stats.0.clone(), admin_stats.1.clone())
    );
    let (code, stderr) = joiner.terminate();
    assert_eq!(code, Some(0), "{stderr}");

    // A restart reopens the same networks, with the state they had.
    let mut again = NodeProc::start(a.path(), &[]);
    let (msb2, subnet2, _) = banner(&mut again);
    assert_eq!((msb2, subnet2), (msb, subnet));
    let stats = again.stats();
    assert_eq!((stats.0, stats.1), (admin_stats.0, admin_stats.1));
    again.send("/exit");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = again.child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "/exit did not stop the node");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl NodeProc {
    /// Waits for a stdout line containing `needle`; returns the line.
    fn expect_containing(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line containing {needle:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Polls `/get --key <key>` (latest view) until its value satisfies `ok`.
    fn await_value(&mut self, key: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.send(&format!("/get --key {key} --confirmed 0"));
            let value = self.expect_line(&format!("{key}:"));
            if ok(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{key} stayed {value}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `/exit` and waits for a clean exit.
    fn exit(mut self) {
        self.send("/exit");
        self.expect_line("Exiting...");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert_eq!(status.code(), Some(0));
                return;
            }
            assert!(Instant::now() < deadline, "/exit did not stop the node");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_admins_terminal_runs_chat_app_and_tx_commands() {
    let a = tempdir();
    let mut admin = NodeProc::start(a.path(), &[]);
    banner(&mut admin);
    // App commands run on the confirmed state: wait for the creator's first checkpoint.
    let deadline = Instant::now() + PATIENCE;
    while admin.stats().1.0 < 1 {
        assert!(Instant::now() < deadline, "the subnet never checkpointed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // /help lists the built-ins and Intercom's own commands; those run on the contract.
    admin.send("/help");
    admin.expect_containing("/stats");
    admin.expect_containing("/print");
    admin.send("/print --text hello");
    admin.expect_line("hello");

    // Chat: the admin turns chat on and posts.
    admin.send("/set_chat_status --enabled 1");
    admin.expect_containing("appended");
    admin.send("/post --message hi");
    admin.expect_containing("appended");
    let msg = admin.await_value("msg/0", |v| v != "null");
    assert!(msg.contains("\"hi\""), "{msg}");

    // A bad command: the failure and the usage line.
    admin.send("/post");
    admin.expect_line("Command failed:");
    admin.expect_line("Usage: /post");
    admin.send("/no_such_command");
    admin.expect_line("Command failed:");

    // Roles and keys.
    admin.send("/stats");
    let me = admin.expect_line("Peer ");
    assert!(
        me.contains("writer yes") && me.contains("admin yes"),
        "{me}"
    );

    // A transaction: the subnet is deployed on MSB (this node is the dev MSB's validator),
    // then the command is settled and recorded.
    admin.send("/deploy_subnet");
    admin.expect_line("MSB TX broadcasted:");
    admin.send("/tx --command something --sim 1");
    admin.expect_line("Simulation succeeded");
    admin.send("/tx --command something");
    let tx = admin.expect_line("MSB TX broadcasted:");
    assert_eq!(tx.len(), 64, "{tx}");
    admin.await_value("txl", |v| v == "1");

    // Only one admin is ever added; the admin deploys another contract.
    admin.send(&format!("/add_admin --address {}", "ab".repeat(32)));
    admin.expect_line("Command failed:");
    let registry =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/artifacts/registry.wasm");
    admin.send(&format!("/deploy_contract --file {}", registry.display()));
    admin.expect_line("Contract ");
    admin.await_value("contract/current", |v| v.contains("\"registry\""));
    admin.exit();
}

#[test]
fn the_admin_makes_a_joiner_writable_with_add_writer() {
    let a = tempdir();
    let b = tempdir();
    let mut admin = NodeProc::start(a.path(), &[]);
    let (msb, subnet, addr) = banner(&mut admin);
    let mut joiner = NodeProc::start(
        b.path(),
        &[
            "--subnet-bootstrap",
            &subnet,
            "--msb-bootstrap",
            &msb,
            "--dht-bootstrap",
            &addr,
        ],
    );
    banner(&mut joiner);
    let key = joiner
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("Peer writer key (hex):"))
        .expect("the banner names the writer key")
        .trim()
        .to_string();
    joiner.send("/stats");
    let me = joiner.expect_line("Peer ");
    assert!(me.contains("writer no") && me.contains("admin no"), "{me}");
    // A joiner is no admin.
    joiner.send("/set_chat_status --enabled 1");
    let refused = joiner.expect_line("Command failed:");
    assert!(refused.contains("Only the admin"), "{refused}");

    admin.send(&format!("/add_writer --key {key}"));
    admin.expect_containing("appended");
    let deadline = Instant::now() + PATIENCE;
    loop {
        joiner.send("/stats");
        let me = joiner.expect_line("Peer ");
        if me.contains("writer yes") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joiner never became writable: {me}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    joiner.exit();
    admin.exit();
}
