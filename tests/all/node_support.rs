//! Real `trac run` processes (`trac-under-test`) on 127.0.0.1 with mDNS off, driven through
//! their terminal on stdin/stdout, for the multi-process tests.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long a node may take to start, sync or stop.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running node process.
pub struct NodeProc {
    pub child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub seen: Vec<String>,
}

impl NodeProc {
    pub fn start(cwd: &Path, args: &[&str]) -> NodeProc {
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
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest of it.
    pub fn expect_line(&mut self, prefix: &str) -> String {
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

    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the node");
        self.stdin.flush().expect("flush");
    }

    /// `/stats`: (final height, root) of the MSB and of the subnet, and the peer count.
    pub fn stats(&mut self) -> ((u64, String), (u64, String), usize) {
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
    pub fn terminate(self) -> (Option<i32>, String) {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit; returns the exit code and
    /// stderr.
    pub fn signal(mut self, signal: &str) -> (Option<i32>, String) {
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
        (code, self.take_stderr())
    }
}

/// The banner's values the test needs: (MSB id, subnet id, host:port of the first listen
/// address).
pub fn banner(node: &mut NodeProc) -> (String, String, String) {
    let msb = node.expect_line("MSB network bootstrap:");
    let subnet = node.expect_line("Peer subnet bootstrap:");
    let listen = node.expect_line("Listen addresses:");
    let first = listen.split(", ").next().expect("an address").to_string();
    // /ip4/127.0.0.1/tcp/<port>
    let port = first.rsplit('/').next().expect("a port").to_string();
    node.expect_line("Node running.");
    (msb, subnet, format!("127.0.0.1:{port}"))
}

impl NodeProc {
    /// Waits for a stdout line containing `needle`; returns the line.
    pub fn expect_containing(&mut self, needle: &str) -> String {
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
    pub fn await_value(&mut self, key: &str, ok: impl Fn(&str) -> bool) -> String {
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
    pub fn exit(mut self) {
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

/// A built contract component of `contracts/artifacts`.
pub fn artifact(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contracts/artifacts")
        .join(format!("{name}.wasm"))
}

/// The flags that make a node join the admin's networks through its address.
pub fn joining<'a>(msb: &'a str, subnet: &'a str, addr: &'a str) -> Vec<&'a str> {
    vec![
        "--subnet-bootstrap",
        subnet,
        "--msb-bootstrap",
        msb,
        "--dht-bootstrap",
        addr,
    ]
}

impl NodeProc {
    /// The writer key the banner printed.
    pub fn writer_key(&self) -> String {
        self.seen
            .iter()
            .find_map(|l| l.strip_prefix("Peer writer key (hex):"))
            .expect("the banner names the writer key")
            .trim()
            .to_string()
    }

    /// Polls `/stats` until this peer's line contains `needle`.
    pub fn await_role(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.send("/stats");
            let me = self.expect_line("Peer ");
            if me.contains(needle) {
                return;
            }
            assert!(Instant::now() < deadline, "never {needle}: {me}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `line` until its reply line starting with `prefix` contains `needle` (for
    /// commands that depend on state still replicating); returns that line.
    pub fn retry(&mut self, line: &str, prefix: &str, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.send(line);
            let reply = self.expect_line(prefix);
            if reply.contains(needle) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "{line} never gave {needle:?}: {reply}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The exit code and stderr of a process that exited (or is exiting) on its own.
    pub fn terminate_exited(mut self) -> (Option<i32>, String) {
        let code = self.child.wait().expect("wait").code();
        (code, self.take_stderr())
    }

    /// What the process wrote on stderr (once it has exited).
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every node reports the same subnet final height and root, at least
/// `min_height`; returns them.
pub fn await_converged(nodes: &mut [&mut NodeProc], min_height: u64) -> (u64, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let views: Vec<(u64, String)> = nodes.iter_mut().map(|n| n.stats().1).collect();
        if views[0].0 >= min_height && views.iter().all(|v| *v == views[0]) {
            return views[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the subnet did not converge: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A test that fails midway must not leave its nodes running.
impl Drop for NodeProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl NodeProc {
    /// Waits up to `within` for a stdout line containing `needle`, looking first at the lines
    /// already read (other waits may have read past it); returns it, or `None` when none came.
    pub fn find_within(&mut self, needle: &str, within: Duration) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// [`NodeProc::find_within`] that panics (with what the node printed) when no line came.
    #[track_caller]
    pub fn await_printed(&mut self, needle: &str, within: Duration) -> String {
        match self.find_within(needle, within) {
            Some(line) => line,
            None => panic!(
                "no line containing {needle:?} within {within:?}; stdout so far:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// How many of the lines read so far contain `needle`.
    pub fn count_seen(&self, needle: &str) -> usize {
        self.seen.iter().filter(|l| l.contains(needle)).count()
    }
}

/// Creates the (unencrypted) peer keystore of a node that will run in `dir` with the default
/// store names, so that the test knows the node's peer key before it starts (to name it in
/// flags such as `--sidechannel-owner`). Returns the key pair.
pub fn preset_peer_key(dir: &Path) -> trac_host::crypto::Keypair {
    let keypair = trac_host::crypto::Keypair::generate();
    let path = dir.join("stores/peer/keypair.json");
    trac_host::crypto::keystore::create(
        &path,
        &keypair,
        "",
        trac_host::crypto::keystore::KdfParams::DEFAULT,
        false,
    )
    .expect("create the peer keystore");
    keypair
}
