//! The bundled contract components (`contracts/artifacts`) end to end through the runtime:
//! Intercom (the reference app: the JavaScript Intercom's contract and protocol) and the name registry.
//! Every successful call's writes are applied to a real LMDB store and committed, so later calls
//! see them. Results and state values are MessagePack with field names; they are decoded and
//! compared exactly.

use std::cell::Cell;
use std::sync::{Arc, LazyLock};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};
use tempfile::TempDir;
use trac_host::codec::json::json_text_to_msgpack;
use trac_host::crypto::{Hash32, Keypair, PublicKey, hash};
use trac_host::runtime::{
    CallContext, CallFailure, CallOutcome, CallRequest, Contract, FeatureCall, FunctionKind,
    Invocation, Limits, MappedOp, MessageCall, OpKind, ReservedKeys, Runtime, RuntimeConfig,
    StateWrite, TxCall,
};
use trac_host::store::{Store, StoreOptions, StoreRead};

use crate::support::tempdir;

const INTERCOM: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contracts/artifacts/intercom.wasm"
));
const REGISTRY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contracts/artifacts/registry.wasm"
));
const PROBE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contracts/artifacts/probe.wasm"
));

/// MessagePack nil: "no arguments".
const NIL: &[u8] = &[0xc0];

/// Checkpoint time of the first call of an [`App`]; each further call is one second later.
const BASE_TIME: u64 = 1_700_000_000_000;

/// Small map, no fsync.
const FAST: StoreOptions = StoreOptions {
    map_size: 64 << 20,
    sync: false,
};

/// One runtime shared by the tests, so each component is compiled once per test binary (the
/// determinism test builds its own fresh runtimes).
static RUNTIME: LazyLock<Runtime> =
    LazyLock::new(|| Runtime::new(RuntimeConfig::default()).expect("runtime"));

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A loaded contract on a fresh store; every successful call's writes are committed.
struct App<'r> {
    runtime: &'r Runtime,
    contract: Arc<Contract>,
    store: Store,
    _dir: TempDir,
    /// Log position of the next call.
    next: Cell<u64>,
}

impl<'r> App<'r> {
    fn new(runtime: &'r Runtime, component: &[u8]) -> Self {
        let contract = runtime
            .load(component, &Limits::default())
            .expect("the bundled component loads");
        let dir = tempdir();
        let store = Store::open(dir.path(), FAST).expect("open store");
        App {
            runtime,
            contract,
            store,
            _dir: dir,
            next: Cell::new(0),
        }
    }

    fn intercom() -> App<'static> {
        App::new(&RUNTIME, INTERCOM)
    }

    fn registry() -> App<'static> {
        App::new(&RUNTIME, REGISTRY)
    }

    fn probe() -> App<'static> {
        App::new(&RUNTIME, PROBE)
    }

    /// The context of the next call: its own position, hash and checkpoint time.
    fn context(&self, op_kind: OpKind, sender: PublicKey) -> CallContext {
        let n = self.next.get();
        self.next.set(n + 1);
        CallContext {
            op_kind,
            tx_hash: hash(&n.to_be_bytes()),
            sender,
            validator: Some(PublicKey([0x33; 32])),
            log_position: n,
            checkpoint_time: BASE_TIME + 1_000 * n,
        }
    }

    /// Executes `invocation`, then commits its writes if it succeeded.
    fn execute_with(
        &self,
        context: CallContext,
        reserved: ReservedKeys,
        invocation: &Invocation,
    ) -> CallOutcome<Vec<u8>> {
        let outcome = {
            let view = self.store.read().unwrap();
            let request = CallRequest {
                view: &view,
                context,
                reserved: Arc::new(reserved),
            };
            self.runtime
                .execute(&self.contract, &request, invocation)
                .expect("no node fault")
        };
        if outcome.result.is_ok() {
            self.apply(&outcome.writes);
        } else {
            assert!(outcome.writes.is_empty(), "a failed call writes nothing");
            assert!(outcome.events.is_empty(), "a failed call emits nothing");
        }
        outcome
    }

    fn execute(&self, context: CallContext, invocation: &Invocation) -> CallOutcome<Vec<u8>> {
        self.execute_with(context, ReservedKeys::none(), invocation)
    }

    /// A transaction by `sender`.
    fn tx(&self, sender: PublicKey, function: &str, args: &[u8]) -> CallOutcome<Vec<u8>> {
        let context = self.context(OpKind::Tx, sender);
        self.execute(context, &tx(function, args))
    }

    /// A timer (or other) feature entry.
    fn feature(&self, feature: &str, key: &str, value: &[u8]) -> CallOutcome<Vec<u8>> {
        let context = self.context(OpKind::Feature, admin());
        self.execute(
            context,
            &Invocation::Feature(FeatureCall {
                feature: feature.into(),
                key: key.into(),
                value: value.to_vec(),
            }),
        )
    }

    /// A chat message by `author`.
    fn message(&self, author: PublicKey, text: &str, number: u64) -> CallOutcome<Vec<u8>> {
        let context = self.context(OpKind::Message, author);
        self.execute(
            context,
            &Invocation::Message(MessageCall {
                text: text.into(),
                author: author.0.to_vec(),
                number,
            }),
        )
    }

    fn query(&self, function: &str, args: &[u8]) -> CallOutcome<Vec<u8>> {
        let view = self.store.read().unwrap();
        let outcome = self
            .runtime
            .query(&self.contract, &view, function, args)
            .expect("no node fault");
        assert!(outcome.writes.is_empty(), "a query writes nothing");
        assert!(outcome.events.is_empty(), "a query emits nothing");
        outcome
    }

    fn run_command(&self, name: &str, args: &[&str]) -> Result<String, CallFailure> {
        let view = self.store.read().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let outcome = self
            .runtime
            .run_command(&self.contract, &view, name, &args)
            .expect("no node fault");
        assert!(outcome.writes.is_empty());
        outcome.result
    }

    fn map_command(&self, command: &str) -> Result<Option<MappedOp>, CallFailure> {
        self.runtime
            .map_command(&self.contract, command)
            .expect("no node fault")
            .result
    }

    fn apply(&self, writes: &[StateWrite]) {
        let mut batch = self.store.write().unwrap();
        for w in writes {
            match &w.value {
                Some(v) => batch.state_put(&w.key, v).unwrap(),
                None => batch.state_delete(&w.key).unwrap(),
            };
        }
        batch.commit().unwrap();
    }

    /// Puts records directly (what the system, not the contract, keeps in the state).
    fn seed(&self, records: &[(&str, &[u8])]) {
        let writes: Vec<StateWrite> = records
            .iter()
            .map(|(k, v)| StateWrite {
                key: k.as_bytes().to_vec(),
                value: Some(v.to_vec()),
            })
            .collect();
        self.apply(&writes);
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store
            .read()
            .unwrap()
            .state_get(key.as_bytes())
            .unwrap()
    }

    fn root(&self) -> Hash32 {
        self.store.state_root().unwrap()
    }
}

