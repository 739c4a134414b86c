//! The HTTP RPC of real `trac run --rpc` processes, with a real HTTP client: every route and
//! its error paths, CORS, body limits, rate limits, the OpenAPI document against the routes,
//! and the wallet flow (prepare, sign with a key outside the node, simulate, submit) with the
//! state visible through another peer's RPC.

use std::time::{Duration, Instant};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value as Json, json};

use crate::node_support::{NodeProc, PATIENCE, banner, joining};
use crate::support::tempdir;

/// A blocking client that returns every status as a response.
struct Rpc {
    base: String,
    agent: ureq::Agent,
}

impl Rpc {
    /// The RPC of a node whose banner printed `RPC: http://<addr> …`.
    fn of(node: &NodeProc) -> Rpc {
        let line = node
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("RPC: http://"))
            .expect("the node prints its RPC address");
        let addr = line.split(' ').next().expect("an address");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Rpc {
            base: format!("http://{addr}"),
            agent,
        }
    }

    fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, Json) {
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .expect("a readable body");
        let json = if text.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, json)
    }

    fn get(&self, path: &str) -> (u16, Json) {
        Self::read(
            self.agent
                .get(format!("{}{path}", self.base))
                .call()
                .expect("GET"),
        )
    }

    fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        Self::read(
            self.agent
                .post(format!("{}{path}", self.base))
                .send_json(body)
                .expect("POST"),
        )
    }

    fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Json) {
        Self::read(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(body)
                .expect("POST"),
        )
    }

    /// Polls `GET path` until `ok` holds for the JSON answer.
    fn await_get(&self, path: &str, ok: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, json) = self.get(path);
            if status == 200 && ok(&json) {
                return json;
            }
            assert!(Instant::now() < deadline, "{path} stayed {status} {json}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// An admin node with the RPC on a free port (transactions exposed) and a faucet.
fn admin_with_rpc(dir: &std::path::Path) -> (NodeProc, (String, String, String)) {
    let mut admin = NodeProc::start(
        dir,
        &[
            "--rpc",
            "--rpc-port",
            "0",
            "--api-tx-exposed",
            "--msb-faucet",
            "10",
            "--rpc-max-body-bytes",
            "4096",
        ],
    );
    let ids = banner(&mut admin);
    (admin, ids)
}

fn error_of(json: &Json) -> &str {
    json["error"].as_str().unwrap_or_default()
}

#[test]
fn every_route_answers_and_client_mistakes_are_4xx() {
    let dir = tempdir();
    let (admin, (msb, subnet, _)) = admin_with_rpc(dir.path());
    let rpc = Rpc::of(&admin);
    let me = admin.writer_key();

    assert_eq!(rpc.get("/v1/health"), (200, json!({ "ok": true })));
    let (status, json) = rpc.get("/v1/status");
    assert_eq!(status, 200);
    assert_eq!(json["peer"]["pubKeyHex"], me);
    assert_eq!(json["peer"]["subnetBootstrapHex"], subnet);
    assert_eq!(json["peer"]["subnetChannelUtf8"], "trac-peer-subnet");
    assert_eq!(json["peer"]["isWriter"], true);
    assert_eq!(json["msb"]["networkId"], msb);
    assert_eq!(json["msb"]["isValidator"], true);

    // State: the admin key; absent keys are null; the parameters are checked.
    let json = rpc.await_get("/v1/state?key=admin", |j| !j["value"].is_null());
    assert_eq!(
        json,
        json!({ "key": "admin", "confirmed": true, "value": me })
    );
    assert_eq!(
        rpc.get("/v1/state?key=nothing-here&confirmed=false").1["value"],
        Json::Null
    );
    let (status, json) = rpc.get("/v1/state");
    assert_eq!((status, error_of(&json)), (400, "Missing key."));
    let (status, json) = rpc.get("/v1/state?key=admin&confirmed=yes");
    assert_eq!(status, 400, "{json}");

    // The contract: schema, nonce, context, queries.
    let (status, json) = rpc.get("/v1/contract/schema");
    assert_eq!(status, 200);
    assert_eq!(json["contract"]["contractClass"], "intercom");
    let types = json["contract"]["txTypes"].as_array().expect("txTypes");
    assert!(types.contains(&json!("storeSomething")), "{json}");
    assert!(
        json["api"]["methods"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    );
    let (status, json) = rpc.get("/v1/contract/nonce");
    assert_eq!(status, 200);
    assert!(
        json["nonce"]
            .as_str()
            .is_some_and(|n| n.parse::<u64>().is_ok())
    );
    let (status, json) = rpc.get("/v1/contract/tx/context");
    assert_eq!(status, 200);
    assert_eq!(json["msb"]["bs"], subnet);
    assert_eq!(json["msb"]["mbs"], msb);
    assert_eq!(json["msb"]["iw"], me);
    let json = rpc.await_get("/v1/contract/query?name=readSnapshot", |_| true);
    assert!(
        json["result"].is_object() && json["fuel"].as_u64() > Some(0),
        "{json}"
    );
    let (status, json) = rpc.get("/v1/contract/query");
    assert_eq!((status, error_of(&json)), (400, "Missing name."));
    let (status, json) = rpc.get("/v1/contract/query?name=noSuchQuery");
    assert_eq!(status, 400, "{json}");
    let (status, json) = rpc.get("/v1/contract/query?name=readSnapshot&args=%7Bnot-json");
    assert_eq!(status, 400, "{json}");

    // MSB: fee, heights, balances and accounts (hex or trac1 addresses), txs.
    assert_eq!(
        rpc.get("/v1/fee"),
        (200, json!({ "fee": "30000000000000000" }))
    );
    assert_eq!(rpc.get("/v1/confirmed-length").0, 200);
    assert_eq!(rpc.get("/v1/unconfirmed-length").0, 200);
    let (status, json) = rpc.get(&format!("/v1/balance/{me}?confirmed=false"));
    assert_eq!(status, 200);
    assert_eq!(json["balance"], "1000000000000000000000");
    let address = json["address"].as_str().expect("address").to_string();
    assert!(address.starts_with("trac1"));
    let (status, json) = rpc.get(&format!("/v1/account/{address}?confirmed=false"));
    assert_eq!(status, 200);
    assert_eq!(json["writingKey"], me);
    assert_eq!(json["isValidator"], false);
    assert_eq!(rpc.get("/v1/balance/not-an-address").0, 400);
    assert_eq!(rpc.get(&format!("/v1/account/{me}?confirmed=maybe")).0, 400);
    let unknown = "ab".repeat(32);
    let (status, json) = rpc.get(&format!("/v1/tx/{unknown}"));
    assert_eq!(status, 404, "{json}");
    assert_eq!(rpc.get("/v1/tx/xyz").0, 400);
    assert_eq!(
        rpc.get(&format!("/v1/tx/details/{unknown}?confirmed=false"))
            .0,
        404
    );
    assert_eq!(
        rpc.get("/v1/tx-hashes/0/10"),
        (200, json!({ "hashes": [] }))
    );
    assert_eq!(rpc.get("/v1/tx-hashes/a/10").0, 400);
    assert_eq!(rpc.get("/v1/tx-hashes/-1/10").0, 400);
    assert_eq!(rpc.get("/v1/tx-hashes/10/5").0, 400);
    assert_eq!(rpc.get("/v1/tx-hashes/0/1001").0, 400);

    // Broadcast: every malformed payload is a 400.
    for (body, why) in [
        (json!({}), "Payload is missing."),
        (
            json!({ "payload": 5 }),
            "Payload must be a valid base64 string.",
        ),
        (
            json!({ "payload": "%%%" }),
            "Payload must be a valid base64 string.",
        ),
    ] {
        let (status, json) = rpc.post("/v1/broadcast-transaction", &body);
        assert_eq!((status, error_of(&json)), (400, why));
    }
    let junk = base64::engine::general_purpose::STANDARD.encode(b"not an op");
    let (status, json) = rpc.post("/v1/broadcast-transaction", &json!({ "payload": junk }));
    assert_eq!(status, 400, "{json}");
    assert!(
        error_of(&json).starts_with("Invalid payload structure"),
        "{json}"
    );

    // Routing, methods, bodies, CORS.
    assert_eq!(
        rpc.get("/v1/nothing"),
        (404, json!({ "error": "Not Found" }))
    );
    assert_eq!(rpc.get("/health").0, 404);
    let (status, json) = rpc.post("/v1/health", &json!({}));
    assert_eq!(status, 405, "{json}");
    let (status, json) = rpc.post_raw("/v1/contract/tx", Vec::new());
    assert_eq!((status, error_of(&json)), (400, "Missing JSON body."));
    let (status, json) = rpc.post_raw("/v1/contract/tx", b"{not json".to_vec());
    assert_eq!(status, 400);
    assert!(
        error_of(&json).starts_with("Invalid JSON payload"),
        "{json}"
    );
    let (status, json) = rpc.post_raw("/v1/contract/tx", vec![b' '; 5000]);
    assert_eq!(status, 413, "{json}");
    let (status, json) = rpc.post(
        "/v1/contract/tx",
        &json!({ "prepared_command": "storeSomething", "address": me, "sim": true }),
    );
    assert_eq!(status, 400, "{json}");
    let options = ureq::http::Request::builder()
        .method("OPTIONS")
        .uri(format!("{}/v1/contract/tx", rpc.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .body(())
        .expect("request");
    let response = rpc.agent.run(options).expect("OPTIONS");
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let response = rpc
        .agent
        .get(format!("{}/v1/health", rpc.base))
        .header("origin", "https://app.example")
        .call()
        .expect("GET");
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );

    // Rate limits: a burst of queries from one client is cut off with 429.
    let limited = (0..120)
        .map(|_| rpc.get("/v1/contract/query?name=readSnapshot").0)
        .filter(|s| *s == 429)
        .count();
    assert!(limited > 0, "no request was rate limited");
    admin.exit();
}

#[test]
fn the_openapi_document_validates_and_covers_every_route() {
    let dir = tempdir();
    let (admin, _) = admin_with_rpc(dir.path());
    let rpc = Rpc::of(&admin);
    let (status, json) = rpc.get("/v1/openapi.json");
    assert_eq!(status, 200);
    let document: openapiv3::OpenAPI =
        serde_json::from_value(json.clone()).expect("a valid OpenAPI 3.0 document");
    assert!(document.openapi.starts_with("3.0"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in &document.paths.paths {
        let openapiv3::ReferenceOr::Item(item) = item else {
            panic!("{path} is a reference");
        };
        for (method, operation) in item.iter() {
            assert!(operation.operation_id.is_some(), "{method} {path}");
            assert!(!operation.responses.responses.is_empty(), "{method} {path}");
            documented.push((method.to_string(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = [
        ("get", "/v1/health"),
        ("get", "/v1/status"),
        ("get", "/v1/state"),
        ("get", "/v1/contract/schema"),
        ("get", "/v1/contract/nonce"),
        ("get", "/v1/contract/tx/context"),
        ("post", "/v1/contract/tx/prepare"),
        ("post", "/v1/contract/tx"),
        ("get", "/v1/contract/query"),
        ("get", "/v1/balance/{address}"),
        ("get", "/v1/account/{address}"),
        ("get", "/v1/fee"),
        ("get", "/v1/confirmed-length"),
        ("get", "/v1/unconfirmed-length"),
        ("get", "/v1/tx/{hash}"),
        ("get", "/v1/tx/details/{hash}"),
        ("get", "/v1/tx-hashes/{start}/{end}"),
        ("post", "/v1/broadcast-transaction"),
        ("get", "/v1/openapi.json"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    served.sort();
    assert_eq!(documented, served);
    // Every documented route is routed: none answers with the router's own 404 or a 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{address}", &admin.writer_key())
            .replace("{hash}", &"00".repeat(32))
            .replace("{start}", "0")
            .replace("{end}", "1");
        let (status, json) = if method == "get" {
            rpc.get(&concrete)
        } else {
            rpc.post(&concrete, &json!({}))
        };
        assert!(
            !(status == 404 && error_of(&json) == "Not Found") && status != 405,
            "{method} {path}: {status} {json}"
        );
    }
    admin.exit();
}

#[test]
fn a_wallet_signs_a_transaction_that_every_peer_applies() {
    let (a, b) = (tempdir(), tempdir());
    let (mut admin, (msb, subnet, addr)) = admin_with_rpc(a.path());
    let mut flags = joining(&msb, &subnet, &addr);
    flags.extend(["--rpc", "--rpc-port", "0"]);
    let mut bob = NodeProc::start(b.path(), &flags);
    banner(&mut bob);
    let rpc = Rpc::of(&admin);
    let bob_rpc = Rpc::of(&bob);

    // A wallet: a key the nodes never see. The admin registers the subnet and funds it.
    let wallet = SigningKey::from_bytes(&[42; 32]);
    let wallet_key = hex::encode(wallet.verifying_key().as_bytes());
    admin.send("/deploy_subnet");
    admin.expect_line("MSB TX broadcasted:");
    admin.send(&format!("/transfer --to {wallet_key} --amount 1"));
    admin.expect_line("MSB TX broadcasted:");
    rpc.await_get(&format!("/v1/balance/{wallet_key}?confirmed=false"), |j| {
        j["balance"] != "0"
    });

    // 1. A nonce and the context; 2. the bytes to sign.
    let nonce = rpc.get("/v1/contract/nonce").1["nonce"].clone();
    let context = rpc.get("/v1/contract/tx/context").1;
    let command = json!({ "type": "storeSomething", "value": null });
    let (status, prepared) = rpc.post(
        "/v1/contract/tx/prepare",
        &json!({
            "prepared_command": command,
            "address": wallet_key,
            "nonce": nonce,
            "expires": context["expires"],
        }),
    );
    assert_eq!(status, 200, "{prepared}");
    let tx = prepared["tx"].as_str().expect("tx").to_string();
    assert_eq!(prepared["sign"], prepared["tx"]);
    let preimage = hex::decode(prepared["preimage"].as_str().expect("preimage")).expect("hex");
    assert_eq!(blake3::hash(&preimage).to_hex().to_string(), tx);
    assert_eq!(prepared["body"]["requester"], wallet_key);

    // 3. The wallet signs the 32 bytes; 4. a simulation; 5. the submission.
    let signature = hex::encode(wallet.sign(&hex::decode(&tx).expect("hex")).to_bytes());
    let signed = json!({
        "prepared_command": command,
        "address": wallet_key,
        "nonce": nonce,
        "expires": context["expires"],
        "tx": tx,
        "signature": signature,
    });
    let mut sim = signed.clone();
    sim["sim"] = json!(true);
    let (status, json) = rpc.post("/v1/contract/tx", &sim);
    assert_eq!(status, 200, "{json}");
    assert!(
        json["writes"].as_array().is_some_and(|w| !w.is_empty()),
        "{json}"
    );

    // Tampering is refused before anything is submitted.
    let mut bad = signed.clone();
    bad["signature"] = json!("00".repeat(64));
    let (status, json) = rpc.post("/v1/contract/tx", &bad);
    assert_eq!((status, error_of(&json)), (400, "Invalid signature."));
    let mut bad = signed.clone();
    bad["nonce"] = json!("1");
    let (status, json) = rpc.post("/v1/contract/tx", &bad);
    assert_eq!(status, 400, "{json}");
    assert!(error_of(&json).starts_with("Invalid TX"), "{json}");
    // Bob's node does not expose submissions.
    let (status, json) = bob_rpc.post("/v1/contract/tx", &signed);
    assert_eq!(status, 403, "{json}");

    let (status, json) = rpc.post("/v1/contract/tx", &signed);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["result"]["tx"], tx);

    // Applied everywhere: bob's RPC shows the contract's write and the wallet as sender,
    // and the settled MSB op.
    let state = bob_rpc.await_get("/v1/state?key=something", |j| !j["value"].is_null());
    assert_eq!(state["value"], "there is something");
    let record = bob_rpc.await_get("/v1/state?key=txi/0", |j| !j["value"].is_null());
    assert_eq!(record["value"]["ipk"], wallet_key, "{record}");
    let details = bob_rpc.await_get(&format!("/v1/tx/{tx}"), |_| true);
    assert_eq!(details["txDetails"]["kind"], "tx");
    assert_eq!(details["txDetails"]["requester"], wallet_key);
    let height = details["txDetails"]["confirmed_length"]
        .as_u64()
        .expect("height");
    let hashes = bob_rpc
        .get(&format!("/v1/tx-hashes/{height}/{}", height + 1))
        .1;
    assert!(
        hashes["hashes"]
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["hash"] == tx)),
        "{hashes}"
    );

    // A transfer broadcast by the wallet through bob's node (no validator there: it is
    // forwarded to the admin's).
    let body = trac_host::msb::UserBody {
        action: trac_host::msb::UserAction::Transfer {
            to: trac_host::crypto::PublicKey::from_hex(&admin.writer_key()).expect("key"),
            amount: 1_000,
        },
        requester: trac_host::crypto::PublicKey(wallet.verifying_key().to_bytes()),
        nonce: 7,
        expires: context["expires"].as_u64().expect("expires") + 50,
    };
    let network = trac_host::crypto::Hash32::from_hex(&msb).expect("msb id");
    let hash = body.tx_hash(&network);
    let partial = trac_host::msb::PartialOp {
        requester_sig: trac_host::crypto::Signature(wallet.sign(hash.as_bytes()).to_bytes()),
        body,
    };
    let payload =
        base64::engine::general_purpose::STANDARD.encode(trac_host::codec::encode(&partial));
    let (status, json) = bob_rpc.post("/v1/broadcast-transaction", &json!({ "payload": payload }));
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["result"]["tx"], hash.to_hex());
    bob_rpc.await_get(&format!("/v1/tx/{}", hash.to_hex()), |_| true);
    // The same op again is a duplicate: refused with its reason.
    let (status, json) = bob_rpc.post("/v1/broadcast-transaction", &json!({ "payload": payload }));
    assert_eq!(status, 400, "{json}");

    bob.exit();
    admin.exit();
}
