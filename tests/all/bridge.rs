//! SC-Bridge against real `trac run` processes on 127.0.0.1 (port 0, mDNS off), with a real
//! WebSocket client (tungstenite): every message type and error string, authentication
//! (wrong tokens, the brute-force lock-out, Origin), limits (clients, frame size), filters and
//! subscriptions, `cli` mirroring off and on, a slow reader that does not grow the node's
//! memory, and two bridges on two peers exchanging messages over a sidechannel.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::node_support::{NodeProc, banner, joining};
use crate::support::tempdir;

/// The token every test node uses (from a file: never on the command line).
const TOKEN: &str = "bridge-test-token-0123456789abcdef";

/// Bound on one reply or one message between nodes on loopback.
const WAIT: Duration = Duration::from_secs(20);

/// A node with its bridge address.
struct BridgeNode {
    node: NodeProc,
    addr: String,
    peer: String,
    /// `(msb, subnet, listen)` of the banner.
    ids: (String, String, String),
}

/// Starts a node with the bridge on a free port, the token in a file, proof of work off.
fn start(dir: &Path, extra: &[&str]) -> BridgeNode {
    let token_file = dir.join("bridge-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_arg = token_file.display().to_string();
    let mut args = vec![
        "--sc-bridge",
        "--sc-bridge-port",
        "0",
        "--sc-bridge-token-file",
        &token_arg,
        "--sidechannel-pow",
        "0",
    ];
    args.extend_from_slice(extra);
    let mut node = NodeProc::start(dir, &args);
    let ids = banner(&mut node);
    let addr = node
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("SC-Bridge: ws://"))
        .expect("the node prints its bridge address")
        .split(' ')
        .next()
        .expect("an address")
        .to_string();
    let peer = node
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("Peer pubkey (hex): "))
        .expect("the banner names the peer key")
        .trim()
        .to_string();
    BridgeNode {
        node,
        addr,
        peer,
        ids,
    }
}

/// A blocking WebSocket client that keeps messages it was not waiting for.
struct Ws {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    stash: VecDeque<Value>,
}

impl Ws {
    /// Connects and reads `hello`.
    fn connect(addr: &str) -> (Ws, Value) {
        // Closed connections free their places asynchronously: retry a refusal for a while.
        let deadline = Instant::now() + WAIT;
        let socket = loop {
            match tungstenite::connect(format!("ws://{addr}/")) {
                Ok((socket, _)) => break socket,
                Err(tungstenite::Error::Http(r))
                    if r.status().as_u16() == 503 && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect: {e}"),
            }
        };
        let mut ws = Ws {
            socket,
            stash: VecDeque::new(),
        };
        ws.timeout(Some(WAIT));
        let hello = ws.next_of("hello");
        (ws, hello)
    }

    /// Connects and authenticates.
    fn authed(addr: &str) -> Ws {
        let (mut ws, _) = Ws::connect(addr);
        let ok = ws.request(json!({"type": "auth", "token": TOKEN, "id": 1}));
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        ws
    }

    fn timeout(&mut self, timeout: Option<Duration>) {
        if let MaybeTlsStream::Plain(stream) = self.socket.get_ref() {
            stream.set_read_timeout(timeout).unwrap();
        }
    }

    fn send(&mut self, value: Value) {
        self.socket
            .send(Message::text(value.to_string()))
            .expect("send");
    }

    fn send_raw(&mut self, message: Message) {
        self.socket.send(message).expect("send");
    }

    /// The next message from the server (`None`: closed).
    fn read(&mut self) -> Option<Value> {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return Some(
                        serde_json::from_str(text.as_str()).expect("JSON from the bridge"),
                    );
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None;
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("reading from the bridge: {e}"),
            }
        }
    }

    /// The next message matching `wanted` (others are kept for later).
    fn next_where(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.stash.iter().position(&wanted) {
            return self.stash.remove(at).unwrap();
        }
        loop {
            match self.read() {
                Some(value) if wanted(&value) => return value,
                Some(value) => self.stash.push_back(value),
                None => panic!("closed while waiting for {what}; kept: {:?}", self.stash),
            }
        }
    }

    fn next_of(&mut self, kind: &str) -> Value {
        self.next_where(kind, |v| v["type"] == kind)
    }

    /// Sends a request with an integer id and returns the reply carrying it.
    fn request(&mut self, request: Value) -> Value {
        let id = request["id"]
            .as_i64()
            .expect("requests in tests carry an id");
        self.send(request);
        self.next_where(&format!("the reply to {id}"), |v| v["id"] == id)
    }

    /// The error text of a request's reply.
    fn error(&mut self, request: Value) -> String {
        let reply = self.request(request);
        assert_eq!(reply["type"], "error", "{reply}");
        reply["error"].as_str().unwrap().to_string()
    }

    /// Reads until the server closes; the messages read on the way.
    fn until_closed(&mut self) -> Vec<Value> {
        let mut seen: Vec<Value> = self.stash.drain(..).collect();
        while let Some(value) = self.read() {
            seen.push(value);
        }
        seen
    }
}