fn tx(function: &str, args: &[u8]) -> Invocation {
    Invocation::Tx(TxCall {
        function: function.into(),
        args: args.to_vec(),
    })
}

fn key(seed: u8) -> PublicKey {
    Keypair::from_seed(&[seed; 32]).public()
}

fn alice() -> PublicKey {
    key(1)
}

fn bob() -> PublicKey {
    key(2)
}

fn admin() -> PublicKey {
    key(9)
}

/// MessagePack of `value` with field names (how the SDK encodes).
fn mp<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

/// MessagePack arguments from JSON text.
fn args(json_text: &str) -> Vec<u8> {
    json_text_to_msgpack(json_text).unwrap()
}

/// Decodes exactly one MessagePack value (no trailing bytes).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
    let mut rest = bytes;
    let value = T::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))
        .unwrap_or_else(|e| panic!("{bytes:02x?} does not decode: {e}"));
    assert!(
        rest.is_empty(),
        "trailing bytes after the value: {rest:02x?}"
    );
    value
}

/// A MessagePack result as JSON.
fn json_of(bytes: &[u8]) -> Json {
    decode(bytes)
}

/// The successful result of a call, as JSON.
#[track_caller]
fn ok_json(outcome: &CallOutcome<Vec<u8>>) -> Json {
    match &outcome.result {
        Ok(bytes) => json_of(bytes),
        Err(e) => panic!("expected success, got {e:?} (debug: {:?})", outcome.debug),
    }
}

/// The failure of a call, which must be `InvalidArgs`; returns its message.
#[track_caller]
fn invalid_args(outcome: &CallOutcome<Vec<u8>>) -> String {
    match &outcome.result {
        Err(CallFailure::InvalidArgs(m)) => m.clone(),
        other => panic!("expected InvalidArgs, got {other:?}"),
    }
}

/// The failure of a call, which must be `Contract`; returns its message.
#[track_caller]
fn contract_error<T: std::fmt::Debug>(result: &Result<T, CallFailure>) -> String {
    match result {
        Err(CallFailure::Contract(m)) => m.clone(),
        other => panic!("expected a contract error, got {other:?}"),
    }
}

/// The failure of a call, which must be `UnknownFunction`; returns its message.
#[track_caller]
fn unknown_function(outcome: &CallOutcome<Vec<u8>>) -> String {
    match &outcome.result {
        Err(CallFailure::UnknownFunction(m)) => m.clone(),
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
}

fn put(key: &str, value: &[u8]) -> StateWrite {
    StateWrite {
        key: key.as_bytes().to_vec(),
        value: Some(value.to_vec()),
    }
}

fn debug_has(outcome: &CallOutcome<Vec<u8>>, needle: &str) -> bool {
    outcome.debug.iter().any(|line| line.contains(needle))
}

// ---------------------------------------------------------------------------------------------
// Intercom: describe and commands
// ---------------------------------------------------------------------------------------------

fn kind_name(kind: FunctionKind) -> &'static str {
    match kind {
        FunctionKind::Tx => "tx",
        FunctionKind::Query => "query",
        FunctionKind::Both => "both",
    }
}

/// A `{type: string, minLength, maxLength}` property of a schema.
#[track_caller]
fn assert_string_property(schema: &Json, name: &str, min: u64, max: u64) {
    let property = &schema["properties"][name];
    assert_eq!(property["type"], "string", "{name}: {schema}");
    assert_eq!(property["minLength"], min, "{name}: {schema}");
    assert_eq!(property["maxLength"], max, "{name}: {schema}");
}

/// An object schema with exactly the string properties `fields`, all required, no others.
#[track_caller]
fn assert_strict_object(schema: &Json, fields: &[&str]) {
    assert_eq!(schema["type"], "object", "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    let mut properties: Vec<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    properties.sort_unstable();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    required.sort_unstable();
    let mut expected = fields.to_vec();
    expected.sort_unstable();
    assert_eq!(properties, expected, "{schema}");
    assert_eq!(required, expected, "{schema}");
}

#[test]
fn intercom_describe_and_commands() {
    let app = App::intercom();
    let outcome = RUNTIME.describe(&app.contract).unwrap();
    let info = outcome.result.expect("describe succeeds");
    assert!(outcome.writes.is_empty() && outcome.events.is_empty());
    assert!(outcome.fuel_used > 0);
    assert_eq!(info.name, "intercom");
    assert_eq!(info.version, "0.1.0");

    let functions: Vec<(&str, &str)> = info
        .functions
        .iter()
        .map(|f| (f.name.as_str(), kind_name(f.kind)))
        .collect();
    assert_eq!(
        functions,
        [
            ("storeSomething", "tx"),
            ("submitSomething", "tx"),
            ("readSnapshot", "both"),
            ("readChatLast", "both"),
            ("readTimer", "both"),
            ("readKey", "both"),
            ("getSampleData", "query"),
        ]
    );
    for f in &info.functions {
        assert!(!f.description.is_empty(), "{} has a description", f.name);
        let schema: Json = serde_json::from_str(&f.args_schema)
            .unwrap_or_else(|e| panic!("{}: schema is not JSON: {e}", f.name));
        assert!(schema.is_object(), "{}: {schema}", f.name);
        match f.name.as_str() {
            "submitSomething" => {
                assert_strict_object(&schema, &["op", "some_key"]);
                assert_string_property(&schema, "op", 1, 128);
                assert_string_property(&schema, "some_key", 1, 128);
            }
            "readKey" => {
                assert_strict_object(&schema, &["op", "key"]);
                assert_string_property(&schema, "op", 1, 128);
                assert_string_property(&schema, "key", 1, 256);
            }
            // No arguments: the schema admits only null.
            _ => assert_eq!(schema["type"], "null", "{}: {schema}", f.name),
        }
    }

    assert_eq!(info.features.len(), 1);
    assert_eq!(info.features[0].name, "timer");
    assert!(info.features[0].description.contains("currentTime"));

    let commands = RUNTIME.commands(&app.contract).unwrap().result.unwrap();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].name, "/print");
    assert_eq!(commands[0].usage, "/print --text <t>");
    assert!(!commands[0].help.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Intercom: transactions
// ---------------------------------------------------------------------------------------------

#[test]
fn store_something_writes_once() {
    let app = App::intercom();
    let empty_root = app.root();

    let first = app.tx(alice(), "storeSomething", NIL);
    assert_eq!(first.result, Ok(NIL.to_vec()), "nothing was there");
    assert_eq!(first.writes, [put("something", &mp("there is something"))]);
    assert!(first.events.is_empty());
    assert!(debug_has(&first, "is there already something? None"));
    assert_eq!(app.get("something"), Some(mp("there is something")));
    let root = app.root();
    assert_ne!(root, empty_root);

    // Empty argument bytes mean "no arguments" too.
    let second = app.tx(bob(), "storeSomething", &[]);
    assert_eq!(second.result, Ok(mp("there is something")));
    assert!(second.writes.is_empty(), "already set: nothing written");
    assert!(debug_has(&second, "is there already something?"));
    assert!(debug_has(&second, "there is something"));
    assert_eq!(app.root(), root);

    // Arguments where none are expected are refused.
    let refused = app.tx(alice(), "storeSomething", &args(r#"{"x":1}"#));
    assert!(invalid_args(&refused).contains("storeSomething"));
}

#[test]
fn submit_something_records_the_sender() {
    let app = App::intercom();
    let sender = Keypair::from_seed(&[0x5a; 32]).public();
    let context = app.context(OpKind::Tx, sender);
    let time = context.checkpoint_time;
    let outcome = app.execute(
        context,
        &tx(
            "submitSomething",
            &args(r#"{"op":"do_something","some_key":"hello"}"#),
        ),
    );
    let expected = json!({
        "op": "do_something",
        "some_key": "hello",
        "timestamp": time,
        "submitted_by": sender.address(),
    });
    assert_eq!(ok_json(&outcome), expected);
    assert!(sender.address().starts_with("trac1"));
    let record_key = format!("submitted_by/{}", sender.to_hex());
    assert_eq!(outcome.writes, [put(&record_key, &mp("hello"))]);
    assert_eq!(app.get(&record_key), Some(mp("hello")));
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(outcome.events[0].topic, "submitted");
    assert_eq!(json_of(&outcome.events[0].data), expected);
    assert!(debug_has(
        &outcome,
        &format!("submitted by {}", sender.address())
    ));

    // A second submission by the same sender overwrites; another sender gets its own key.
    let again = app.tx(
        sender,
        "submitSomething",
        &args(r#"{"op":"do_something","some_key":"again"}"#),
    );
    assert_eq!(again.writes, [put(&record_key, &mp("again"))]);
    let other = app.tx(
        bob(),
        "submitSomething",
        &args(r#"{"op":"do_something","some_key":"bob's"}"#),
    );
    assert_eq!(ok_json(&other)["submitted_by"], bob().address());
    assert_eq!(
        app.get(&format!("submitted_by/{}", bob().to_hex())),
        Some(mp("bob's"))
    );
    assert_eq!(app.get(&record_key), Some(mp("again")));

    // Lengths are counted in characters: 128 two-byte characters are accepted.
    let wide = "é".repeat(128);
    let accepted = app.tx(
        sender,
        "submitSomething",
        &mp(&json!({"op": "do_something", "some_key": wide})),
    );
    assert_eq!(ok_json(&accepted)["some_key"], wide.as_str());
}

#[test]
fn submit_something_refuses_invalid_args() {
    let app = App::intercom();
    let root = app.root();
    let long = "k".repeat(129);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty some_key",
            args(r#"{"op":"do_something","some_key":""}"#),
            "some_key must be 1 to 128 characters long, got 0",
        ),
        (
            "some_key of 129 characters",
            mp(&json!({"op": "do_something", "some_key": long})),
            "some_key must be 1 to 128 characters long, got 129",
        ),
        (
            "empty op",
            args(r#"{"op":"","some_key":"x"}"#),
            "op must be 1 to 128 characters long, got 0",
        ),
        (
            "an extra field",
            args(r#"{"op":"do_something","some_key":"x","extra":1}"#),
            "unknown field `extra`",
        ),
        (
            "a missing field",
            args(r#"{"op":"do_something"}"#),
            "missing field `some_key`",
        ),
        (
            "a number for some_key",
            args(r#"{"op":"do_something","some_key":5}"#),
            "invalid type",
        ),
        ("a string", mp("do_something"), "invalid type"),
        ("nil", NIL.to_vec(), "invalid type"),
        ("no bytes", Vec::new(), "invalid type"),
        ("not MessagePack", vec![0xc1], ""),
    ];
    for (what, bytes, expected) in cases {
        let outcome = app.tx(alice(), "submitSomething", &bytes);
        let message = invalid_args(&outcome);
        assert!(
            message.starts_with("submitSomething: ") && message.contains(expected),
            "{what}: {message}"
        );
        assert!(outcome.writes.is_empty(), "{what}");
        assert!(outcome.events.is_empty(), "{what}");
    }
    assert_eq!(app.root(), root, "nothing was written");
}

/// The published schemas say an argument is an *object* with exactly the named string
/// properties (the reference validates the same), and an argument is one MessagePack value.
/// serde alone would also fill a struct from an array of its fields or from integer keys, and
/// ignore bytes after the first value; the SDK refuses all of these.
#[test]
fn argument_decoding_is_as_strict_as_the_schema() {
    let app = App::intercom();
    let registry = App::registry();
    let valid = args(r#"{"op":"do_something","some_key":"hi"}"#);
    let mut index_keyed = vec![0x82, 0x00];
    index_keyed.extend(mp("do_something"));
    index_keyed.push(0x01);
    index_keyed.extend(mp("hi"));
    let cases: Vec<(&str, &App<'_>, Invocation)> = vec![
        (
            "an array for submitSomething's object",
            &app,
            tx("submitSomething", &mp(&("do_something", "hi"))),
        ),
        (
            "a map keyed by field index",
            &app,
            tx("submitSomething", &index_keyed),
        ),
        (
            "a second value after the arguments",
            &app,
            tx("submitSomething", &[valid, NIL.to_vec()].concat()),
        ),
        (
            "a second value after a feature value",
            &app,
            Invocation::Feature(FeatureCall {
                feature: "timer".into(),
                key: "currentTime".into(),
                value: [mp(&5u64), mp(&6u64)].concat(),
            }),
        ),
        (
            "an array for claim's object",
            &registry,
            tx("claim", &mp(&("arr", "t"))),
        ),
    ];
    for (what, app, invocation) in cases {
        let root = app.root();
        let kind = match invocation {
            Invocation::Feature(_) => OpKind::Feature,
            _ => OpKind::Tx,
        };
        let outcome = app.execute(app.context(kind, alice()), &invocation);
        assert!(
            matches!(outcome.result, Err(CallFailure::InvalidArgs(_))),
            "{what}: {:?}",
            outcome.result
        );
        assert_eq!(app.root(), root, "{what}: nothing written");
    }
}

// ---------------------------------------------------------------------------------------------
// Intercom: reads
// ---------------------------------------------------------------------------------------------

/// What `readSnapshot` returns, exactly these fields.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    something: Option<String>,
    #[serde(rename = "currentTime")]
    current_time: Option<u64>,
    msgl: u64,
    msg0: Option<Json>,
    msg1: Option<serde_bytes::ByteBuf>,
}

#[test]
fn reads_as_queries_and_as_transactions_agree() {
    let app = App::intercom();

    // Empty state.
    let snapshot: Snapshot = decode(app.query("readSnapshot", NIL).result.as_ref().unwrap());
    assert_eq!(
        snapshot,
        Snapshot {
            something: None,
            current_time: None,
            msgl: 0,
            msg0: None,
            msg1: None,
        }
    );
    assert_eq!(app.query("readTimer", NIL).result, Ok(NIL.to_vec()));
    assert_eq!(app.query("readChatLast", NIL).result, Ok(NIL.to_vec()));
    let missing = app.query(
        "readKey",
        &args(r#"{"op":"read_key","key":"nothing/here"}"#),
    );
    assert_eq!(missing.result, Ok(NIL.to_vec()));
    assert!(debug_has(&missing, "readKey nothing/here: null"));

    // Fill it: something, the timer, a chat message, a submission, and the chat log the system
    // keeps (a MessagePack message and a raw, non-MessagePack one).
    assert!(app.tx(alice(), "storeSomething", NIL).result.is_ok());
    assert!(
        app.feature("timer", "currentTime", &mp(&1_234u64))
            .result
            .is_ok()
    );
    assert!(app.message(bob(), "hi all", 0).result.is_ok());
    let submitted = app.tx(
        alice(),
        "submitSomething",
        &args(r#"{"op":"do_something","some_key":"v"}"#),
    );
    assert!(submitted.result.is_ok());
    app.seed(&[
        ("msgl", &mp(&2u64)),
        ("msg/0", &mp(&json!({"msg": "first", "n": 0}))),
        ("msg/1", b"\xc1raw"),
    ]);

    let snapshot: Snapshot = decode(app.query("readSnapshot", NIL).result.as_ref().unwrap());
    assert_eq!(
        snapshot,
        Snapshot {
            something: Some("there is something".into()),
            current_time: Some(1_234),
            msgl: 2,
            msg0: Some(json!({"msg": "first", "n": 0})),
            msg1: Some(serde_bytes::ByteBuf::from(b"\xc1raw".to_vec())),
        }
    );
    let chat_last = json!({"msg": "hi all", "address": bob().address(), "at": 1_234});
    let submitted_key = format!("submitted_by/{}", alice().to_hex());
    let read_key = |key: &str| mp(&json!({"op": "read_key", "key": key}));
    let reads: Vec<(&str, Vec<u8>, Json)> = vec![
        ("readTimer", NIL.to_vec(), json!(1_234)),
        ("readChatLast", NIL.to_vec(), chat_last.clone()),
        ("readKey", read_key(&submitted_key), json!("v")),
        ("readKey", read_key("chat_last"), chat_last),
        (
            "readKey",
            read_key("something"),
            json!("there is something"),
        ),
        ("readKey", read_key("missing"), Json::Null),
    ];
    let root = app.root();
    for (function, arguments, expected) in reads {
        let query = app.query(function, &arguments);
        assert_eq!(ok_json(&query), expected, "{function} as a query");
        let as_tx = app.tx(alice(), function, &arguments);
        assert_eq!(as_tx.result, query.result, "{function}: tx and query agree");
        assert!(as_tx.writes.is_empty() && as_tx.events.is_empty());
        assert_eq!(as_tx.debug, query.debug, "{function}: the same log lines");
    }
    let snapshot_tx = app.tx(bob(), "readSnapshot", NIL);
    assert_eq!(snapshot_tx.result, app.query("readSnapshot", NIL).result);
    assert!(debug_has(&snapshot_tx, "snapshot"));
    assert_eq!(app.root(), root, "reads write nothing");

    // A raw (non-MessagePack) value reads back as binary.
    let raw = app.query("readKey", &read_key("msg/1"));
    let bytes: serde_bytes::ByteBuf = decode(raw.result.as_ref().unwrap());
    assert_eq!(bytes.as_slice(), b"\xc1raw");

    // readKey validates its arguments like submitSomething.
    let long = "k".repeat(257);
    for bad in [
        args(r#"{"op":"read_key"}"#),
        args(r#"{"op":"read_key","key":""}"#),
        mp(&json!({"op": "read_key", "key": long})),
        args(r#"{"op":"read_key","key":"k","x":1}"#),
    ] {
        let message = invalid_args(&app.query("readKey", &bad));
        assert!(message.starts_with("readKey: "), "{message}");
    }
}

#[test]
fn query_only_and_unknown_functions() {
    let app = App::intercom();
    assert_eq!(
        app.query("getSampleData", NIL).result,
        Ok(mp("Some sample data"))
    );

    // A transaction is not a query.
    let message = unknown_function(&app.query("storeSomething", NIL));
    assert_eq!(message, "storeSomething is a transaction, not a query");
    let message = unknown_function(&app.query(
        "submitSomething",
        &args(r#"{"op":"do_something","some_key":"x"}"#),
    ));
    assert_eq!(message, "submitSomething is a transaction, not a query");
    assert_eq!(app.get("something"), None);

    // Unknown names, as queries and as transactions (names are case-sensitive).
    for name in ["nope", "storesomething", "", "feature_entry"] {
        assert_eq!(unknown_function(&app.query(name, NIL)), name);
        assert_eq!(unknown_function(&app.tx(alice(), name, NIL)), name);
    }
}

// ---------------------------------------------------------------------------------------------
// Intercom: timer feature and chat messages
// ---------------------------------------------------------------------------------------------

#[test]
fn timer_feature_sets_current_time() {
    let app = App::intercom();
    let first = app.feature("timer", "currentTime", &mp(&1_000u64));
    assert_eq!(first.result, Ok(Vec::new()));
    assert_eq!(first.writes, [put("currentTime", &mp(&1_000u64))]);
    assert!(debug_has(&first, "timer started at 1000"));
    assert_eq!(app.get("currentTime"), Some(mp(&1_000u64)));

    let second = app.feature("timer", "currentTime", &mp(&u64::MAX));
    assert!(second.result.is_ok());
    assert_eq!(second.writes, [put("currentTime", &mp(&u64::MAX))]);
    assert!(!debug_has(&second, "timer started"), "only the first time");
    assert_eq!(
        app.query("readTimer", NIL).result,
        Ok(mp(&u64::MAX)),
        "readTimer sees it"
    );

    let root = app.root();
    let wrong_key = app.feature("timer", "otherKey", &mp(&5u64));
    let message = invalid_args(&wrong_key);
    assert!(message.contains("unknown key \"otherKey\""), "{message}");
    for value in [
        mp("1000"),
        mp(&-1i64),
        mp(&1.5f64),
        NIL.to_vec(),
        Vec::new(),
    ] {
        let outcome = app.feature("timer", "currentTime", &value);
        let message = invalid_args(&outcome);
        assert!(
            message.starts_with("feature timer, key currentTime: "),
            "{value:02x?}: {message}"
        );
    }
    let unknown = app.feature("clock", "currentTime", &mp(&5u64));
    assert_eq!(unknown_function(&unknown), "feature clock");
    assert_eq!(app.root(), root, "refused entries write nothing");
}

#[test]
fn chat_messages_keep_chat_last() {
    let app = App::intercom();
    let author = alice();

    let first = app.message(author, "hello there", 0);
    assert_eq!(first.result, Ok(Vec::new()));
    assert!(debug_has(&first, "message triggered contract"));
    assert_eq!(first.writes.len(), 1);
    assert_eq!(first.writes[0].key, b"chat_last");
    let expected = json!({"msg": "hello there", "address": author.address(), "at": null});
    assert_eq!(json_of(app.get("chat_last").as_deref().unwrap()), expected);

    // Once the timer runs, messages carry its time.
    assert!(
        app.feature("timer", "currentTime", &mp(&77u64))
            .result
            .is_ok()
    );
    let second = app.message(bob(), "second", 1);
    assert!(second.result.is_ok());
    let expected = json!({"msg": "second", "address": bob().address(), "at": 77});
    assert_eq!(json_of(app.get("chat_last").as_deref().unwrap()), expected);
    assert_eq!(ok_json(&app.query("readChatLast", NIL)), expected);

    // An empty text is accepted but changes nothing.
    let root = app.root();
    let empty = app.message(author, "", 2);
    assert_eq!(empty.result, Ok(Vec::new()));
    assert!(empty.writes.is_empty());
    assert!(debug_has(&empty, "message triggered contract"));
    assert_eq!(app.root(), root);
}

// ---------------------------------------------------------------------------------------------
// Intercom: command mapping and terminal commands
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_unmapped(app: &App<'_>, command: &str) {
    let result = app.map_command(command);
    assert!(matches!(result, Ok(None)), "{command:?}: {result:?}");
}

#[track_caller]
fn mapped(app: &App<'_>, command: &str) -> (String, Vec<u8>) {
    match app.map_command(command) {
        Ok(Some(op)) => (op.function, op.args),
        other => panic!("{command:?} maps to a call, got {other:?}"),
    }
}

#[test]
fn intercom_map_command() {
    let app = App::intercom();
    for (command, function) in [
        ("something", "storeSomething"),
        ("read_snapshot", "readSnapshot"),
        ("read_chat_last", "readChatLast"),
        ("read_timer", "readTimer"),
        ("  read_timer\n", "readTimer"),
        (r#"{"op":"read_chat_last"}"#, "readChatLast"),
        (r#"{"op":"read_timer","extra":1}"#, "readTimer"),
    ] {
        assert_eq!(
            mapped(&app, command),
            (function.to_string(), NIL.to_vec()),
            "{command:?}"
        );
    }

    let (function, arguments) = mapped(&app, r#"{"op":"do_something","some_key":"x"}"#);
    assert_eq!(function, "submitSomething");
    assert_eq!(
        json_of(&arguments),
        json!({"op": "do_something", "some_key": "x"})
    );
    let (function, arguments) = mapped(&app, r#" {"op":"read_key","key":"k"}"#);
    assert_eq!(function, "readKey");
    assert_eq!(json_of(&arguments), json!({"op": "read_key", "key": "k"}));

    for unknown in [
        "",
        "Something",
        "something else",
        "/print --text hi",
        r#"{"op":"nope"}"#,
        r#"{"op":"read_snapshot"}"#,
        r#"{"no_op":1}"#,
        "{}",
        "[1,2]",
    ] {
        assert_unmapped(&app, unknown);
    }
    for malformed in ["{not json", r#"{"op":"do_something""#, "{} trailing"] {
        let message = contract_error(&app.map_command(malformed));
        assert!(message.contains("invalid JSON"), "{malformed:?}: {message}");
    }

    // A mapped operation runs with its arguments.
    let (function, arguments) = mapped(&app, r#"{"op":"do_something","some_key":"mapped"}"#);
    let outcome = app.tx(alice(), &function, &arguments);
    assert_eq!(ok_json(&outcome)["some_key"], "mapped");
    assert_eq!(
        app.get(&format!("submitted_by/{}", alice().to_hex())),
        Some(mp("mapped"))
    );
    let (function, arguments) = mapped(&app, "something");
    assert!(app.tx(alice(), &function, &arguments).result.is_ok());
    assert_eq!(app.get("something"), Some(mp("there is something")));
    let (function, arguments) = mapped(&app, r#"{"op":"read_key","key":"something"}"#);
    assert_eq!(
        app.query(&function, &arguments).result,
        Ok(mp("there is something"))
    );
    let (function, arguments) = mapped(&app, "read_snapshot");
    let snapshot: Snapshot = decode(app.query(&function, &arguments).result.as_ref().unwrap());
    assert_eq!(snapshot.something.as_deref(), Some("there is something"));

    // A mapped JSON command with fields the function does not take is refused when it runs.
    let (function, arguments) = mapped(&app, r#"{"op":"do_something","some_key":"x","y":2}"#);
    assert!(invalid_args(&app.tx(alice(), &function, &arguments)).contains("unknown field `y`"));
}

#[test]
fn intercom_print_command() {
    let app = App::intercom();
    assert_eq!(
        app.run_command("/print", &["--text", "hi"]),
        Ok("hi".into())
    );
    assert_eq!(
        app.run_command("/print", &["--text=two words"]),
        Ok("two words".into())
    );
    assert_eq!(
        app.run_command("/print", &["--other", "x", "--text", "last"]),
        Ok("last".into())
    );
    for missing in [&[][..], &["--text"][..], &["hi"][..]] {
        assert_eq!(
            contract_error(&app.run_command("/print", missing)),
            "Usage: /print --text <t>",
            "{missing:?}"
        );
    }
    assert_eq!(
        contract_error(&app.run_command("/nope", &["--text", "hi"])),
        "unknown command /nope"
    );
    assert_eq!(
        contract_error(&app.run_command("print", &["--text", "hi"])),
        "unknown command print"
    );
}

// ---------------------------------------------------------------------------------------------
// Intercom: determinism and host state errors
// ---------------------------------------------------------------------------------------------

/// A sequence of Intercom calls; returns the state root after each and each call's result and
/// fuel.
fn intercom_sequence(runtime: &Runtime) -> Vec<(Hash32, Result<Vec<u8>, CallFailure>, u64)> {
    let app = App::new(runtime, INTERCOM);
    let mut trace = Vec::new();
    let mut record = |outcome: CallOutcome<Vec<u8>>, app: &App<'_>| {
        trace.push((app.root(), outcome.result, outcome.fuel_used));
    };
    record(app.tx(alice(), "storeSomething", NIL), &app);
    record(app.tx(bob(), "storeSomething", NIL), &app);
    record(app.feature("timer", "currentTime", &mp(&42u64)), &app);
    record(
        app.tx(
            alice(),
            "submitSomething",
            &args(r#"{"op":"do_something","some_key":"a"}"#),
        ),
        &app,
    );
    record(
        app.tx(
            bob(),
            "submitSomething",
            &args(r#"{"op":"do_something","some_key":""}"#),
        ),
        &app,
    );
    record(app.message(bob(), "chat", 0), &app);
    record(app.feature("timer", "currentTime", &mp(&43u64)), &app);
    record(app.tx(alice(), "readSnapshot", NIL), &app);
    record(app.query("readSnapshot", NIL), &app);
    record(
        app.query("readKey", &args(r#"{"op":"read_key","key":"chat_last"}"#)),
        &app,
    );
    record(app.tx(alice(), "nope", NIL), &app);
    trace
}

#[test]
fn intercom_is_deterministic_across_runtimes_and_stores() {
    let first = Runtime::new(RuntimeConfig::default()).unwrap();
    let second = Runtime::new(RuntimeConfig::default()).unwrap();
    let a = intercom_sequence(&first);
    let b = intercom_sequence(&second);
    assert_eq!(a.len(), 11);
    assert_eq!(a, b);
    // The state changed along the way, and every call used fuel.
    assert_ne!(a[0].0, a[10].0);
    assert!(a.iter().all(|(_, _, fuel)| *fuel > 0));
    // Loading again from the cache changes nothing either.
    assert_eq!(intercom_sequence(&first), a);
}

#[test]
fn host_state_errors_become_contract_errors() {
    let app = App::intercom();
    let reserved = ReservedKeys::new([b"something".to_vec()], [b"submitted_by/".to_vec()]);

    let context = app.context(OpKind::Tx, alice());
    let outcome = app.execute_with(
        context,
        reserved.clone(),
        &tx(
            "submitSomething",
            &args(r#"{"op":"do_something","some_key":"x"}"#),
        ),
    );
    assert_eq!(
        contract_error(&outcome.result),
        "state: the key is reserved for the system"
    );
    assert!(outcome.writes.is_empty() && outcome.events.is_empty());

    let context = app.context(OpKind::Tx, alice());
    let outcome = app.execute_with(context, reserved.clone(), &tx("storeSomething", NIL));
    assert!(contract_error(&outcome.result).contains("reserved"));
    assert_eq!(app.get("something"), None);

    // Reserved keys can still be read.
    app.seed(&[("something", &mp("set by the system"))]);
    let context = app.context(OpKind::Tx, alice());
    let outcome = app.execute_with(context, reserved, &tx("storeSomething", NIL));
    assert_eq!(outcome.result, Ok(mp("set by the system")));

    // A key longer than the host's key limit is a contract error too (readKey admits 256
    // characters, the default limit is 256 bytes).
    let long_key = "é".repeat(200);
    let outcome = app.query("readKey", &mp(&json!({"op": "read_key", "key": long_key})));
    assert_eq!(
        contract_error(&outcome.result),
        "state: key must be 1 to 256 bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

/// A name's record.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    owner: String,
    target: String,
    updated_at: u64,
}

fn name_target(name: &str, target: &str) -> Vec<u8> {
    mp(&json!({"name": name, "target": target}))
}

fn name_only(name: &str) -> Vec<u8> {
    mp(&json!({ "name": name }))
}

#[test]
fn registry_describe() {
    let app = App::registry();
    let info = RUNTIME.describe(&app.contract).unwrap().result.unwrap();
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("registry", "0.1.0")
    );
    let functions: Vec<(&str, &str)> = info
        .functions
        .iter()
        .map(|f| (f.name.as_str(), kind_name(f.kind)))
        .collect();
    assert_eq!(
        functions,
        [
            ("claim", "tx"),
            ("set", "tx"),
            ("transfer", "tx"),
            ("release", "tx"),
            ("lookup", "query"),
            ("list", "query"),
        ]
    );
    for f in &info.functions {
        let schema: Json = serde_json::from_str(&f.args_schema).unwrap();
        assert_eq!(schema["type"], "object", "{}: {schema}", f.name);
        assert_eq!(
            schema["additionalProperties"], false,
            "{}: {schema}",
            f.name
        );
    }
    assert!(info.features.is_empty());
    let commands = RUNTIME.commands(&app.contract).unwrap().result.unwrap();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].name, "/whois");
    assert_eq!(commands[0].usage, "/whois --name <name>");
}

#[test]
fn registry_ownership() {
    let app = App::registry();
    let (a, b) = (alice(), bob());

    let context = app.context(OpKind::Tx, a);
    let claimed_at = context.checkpoint_time;
    let claim = app.execute(
        context,
        &tx("claim", &name_target("foo", "https://a.example")),
    );
    let record = Record {
        owner: a.to_hex(),
        target: "https://a.example".into(),
        updated_at: claimed_at,
    };
    assert_eq!(decode::<Record>(claim.result.as_ref().unwrap()), record);
    assert_eq!(claim.writes.len(), 1);
    assert_eq!(claim.writes[0].key, b"name/foo");
    assert_eq!(claim.events.len(), 1);
    assert_eq!(claim.events[0].topic, "claimed");
    assert_eq!(claim.events[0].data, mp("foo"));
    assert_eq!(
        decode::<Record>(
            app.query("lookup", &name_only("foo"))
                .result
                .as_ref()
                .unwrap()
        ),
        record
    );

    // Somebody else can neither take nor change it.
    let root = app.root();
    let taken = app.tx(b, "claim", &name_target("foo", "mine"));
    assert_eq!(contract_error(&taken.result), "foo is taken");
    let taken = app.tx(a, "claim", &name_target("foo", "again"));
    assert_eq!(contract_error(&taken.result), "foo is taken");
    for (function, arguments) in [
        ("set", name_target("foo", "elsewhere")),
        ("transfer", mp(&json!({"name": "foo", "to": b.to_hex()}))),
        ("release", name_only("foo")),
    ] {
        let outcome = app.tx(b, function, &arguments);
        assert_eq!(
            contract_error(&outcome.result),
            "foo belongs to someone else",
            "{function}"
        );
    }
    for function in ["set", "release"] {
        let arguments = if function == "set" {
            name_target("bar", "x")
        } else {
            name_only("bar")
        };
        let outcome = app.tx(a, function, &arguments);
        assert_eq!(contract_error(&outcome.result), "bar is not registered");
    }
    assert_eq!(app.root(), root, "refused calls write nothing");

    // The owner can.
    let context = app.context(OpKind::Tx, a);
    let set_at = context.checkpoint_time;
    let set = app.execute(
        context,
        &tx("set", &name_target("foo", "https://b.example")),
    );
    let record = Record {
        owner: a.to_hex(),
        target: "https://b.example".into(),
        updated_at: set_at,
    };
    assert_eq!(decode::<Record>(set.result.as_ref().unwrap()), record);
    assert!(set.events.is_empty());

    // Transfer to B (the key given in upper case is stored in lower case).
    let transfer = app.tx(
        a,
        "transfer",
        &mp(&json!({"name": "foo", "to": b.to_hex().to_uppercase()})),
    );
    let moved: Record = decode(transfer.result.as_ref().unwrap());
    assert_eq!(moved.owner, b.to_hex());
    assert_eq!(moved.target, "https://b.example");
    assert_eq!(transfer.events.len(), 1);
    assert_eq!(transfer.events[0].topic, "transferred");
    assert_eq!(
        json_of(&transfer.events[0].data),
        json!(["foo", b.to_hex()])
    );

    // Now A is the stranger, and B can release.
    let refused = app.tx(a, "set", &name_target("foo", "back"));
    assert_eq!(
        contract_error(&refused.result),
        "foo belongs to someone else"
    );
    let release = app.tx(b, "release", &name_only("foo"));
    assert_eq!(release.result, Ok(NIL.to_vec()));
    assert_eq!(
        release.writes,
        [StateWrite {
            key: b"name/foo".to_vec(),
            value: None
        }]
    );
    assert_eq!(release.events.len(), 1);
    assert_eq!(release.events[0].topic, "released");
    assert_eq!(release.events[0].data, mp("foo"));
    assert_eq!(app.get("name/foo"), None);
    assert_eq!(
        app.query("lookup", &name_only("foo")).result,
        Ok(NIL.to_vec())
    );

    // A released name is free again.
    let reclaimed = app.tx(a, "claim", &name_target("foo", "third"));
    assert_eq!(
        decode::<Record>(reclaimed.result.as_ref().unwrap()).owner,
        a.to_hex()
    );
}

#[test]
fn registry_list_and_validation() {
    let app = App::registry();
    for name in ["beta", "alpine", "al", "alpha", "a-1", "zeta9"] {
        let outcome = app.tx(alice(), "claim", &name_target(name, "t"));
        assert!(outcome.result.is_ok(), "{name}: {:?}", outcome.result);
    }
    let list = |arguments: Json| -> Vec<String> {
        decode(app.query("list", &mp(&arguments)).result.as_ref().unwrap())
    };
    assert_eq!(
        list(json!({})),
        ["a-1", "al", "alpha", "alpine", "beta", "zeta9"]
    );
    assert_eq!(list(json!({"prefix": "al"})), ["al", "alpha", "alpine"]);
    assert_eq!(list(json!({"prefix": "al", "limit": 2})), ["al", "alpha"]);
    assert_eq!(
        list(json!({"prefix": "alp", "limit": 100})),
        ["alpha", "alpine"]
    );
    assert_eq!(list(json!({"limit": 1})), ["a-1"]);
    assert!(list(json!({"prefix": "q"})).is_empty());
    assert_eq!(list(json!({"prefix": "zeta9"})), ["zeta9"]);

    let root = app.root();
    let too_long = "n".repeat(65);
    for bad in ["Foo", "", too_long.as_str(), "a b", "naïve", "a/b", "a_b"] {
        let claim = app.tx(alice(), "claim", &name_target(bad, "t"));
        let message = invalid_args(&claim);
        assert!(message.starts_with("claim: name "), "{bad:?}: {message}");
        let lookup = app.query("lookup", &name_only(bad));
        assert!(
            invalid_args(&lookup).starts_with("lookup: name "),
            "{bad:?}"
        );
    }
    // 64 characters is the longest name.
    let longest = "n".repeat(64);
    assert!(
        app.tx(bob(), "claim", &name_target(&longest, "t"))
            .result
            .is_ok()
    );
    let root_after = app.root();
    assert_ne!(root_after, root);

    let long_target = "t".repeat(257);
    for (function, arguments, expected) in [
        ("claim", name_target("ok", ""), "target must be 1 to 256"),
        (
            "claim",
            name_target("ok", &long_target),
            "target must be 1 to 256",
        ),
        (
            "claim",
            mp(&json!({"name": "ok"})),
            "missing field `target`",
        ),
        (
            "claim",
            mp(&json!({"name": "ok", "target": "t", "x": 1})),
            "unknown field `x`",
        ),
        (
            "transfer",
            mp(&json!({"name": "beta", "to": "abc"})),
            "to must be a public key of 64 hex digits",
        ),
        (
            "transfer",
            mp(&json!({"name": "beta", "to": "g".repeat(64)})),
            "to must be a public key of 64 hex digits",
        ),
        ("release", NIL.to_vec(), "invalid type"),
    ] {
        let message = invalid_args(&app.tx(alice(), function, &arguments));
        assert!(
            message.starts_with(&format!("{function}: ")) && message.contains(expected),
            "{function}: {message}"
        );
    }
    for (arguments, expected) in [
        (json!({"limit": 0}), "limit must be 1 to 100"),
        (json!({"limit": 101}), "limit must be 1 to 100"),
        (json!({"prefix": "A"}), "name may hold only"),
    ] {
        let message = invalid_args(&app.query("list", &mp(&arguments)));
        assert!(message.contains(expected), "{arguments}: {message}");
    }
    assert_eq!(app.root(), root_after, "refused calls write nothing");
    assert_eq!(
        unknown_function(&app.query("claim", &name_target("x", "t"))),
        "claim is a transaction, not a query"
    );
}

#[test]
fn registry_commands() {
    let app = App::registry();
    assert_eq!(
        app.run_command("/whois", &["--name", "foo"]),
        Ok("foo is free".into())
    );
    assert!(
        app.tx(alice(), "claim", &name_target("foo", "bar"))
            .result
            .is_ok()
    );
    assert_eq!(
        app.run_command("/whois", &["--name", "foo"]),
        Ok(format!("foo -> bar (owner {})", alice().to_hex()))
    );
    assert_eq!(
        contract_error(&app.run_command("/whois", &[])),
        "Usage: /whois --name <name>"
    );
    assert_eq!(
        contract_error(&app.run_command("/print", &["--text", "x"])),
        "unknown command /print"
    );

    let (function, arguments) = mapped(&app, "claim foo bar");
    assert_eq!(function, "claim");
    assert_eq!(json_of(&arguments), json!({"name": "foo", "target": "bar"}));
    let (function, arguments) = mapped(&app, "  release   foo ");
    assert_eq!(function, "release");
    assert_eq!(json_of(&arguments), json!({"name": "foo"}));
    let (function, arguments) = mapped(&app, r#"{"op":"set","name":"foo","target":"baz"}"#);
    assert_eq!(function, "set");
    assert_eq!(json_of(&arguments), json!({"name": "foo", "target": "baz"}));
    for unknown in [
        "claim foo",
        "claim a b c",
        "lookup foo",
        r#"{"op":"lookup"}"#,
        "",
    ] {
        assert_unmapped(&app, unknown);
    }
    assert!(contract_error(&app.map_command("{oops")).contains("invalid JSON"));

    // Mapped commands run: B's claim of foo is refused, A's set succeeds.
    let (function, arguments) = mapped(&app, "claim foo mine");
    assert_eq!(
        contract_error(&app.tx(bob(), &function, &arguments).result),
        "foo is taken"
    );
    let (function, arguments) = mapped(&app, r#"{"op":"set","name":"foo","target":"baz"}"#);
    assert!(app.tx(alice(), &function, &arguments).result.is_ok());
    assert_eq!(
        app.run_command("/whois", &["--name", "foo"]),
        Ok(format!("foo -> baz (owner {})", alice().to_hex()))
    );
    let (function, arguments) = mapped(&app, "claim new-name target");
    assert!(app.tx(bob(), &function, &arguments).result.is_ok());
    let record: Record = decode(
        app.query("lookup", &name_only("new-name"))
            .result
            .as_ref()
            .unwrap(),
    );
    assert_eq!(record.owner, bob().to_hex());
}

// ---------------------------------------------------------------------------------------------
// The SDK probe (contracts/probe): panics, context, seed and limits from real Rust code
// ---------------------------------------------------------------------------------------------

#[test]
fn a_panic_is_recorded_with_its_message_and_writes_nothing() {
    let app = App::probe();
    let root = app.root();
    let outcome = app.tx(alice(), "panic", &args(r#"{"message":"the sky fell"}"#));
    match &outcome.result {
        Err(CallFailure::Aborted(message)) => {
            assert!(message.starts_with("the sky fell"), "{message}");
            assert!(
                message.contains("src/lib.rs:"),
                "location included: {message}"
            );
            assert!(
                !message.contains("/work/") && !message.contains("/root/"),
                "{message}"
            );
        }
        other => panic!("expected Aborted, got {other:?}"),
    }
    assert_eq!(app.root(), root);
    // The runtime is healthy afterwards.
    assert!(app.tx(alice(), "roll", &args(r#"{"n":6}"#)).result.is_ok());
}

#[test]
fn the_contract_sees_the_call_context_and_the_deterministic_seed() {
    let app = App::probe();
    let context = app.context(OpKind::Tx, alice());
    let expected = context.clone();
    let outcome = app.execute(context, &tx("context", NIL));
    let seen = ok_json(&outcome);
    assert_eq!(seen["op_kind"], "OpKind::Tx");
    assert_eq!(seen["sender"], alice().to_hex());
    assert_eq!(seen["sender_address"], alice().address());
    assert_eq!(seen["tx_hash"], expected.tx_hash.to_hex());
    assert_eq!(seen["validator"], PublicKey([0x33; 32]).to_hex());
    assert_eq!(seen["position"], expected.log_position);
    assert_eq!(seen["time"], expected.checkpoint_time);
    assert_eq!(seen["seed"], expected.seed().to_hex());
    // As a query the context is the read-only one.
    let seen = ok_json(&app.query("context", NIL));
    assert_eq!(seen["op_kind"], "OpKind::Query");
    assert_eq!(seen["position"], 0);
}

#[test]
fn dice_rolls_follow_the_seed_identically() {
    let a = App::probe();
    let b = App::probe();
    let mut rolls = Vec::new();
    for _ in 0..20 {
        let ra = ok_json(&a.tx(alice(), "roll", &args(r#"{"n":6}"#)));
        let rb = ok_json(&b.tx(alice(), "roll", &args(r#"{"n":6}"#)));
        assert_eq!(ra, rb, "the same context rolls the same value");
        let v = ra.as_u64().unwrap();
        assert!((1..=6).contains(&v));
        rolls.push(v);
    }
    assert!(
        rolls.iter().any(|&v| v != rolls[0]),
        "the seed varies with the position"
    );
    assert_eq!(a.root(), b.root());
    assert!(!invalid_args(&a.tx(alice(), "roll", &args(r#"{"n":0}"#))).is_empty());
}

#[test]
fn limits_reached_from_rust_code_are_recorded_failures() {
    let app = App::probe();
    let limits = Limits::default();
    let within = app.tx(alice(), "fill", &args(r#"{"n":10}"#));
    assert_eq!(within.writes.len(), 10);
    let root = app.root();
    let beyond = app.tx(
        alice(),
        "fill",
        &args(&format!(r#"{{"n":{}}}"#, limits.max_writes_per_call + 1)),
    );
    assert!(
        contract_error(&beyond.result).contains("write limit"),
        "{:?}",
        beyond.result
    );
    assert_eq!(app.root(), root);

    assert_eq!(
        ok_json(&app.query("recurse", &args(r#"{"n":50}"#))),
        json!(50)
    );
    assert_eq!(
        app.query("recurse", &args(r#"{"n":100000}"#)).result,
        Err(CallFailure::CallDepth)
    );
    assert_eq!(
        ok_json(&app.query("alloc", &args(r#"{"n":1}"#))),
        json!(1 << 20)
    );
    assert_eq!(
        app.query("alloc", &args(r#"{"n":200}"#)).result,
        Err(CallFailure::MemoryLimit)
    );
}

#[test]
fn nested_objects_must_be_objects_too() {
    let app = App::probe();
    let valid = r#"{"inner":{"name":"x"},"list":[{"name":"y"}],"maybe":null}"#;
    assert_eq!(
        ok_json(&app.query("echo", &args(valid))),
        serde_json::from_str::<Json>(valid).unwrap()
    );
    let with_some = r#"{"inner":{"name":"x"},"list":[],"maybe":{"name":"z"}}"#;
    assert!(app.query("echo", &args(with_some)).result.is_ok());
    for (what, bad, at) in [
        (
            "an array for a nested object",
            r#"{"inner":["x"],"list":[],"maybe":null}"#,
            "arguments.inner",
        ),
        (
            "an array for a list item",
            r#"{"inner":{"name":"x"},"list":[["y"]],"maybe":null}"#,
            "arguments.list[0]",
        ),
        (
            "an array for an optional object",
            r#"{"inner":{"name":"x"},"list":[],"maybe":["z"]}"#,
            "arguments.maybe",
        ),
    ] {
        let outcome = app.query("echo", &args(bad));
        let message = invalid_args(&outcome);
        assert!(message.contains(at), "{what}: {message}");
    }
    // Integer keys in a nested object.
    let mut integer_keys = vec![0x83];
    integer_keys.extend(mp("inner"));
    integer_keys.extend([0x81, 0x00]);
    integer_keys.extend(mp("x"));
    integer_keys.extend(mp("list"));
    integer_keys.push(0x90);
    integer_keys.extend(mp("maybe"));
    integer_keys.push(0xc0);
    assert!(invalid_args(&app.query("echo", &integer_keys)).contains("text"));
}