/// The HTTP status of a refused upgrade.
fn refused(request: tungstenite::handshake::client::Request) -> u16 {
    match tungstenite::connect(request) {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn request_with_origin(addr: &str, origin: &str) -> tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    request
}

#[test]
fn every_message_type_and_error_string() {
    let dir = tempdir();
    let mut a = start(dir.path(), &[]);
    let (mut ws, hello) = Ws::connect(&a.addr);
    // `hello` names no peer before authentication.
    assert_eq!(
        hello,
        json!({"type": "hello", "entryChannel": "0000intercom", "filter": "", "requiresAuth": true})
    );

    // Frames that are not requests, and requests before auth.
    ws.send_raw(Message::text("{not json"));
    assert_eq!(
        ws.next_of("error"),
        json!({"type": "error", "error": "Invalid JSON."})
    );
    ws.send_raw(Message::text("[1, 2]"));
    assert_eq!(
        ws.next_of("error"),
        json!({"type": "error", "error": "Invalid message."})
    );
    ws.send_raw(Message::binary(vec![1u8, 2, 3]));
    assert_eq!(
        ws.next_of("error")["error"],
        "Binary frames are not supported."
    );
    assert_eq!(
        ws.request(json!({"type": "stats", "id": 5})),
        json!({"id": 5, "type": "error", "error": "Unauthorized."})
    );
    // A string id is not echoed.
    ws.send(json!({"type": "info", "id": "x"}));
    assert_eq!(
        ws.next_of("error"),
        json!({"type": "error", "error": "Unauthorized."})
    );
    assert_eq!(
        ws.error(json!({"type": "auth", "token": "wrong", "id": 6})),
        "Unauthorized."
    );
    let ok = ws.request(json!({"type": "auth", "token": TOKEN, "id": 7}));
    assert_eq!(ok["type"], "auth_ok");
    assert_eq!(ok["peer"], a.peer.as_str());
    assert!(ok["address"].as_str().unwrap().starts_with("trac1"), "{ok}");
    assert_eq!(ok["cli"], false);

    // ping, filters, subscriptions.
    let pong = ws.request(json!({"type": "ping", "id": 8}));
    assert_eq!(pong["type"], "pong");
    assert!(pong["ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        ws.request(json!({"type": "set_filter", "filter": "Alpha|beta+gamma", "id": 9})),
        json!({"id": 9, "type": "filter_set", "filter": "Alpha|beta+gamma"})
    );
    assert_eq!(
        ws.request(json!({"type": "clear_filter", "id": 10})),
        json!({"id": 10, "type": "filter_set", "filter": ""})
    );
    assert_eq!(
        ws.request(json!({"type": "subscribe", "channels": ["b", " a "], "id": 11})),
        json!({"id": 11, "type": "subscribed", "channels": ["a", "b"]})
    );
    assert_eq!(
        ws.request(json!({"type": "unsubscribe", "channel": "a", "id": 12})),
        json!({"id": 12, "type": "subscribed", "channels": ["b"]})
    );

    // join / leave with their events.
    assert_eq!(
        ws.request(json!({"type": "join", "channel": " news ", "id": 13})),
        json!({"id": 13, "type": "joined", "channel": "news", "role": "member"})
    );
    assert_eq!(
        ws.next_of("sidechannel_event"),
        json!({"type": "sidechannel_event", "event": "joined", "channel": "news"})
    );
    assert_eq!(
        ws.request(json!({"type": "leave", "channel": "news", "id": 14})),
        json!({"id": 14, "type": "left", "channel": "news", "ok": true})
    );
    assert_eq!(
        ws.next_of("sidechannel_event"),
        json!({"type": "sidechannel_event", "event": "left", "channel": "news"})
    );
    assert_eq!(
        ws.request(json!({"type": "leave", "channel": "0000intercom", "id": 15})),
        json!({"id": 15, "type": "left", "channel": "0000intercom", "ok": false})
    );
    assert_eq!(
        ws.request(json!({"type": "leave", "channel": "never-joined", "id": 16})),
        json!({"id": 16, "type": "left", "channel": "never-joined", "ok": false})
    );
    // The terminal sees what the bridge did.
    a.node.send("/sc_stats");
    a.node.expect_line("Sidechannels:");

    // send: acknowledged with the message id and its recipients (no neighbours here).
    let sent = ws
        .request(json!({"type": "send", "channel": "0000intercom", "message": {"k": 1}, "id": 17}));
    assert_eq!(sent["type"], "sent", "{sent}");
    assert_eq!(sent["channel"], "0000intercom");
    assert_eq!(sent["messageId"].as_str().unwrap().len(), 32);
    assert_eq!(sent["recipients"], 0);

    // open, stats, info.
    assert_eq!(
        ws.request(json!({"type": "open", "channel": "room", "id": 18})),
        json!({"id": 18, "type": "open_requested", "channel": "room", "via": null})
    );
    let stats = ws.request(json!({"type": "stats", "id": 19}));
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["channels"], json!(["0000intercom"]));
    assert_eq!(stats["connectionCount"], 0);
    assert_eq!(stats["sidechannelStarted"], true);
    assert_eq!(stats["bridgeClients"], 1);
    let info = ws.request(json!({"type": "info", "id": 20}));
    assert_eq!(info["info"]["peerPubkey"], a.peer.as_str());
    assert_eq!(info["info"]["sidechannelEntry"], "0000intercom");
    assert_eq!(info["info"]["msbBootstrap"], a.ids.0.as_str());
    assert_eq!(info["info"]["subnetBootstrap"], a.ids.1.as_str());
    assert_eq!(info["info"]["subnetChannel"], "trac-peer-subnet");
    assert_eq!(info["info"]["peerDhtBootstrap"], Value::Null);

    // Every error string.
    for (request, expected) in [
        (json!({"type": "send", "message": "x"}), "Missing channel."),
        (json!({"type": "send", "channel": "  "}), "Missing channel."),
        (json!({"type": "join"}), "Missing channel."),
        (
            json!({"type": "leave", "channel": null}),
            "Missing channel.",
        ),
        (json!({"type": "open"}), "Missing channel."),
        (
            json!({"type": "join", "channel": "c", "invite": "not base64!"}),
            "Invalid invite (expected the base64 text of /sc_invite).",
        ),
        (
            json!({"type": "send", "channel": "c", "welcome": 42}),
            "Invalid welcome (expected the base64 text of /sc_welcome).",
        ),
        (
            json!({"type": "open", "channel": "c", "welcome": "b64:AAAA"}),
            "Invalid welcome (expected the base64 text of /sc_welcome).",
        ),
        (
            json!({"type": "join", "channel": "bad\u{1}name"}),
            "Join denied: invalid channel name: \"bad\\u{1}name\".",
        ),
        (
            json!({"type": "send", "channel": "bad\u{1}name", "message": 1}),
            "Send denied: invalid channel name: \"bad\\u{1}name\".",
        ),
        (
            json!({"type": "open", "channel": "bad\u{1}name"}),
            "Open request denied: invalid channel name: \"bad\\u{1}name\".",
        ),
        (
            json!({"type": "cli", "command": "/stats"}),
            "CLI over WS is disabled.",
        ),
        (json!({"type": "frobnicate"}), "Unknown type: frobnicate"),
        (json!({"type": 3}), "Unknown type: "),
    ] {
        let mut request = request;
        request["id"] = json!(99);
        let reply = ws.request(request.clone());
        assert_eq!(reply["type"], "error", "{request} → {reply}");
        let got = reply["error"].as_str().unwrap();
        if expected.ends_with("name: \"bad\\u{1}name\".") {
            // The exact rendering of the control character is the engine's; the prefix is ours.
            let prefix = expected.split(':').next().unwrap();
            assert!(got.starts_with(prefix), "{request} → {got}");
        } else {
            assert_eq!(got, expected, "{request}");
        }
    }
    // A valid welcome is accepted on `join` (here: made by this node's own terminal).
    a.node.send("/sc_join --channel lobby");
    a.node.expect_line("Joined sidechannel: lobby");
    a.node.send("/sc_welcome --channel lobby --text hi");
    let welcome = a.node.expect_line("welcome_b64:");
    let joined =
        ws.request(json!({"type": "join", "channel": "lobby", "welcome": welcome, "id": 21}));
    assert_eq!(joined["type"], "joined", "{joined}");
}

#[test]
fn authentication_limits_origin_and_frame_size() {
    let dir = tempdir();
    let a = start(
        dir.path(),
        &[
            "--sc-bridge-max-clients",
            "3",
            "--sc-bridge-max-frame-bytes",
            "4096",
            "--sc-bridge-allow-origin",
            "http://localhost:3000",
        ],
    );
    // A browser page of another origin cannot even connect; a listed one can.
    assert_eq!(
        refused(request_with_origin(&a.addr, "http://evil.example")),
        403
    );
    let (mut ok, _) = {
        let (socket, _) =
            tungstenite::connect(request_with_origin(&a.addr, "http://localhost:3000")).unwrap();
        let mut ws = Ws {
            socket,
            stash: VecDeque::new(),
        };
        ws.timeout(Some(WAIT));
        let hello = ws.next_of("hello");
        (ws, hello)
    };
    assert_eq!(
        ok.request(json!({"type": "auth", "token": TOKEN, "id": 1}))["type"],
        "auth_ok"
    );

    // A frame above the limit closes the connection.
    let mut big = Ws::authed(&a.addr);
    big.send(json!({"type": "send", "channel": "c", "message": "x".repeat(8000), "id": 2}));
    big.until_closed();

    // At most 3 clients: `ok` and two more; a fourth is refused with 503.
    let deadline = Instant::now() + WAIT;
    while ok.request(json!({"type": "stats", "id": 2}))["bridgeClients"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the closed client keeps its place"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_second, _) = Ws::connect(&a.addr);
    let (_third, _) = Ws::connect(&a.addr);
    assert_eq!(
        refused(format!("ws://{}/", a.addr).into_client_request().unwrap()),
        503
    );
    drop(_second);
    drop(_third);

    // Three wrong tokens close the connection.
    let (mut wrong, _) = Ws::connect(&a.addr);
    for id in 1..=3 {
        assert_eq!(
            wrong.error(json!({"type": "auth", "token": format!("guess-{id}"), "id": id})),
            "Unauthorized."
        );
    }
    let rest = wrong.until_closed();
    assert!(
        rest.iter()
            .any(|v| v["error"] == "Too many failed auth attempts."),
        "{rest:?}"
    );
    // The right token after the lock-out threshold: the address is refused (10 failures
    // within a minute), even with the right token.
    let mut failures = 3;
    while failures < 10 {
        let (mut ws, _) = Ws::connect(&a.addr);
        for _ in 0..3 {
            if failures == 10 {
                break;
            }
            failures += 1;
            ws.send(json!({"type": "auth", "token": "guess"}));
            let reply = ws.next_of("error");
            assert_eq!(reply["error"], "Unauthorized.");
        }
        ws.until_closed();
    }
    assert_eq!(
        refused(format!("ws://{}/", a.addr).into_client_request().unwrap()),
        429
    );
    // A client authenticated before the lock-out keeps working.
    assert_eq!(ok.request(json!({"type": "ping", "id": 3}))["type"], "pong");
}

#[test]
fn cli_mirroring_runs_terminal_commands_only_when_enabled() {
    let dir = tempdir();
    let a = start(dir.path(), &["--sc-bridge-cli", "1"]);
    let mut ws = Ws::authed(&a.addr);
    let stats = ws.request(json!({"type": "cli", "command": "/stats", "id": 1}));
    assert_eq!(stats["type"], "cli_result", "{stats}");
    assert_eq!(stats["command"], "/stats");
    assert_eq!(stats["ok"], true);
    assert_eq!(stats["error"], Value::Null);
    let lines: Vec<&str> = stats["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(lines.iter().any(|l| l.starts_with("MSB ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("Subnet ")), "{lines:?}");

    let help = ws.request(json!({"type": "cli", "command": "/help", "id": 2}));
    assert_eq!(help["ok"], true);
    assert!(help["output"].to_string().contains("/sc_join"), "{help}");

    // Sidechannel commands go through the same dispatcher.
    let joined =
        ws.request(json!({"type": "cli", "command": "/sc_join --channel viacli", "id": 3}));
    assert_eq!(joined["output"], json!(["Joined sidechannel: viacli"]));

    // Failures: a parse error with the usage line, and the commands kept off the bridge.
    let bad = ws.request(json!({"type": "cli", "command": "/transfer --to", "id": 4}));
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("/transfer"),
        "{bad}"
    );
    for command in ["/get_keys", "/exit"] {
        let refused = ws.request(json!({"type": "cli", "command": command, "id": 5}));
        assert_eq!(refused["ok"], false);
        assert_eq!(
            refused["error"],
            format!("{command} is not available over the bridge.")
        );
    }
    assert_eq!(
        ws.error(json!({"type": "cli", "command": "  ", "id": 6})),
        "Missing command."
    );
    // The node still runs (no /exit went through).
    assert_eq!(ws.request(json!({"type": "ping", "id": 7}))["type"], "pong");
}

/// Two nodes, each with a bridge client; B joins A's networks.
fn two_peers(dir_a: &Path, dir_b: &Path, extra: &[&str]) -> (BridgeNode, BridgeNode) {
    let a = start(dir_a, extra);
    let (msb, subnet, addr) = a.ids.clone();
    let mut args = joining(&msb, &subnet, &addr);
    args.extend_from_slice(extra);
    let b = start(dir_b, &args);
    (a, b)
}

/// Waits until the client's node reports `n` sidechannel neighbours.
fn await_neighbours(ws: &mut Ws, n: u64) {
    let deadline = Instant::now() + WAIT;
    let mut id = 1000;
    loop {
        id += 1;
        let stats = ws.request(json!({"type": "stats", "id": id}));
        if stats["connectionCount"].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "no {n} neighbours: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_bridges_exchange_messages_with_filters_subscriptions_and_events() {
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (a, b) = two_peers(dir_a.path(), dir_b.path(), &[]);
    let mut alice = Ws::authed(&a.addr);
    let mut bob = Ws::authed(&b.addr);
    await_neighbours(&mut alice, 1);
    await_neighbours(&mut bob, 1);

    // A message from A's bridge reaches B's bridge, signed by A.
    let sent = alice.request(json!({"type": "send", "channel": "0000intercom", "message": {"text": "hello bob"}, "id": 1}));
    assert_eq!(sent["recipients"], 1, "{sent}");
    let got = bob.next_of("sidechannel_message");
    assert_eq!(got["channel"], "0000intercom");
    assert_eq!(got["from"], a.peer.as_str());
    assert_eq!(got["origin"], a.peer.as_str());
    assert_eq!(got["id"], sent["messageId"]);
    assert_eq!(got["message"], json!({"text": "hello bob"}));
    assert_eq!(got["relayedBy"], Value::Null);
    assert_eq!(got["sig"].as_str().unwrap().len(), 128);
    assert_eq!(got["verified"], true);
    // No local echo.
    alice.request(json!({"type": "ping", "id": 2}));
    assert!(
        alice
            .stash
            .iter()
            .all(|v| v["type"] != "sidechannel_message"),
        "{:?}",
        alice.stash
    );

    // A filter: only matching messages pass; a barrier message proves the others were dropped.
    bob.request(json!({"type": "set_filter", "filter": "alpha+one|omega", "id": 3}));
    for (id, text) in [
        (4, "alpha two"),
        (5, "ALPHA and ONE"),
        (6, "nothing"),
        (7, "the omega"),
    ] {
        alice
            .request(json!({"type": "send", "channel": "0000intercom", "message": text, "id": id}));
    }
    assert_eq!(
        bob.next_of("sidechannel_message")["message"],
        "ALPHA and ONE"
    );
    assert_eq!(bob.next_of("sidechannel_message")["message"], "the omega");
    bob.request(json!({"type": "clear_filter", "id": 8}));

    // Subscriptions: A owns "news" (its terminal signs the welcome), B joins it by its bridge
    // with that welcome; B subscribed to "news" only misses entry-channel messages.
    let joined = alice.request(json!({"type": "join", "channel": "news", "id": 9}));
    assert_eq!(joined["type"], "joined");
    let mut a = a;
    a.node.send("/sc_welcome --channel news --text today");
    let welcome = a.node.expect_line("welcome_b64:");
    let joined =
        bob.request(json!({"type": "join", "channel": "news", "welcome": welcome, "id": 10}));
    assert_eq!(joined["type"], "joined", "{joined}");
    bob.request(json!({"type": "subscribe", "channel": "news", "id": 11}));
    // Wait until A knows B joined "news" (A's send then has a recipient).
    let deadline = Instant::now() + WAIT;
    let mut id = 100;
    loop {
        id += 1;
        alice.request(
            json!({"type": "send", "channel": "0000intercom", "message": "entry only", "id": id}),
        );
        id += 1;
        let sent = alice.request(
            json!({"type": "send", "channel": "news", "message": {"headline": id}, "id": id}),
        );
        if sent["recipients"] == 1 {
            let got = bob.next_of("sidechannel_message");
            assert_eq!(got["channel"], "news", "{got}");
            assert_eq!(got["message"], json!({"headline": id}));
            break;
        }
        assert!(Instant::now() < deadline, "B never subscribed to news");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        bob.stash.iter().all(|v| v["channel"] != "0000intercom"),
        "{:?}",
        bob.stash
    );
    bob.request(json!({"type": "unsubscribe", "channel": "news", "id": 300}));

    // Filter channels: covered below with a node configured so. Open requests reach the other
    // side as events.
    let opened = alice.request(json!({"type": "open", "channel": "room", "id": 301}));
    assert_eq!(opened["type"], "open_requested");
    let event = bob.next_where("open_request", |v| v["event"] == "open_request");
    assert_eq!(event["channel"], "room");
    assert_eq!(event["via"], "0000intercom");
    assert_eq!(event["from"], a.peer.as_str());
    assert_eq!(event["outcome"], "denied", "{event}");

    // A neighbour leaving is an event.
    drop(b);
    let event = alice.next_where("peer_disconnected", |v| v["event"] == "peer_disconnected");
    assert!(event["peer"].as_str().is_some(), "{event}");
}

#[test]
fn filter_channels_limit_where_filters_apply() {
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (a, b) = two_peers(
        dir_a.path(),
        dir_b.path(),
        &[
            "--sc-bridge-filter",
            "keep",
            "--sc-bridge-filter-channel",
            "filtered",
            "--sidechannel-welcome-required",
            "0",
        ],
    );
    let mut alice = Ws::authed(&a.addr);
    let (mut bob, hello) = Ws::connect(&b.addr);
    assert_eq!(hello["filter"], "keep");
    bob.request(json!({"type": "auth", "token": TOKEN, "id": 1}));
    await_neighbours(&mut alice, 1);
    for client in [&mut alice, &mut bob] {
        client.request(json!({"type": "join", "channel": "filtered", "id": 2}));
    }
    // Wait until A's sends on "filtered" reach B.
    let deadline = Instant::now() + WAIT;
    let mut id = 10;
    loop {
        id += 1;
        let sent = alice.request(
            json!({"type": "send", "channel": "filtered", "message": "drop me", "id": id}),
        );
        if sent["recipients"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "B never joined filtered");
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.request(json!({"type": "send", "channel": "filtered", "message": "keep me", "id": 200}));
    // The entry channel is not filtered.
    alice.request(
        json!({"type": "send", "channel": "0000intercom", "message": "anything", "id": 201}),
    );
    assert_eq!(bob.next_of("sidechannel_message")["message"], "keep me");
    assert_eq!(bob.next_of("sidechannel_message")["message"], "anything");
    assert!(bob.stash.iter().all(|v| v["message"] != "drop me"));
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_slow_client_loses_messages_instead_of_growing_memory() {
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (a, b) = two_peers(
        dir_a.path(),
        dir_b.path(),
        &[
            "--sidechannel-rate-bytes",
            "0",
            "--sc-bridge-client-queue-bytes",
            "262144",
        ],
    );
    let mut slow = Ws::authed(&a.addr);
    let mut fast = Ws::authed(&a.addr);
    let mut bob = Ws::authed(&b.addr);
    await_neighbours(&mut bob, 1);
    let before = rss_kib(a.node.child.id());

    // 3,000 messages of 20 KB (60 MB) from B while `slow` reads nothing; the fast client gets
    // each one.
    let text = "x".repeat(20_000);
    let total = 3_000;
    for id in 0..total {
        let sent = bob.request(json!({"type": "send", "channel": "0000intercom", "message": {"n": id, "pad": text}, "id": id}));
        assert_eq!(sent["type"], "sent", "{sent}");
        let got = fast.next_of("sidechannel_message");
        assert_eq!(got["message"]["n"], id);
    }
    let after = rss_kib(a.node.child.id());
    assert!(
        after < before + 40 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );

    // The slow client then reads: some messages, a report of the dropped ones, and it is
    // still served.
    let mut delivered = 0;
    let mut dropped = 0;
    slow.send(json!({"type": "ping", "id": 1}));
    loop {
        let value = slow.read().expect("the slow client is still connected");
        match value["type"].as_str().unwrap() {
            "sidechannel_message" => delivered += 1,
            "lagged" => dropped += value["dropped"].as_u64().unwrap(),
            "pong" => break,
            _ => {}
        }
    }
    assert!(dropped > 0, "nothing was dropped ({delivered} delivered)");
    assert!(delivered < total, "{delivered} delivered");
    drop(b);
}

#[test]
fn a_client_that_does_not_authenticate_is_closed() {
    let dir = tempdir();
    let a = start(dir.path(), &[]);
    let (mut ws, _) = Ws::connect(&a.addr);
    let started = Instant::now();
    let rest = ws.until_closed();
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        rest,
        vec![json!({"type": "error", "error": "Auth timeout."})]
    );
}

#[test]
fn an_invite_only_channel_between_two_bridges() {
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (mut a, b) = two_peers(
        dir_a.path(),
        dir_b.path(),
        &["--sidechannel-invite-channels", "vault"],
    );
    let mut alice = Ws::authed(&a.addr);
    let mut bob = Ws::authed(&b.addr);
    await_neighbours(&mut alice, 1);

    // A owns "vault": its terminal signs the welcome and B's invite.
    assert_eq!(
        alice.error(json!({"type": "join", "channel": "vault", "owner": "abc", "id": 1})),
        "Invalid owner (expected a 64-hex-digit key)."
    );
    let joined = alice.request(
        json!({"type": "join", "channel": "vault", "owner": a.peer.to_uppercase(), "id": 1}),
    );
    assert_eq!(joined["role"], "member", "{joined}");
    a.node
        .send("/sc_welcome --channel vault --text vault-rules");
    let welcome = a.node.expect_line("welcome_b64:");
    a.node
        .send(&format!("/sc_invite --channel vault --pubkey {}", b.peer));
    let invite = a.node.expect_line("invite_b64:");

    // Without the invite B can only relay; with it B is a member.
    let relay =
        bob.request(json!({"type": "join", "channel": "vault", "welcome": welcome, "id": 2}));
    assert_eq!(relay["role"], "relay", "{relay}");
    let member = bob.request(json!({"type": "join", "channel": "vault", "invite": format!("b64:{invite}"), "welcome": {"b64": welcome}, "id": 3}));
    assert_eq!(member["role"], "member", "{member}");

    // A's messages reach B's bridge decrypted, once B's key and subscription reached A.
    let deadline = Instant::now() + WAIT;
    let mut id = 10;
    let got = loop {
        id += 1;
        let sent = alice.request(
            json!({"type": "send", "channel": "vault", "message": {"secret": id}, "id": id}),
        );
        assert_eq!(sent["type"], "sent", "{sent}");
        if sent["recipients"] == 1 {
            let got = bob.next_where("a vault message", |v| {
                v["type"] == "sidechannel_message" && v["channel"] == "vault"
            });
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "B never became a vault recipient"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(got["message"], json!({"secret": id}));
    assert_eq!(got["from"], a.peer.as_str());
    // And B's reply reaches A.
    let sent =
        bob.request(json!({"type": "send", "channel": "vault", "message": "thanks", "id": 500}));
    assert_eq!(sent["type"], "sent", "{sent}");
    let got = alice.next_where("B's reply", |v| {
        v["type"] == "sidechannel_message" && v["channel"] == "vault"
    });
    assert_eq!(got["message"], "thanks");
    assert_eq!(got["from"], b.peer.as_str());
}
