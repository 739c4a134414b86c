//! The subnet peer's routes (reference `trac-peer` §6, with its gaps closed) and the wallet
//! flow of this project (docs/rpc.md):
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /v1/health` | `{ok: true}` |
//! | `GET /v1/status` | `{peer: {…}, msb: {…}}` |
//! | `GET /v1/state?key=&confirmed=` | `{key, confirmed, value}` |
//! | `GET /v1/contract/schema` | `{schemaVersion, schemaFormat, contract: {…}, api: {methods}}` |
//! | `GET /v1/contract/nonce` | `{nonce}` (a fresh u64 as a decimal string) |
//! | `GET /v1/contract/tx/context` | `{msb: {networkId, bs, mbs, iw, operationType}, latestHeight, expires, fee}` |
//! | `POST /v1/contract/tx/prepare` | `{tx, sign, preimage, body}`: what the wallet signs |
//! | `POST /v1/contract/tx` | `{result}`: the simulation, or the broadcast tx |
//! | `GET /v1/contract/query?name=&args=` | `{result, fuel}` |
//!
//! A wallet transaction is a user op `Tx { subnet, content }` whose requester is the wallet's
//! key: the wallet signs its 32-byte tx hash with Ed25519 (`sign` = `tx`); this peer hands
//! the signed op to an MSB validator, waits for the settlement and appends the transaction to
//! the subnet log, where every peer applies it with the wallet as the sender.

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{ApiError, ApiResult, Client, JsonBody, Shared, confirmed_param, internal, value_json};
use crate::codec;
use crate::crypto::{Hash32, PublicKey, Signature, decode_address, encode_address};
use crate::msb::ops::format_amount;
use crate::msb::{FEE, PartialOp, UserAction, UserBody};
use crate::node::runner::{ForwardOutcome, Node};
use crate::node::terminal::is_indexer;
use crate::node::{TxFlowError, txflow};
use crate::runtime::{CallFailure, FunctionKind};
use crate::subnet::{SubnetMachine, TxOp, keys};

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/state", get(state))
        .route("/v1/contract/schema", get(schema))
        .route("/v1/contract/nonce", get(nonce))
        .route("/v1/contract/tx/context", get(context))
        .route("/v1/contract/tx/prepare", post(prepare))
        .route("/v1/contract/tx", post(tx))
        .route("/v1/contract/query", get(query))
}

async fn health() -> axum::Json<Json> {
    axum::Json(json!({ "ok": true }))
}

async fn status(State(state): State<Shared>) -> ApiResult {
    let json = state
        .node
        .run(|node: &mut Node| -> Result<Json, ApiError> {
            let me = node.peer_key().public();
            let stats = node.stats();
            let writable = node.writable();
            let indexer = is_indexer(node).map_err(internal)?;
            let (admin, chat) = node
                .subnet_mut()
                .read(false, |s| -> Result<_, crate::ledger::LedgerError> {
                    let admin = SubnetMachine::admin(s)?;
                    let chat = s
                        .get(keys::CHAT_STATUS.as_bytes())?
                        .and_then(|v| codec::decode::<String>(&v).ok());
                    Ok((admin, chat))
                })
                .map_err(internal)?
                .map_err(internal)?;
            let subnet = &stats.subnet.status;
            let msb = &stats.msb.status;
            Ok(json!({
                "peer": {
                    "pubKeyHex": me.to_hex(),
                    "writerKeyHex": me.to_hex(),
                    "msbAddress": encode_address(&me),
                    "baseWritable": writable == Some(true),
                    "isIndexer": indexer,
                    "isWriter": writable == Some(true),
                    "subnetBootstrapHex": node.subnet_id().to_hex(),
                    "subnetChannelUtf8": node.subnet_channel(),
                    "subnetSignedLength": subnet.final_height,
                    "subnetUnsignedLength": subnet.latest_height,
                    "subnetStateRoot": subnet.final_root.to_hex(),
                    "subnetEntries": subnet.entries,
                    "subnetDivergence": subnet.divergence.is_some(),
                    "admin": admin.map(|a| a.to_hex()),
                    "chatStatus": chat,
                    "peers": stats.peers,
                },
                "msb": {
                    "ready": true,
                    "bootstrapHex": node.msb_id().to_hex(),
                    "networkId": node.msb_id().to_hex(),
                    "signedLength": msb.final_height,
                    "unsignedLength": msb.latest_height,
                    "stateRoot": msb.final_root.to_hex(),
                    "isValidator": node.is_validator(),
                },
            }))
        })
        .await??;
    Ok(axum::Json(json))
}

#[derive(Debug, Deserialize)]
struct StateQuery {
    key: Option<String>,
    confirmed: Option<String>,
}

async fn state(State(state): State<Shared>, Query(q): Query<StateQuery>) -> ApiResult {
    let key = q
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key."))?;
    let confirmed = confirmed_param(q.confirmed.as_deref(), true)?;
    let lookup = key.clone();
    let value = state
        .node
        .run(move |node: &mut Node| {
            node.subnet_mut()
                .read(confirmed, |s| s.get(lookup.as_bytes()))
                .map_err(internal)?
                .map_err(internal)
        })
        .await??;
    Ok(axum::Json(json!({
        "key": key,
        "confirmed": confirmed,
        "value": value.map(|v| value_json(&v)),
    })))
}

/// The active contract's `describe`, from the latest view.
fn describe(node: &mut Node) -> Result<crate::runtime::ContractInfo, ApiError> {
    let (contract, runtime) = node
        .active_contract()
        .map_err(internal)?
        .ok_or_else(|| ApiError::conflict("No contract is deployed in this subnet yet."))?;
    let outcome = runtime.describe(&contract).map_err(internal)?;
    outcome
        .result
        .map_err(|e| ApiError::internal(format!("the contract's describe failed: {e}")))
}

async fn schema(State(state): State<Shared>) -> ApiResult {
    let info = state.node.run(describe).await??;
    let kind = |k: &FunctionKind| match k {
        FunctionKind::Tx => "tx",
        FunctionKind::Query => "query",
        FunctionKind::Both => "both",
    };
    let mut tx_types: Vec<String> = info
        .functions
        .iter()
        .filter(|f| !matches!(f.kind, FunctionKind::Query))
        .map(|f| f.name.clone())
        .collect();
    tx_types.sort();
    let ops: serde_json::Map<String, Json> = info
        .functions
        .iter()
        .map(|f| {
            let schema = serde_json::from_str::<Json>(&f.args_schema).unwrap_or(json!({}));
            (f.name.clone(), json!({ "value": schema }))
        })
        .collect();
    let methods: Vec<Json> = info
        .functions
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": kind(&f.kind),
                "description": f.description,
                "argsSchema": serde_json::from_str::<Json>(&f.args_schema).unwrap_or(json!({})),
            })
        })
        .collect();
    let features: Vec<Json> = info
        .features
        .iter()
        .map(|f| json!({ "name": f.name, "description": f.description }))
        .collect();
    Ok(axum::Json(json!({
        "schemaVersion": 1,
        "schemaFormat": "json-schema",
        "contract": {
            "contractClass": info.name,
            "version": info.version,
            "protocolClass": "trac-component",
            "txTypes": tx_types,
            "ops": ops,
            "features": features,
        },
        "api": { "methods": methods },
    })))
}

async fn nonce() -> axum::Json<Json> {
    axum::Json(json!({ "nonce": rand::random::<u64>().to_string() }))
}

/// The MSB heights and ids a wallet needs to build a transaction through this peer.
fn tx_context(node: &mut Node) -> Json {
    let msb = node.msb_mut().status();
    let expires = msb.latest_height + txflow::DEFAULT_EXPIRY_WINDOW;
    json!({
        "msb": {
            "networkId": node.msb_id().to_hex(),
            "mbs": node.msb_id().to_hex(),
            "bs": node.subnet_id().to_hex(),
            "iw": node.peer_key().public().to_hex(),
            "operationType": "tx",
        },
        "latestHeight": msb.latest_height,
        "expires": expires,
        "fee": FEE.to_string(),
        "feeTnk": format_amount(FEE),
    })
}

async fn context(State(state): State<Shared>) -> ApiResult {
    Ok(axum::Json(state.node.run(tx_context).await?))
}

/// A contract call given as `prepared_command: {type, value}`: the function and its JSON
/// arguments (MessagePack on the wire; a missing value is `null`).
fn call_of(body: &Json) -> Result<(String, Vec<u8>), ApiError> {
    let command = body
        .get("prepared_command")
        .ok_or_else(|| ApiError::bad_request("Missing prepared_command."))?;
    let object = command
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Invalid prepared_command: expected an object."))?;
    let function = object
        .get("type")
        .and_then(Json::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("Invalid prepared_command: type must be a function name.")
        })?;
    let value = object.get("value").cloned().unwrap_or(Json::Null);
    let args = crate::codec::json::json_to_msgpack(&value)
        .map_err(|e| ApiError::bad_request(format!("Invalid prepared_command value: {e}.")))?;
    Ok((function.to_string(), args))
}

/// The requester: `address` as 64 hex digits or a `trac1…` address.
fn address_of(body: &Json) -> Result<PublicKey, ApiError> {
    let text = body
        .get("address")
        .and_then(Json::as_str)
        .ok_or_else(|| ApiError::bad_request("Missing address."))?;
    parse_key(text)
}

/// A public key as 64 hex digits or a `trac1…` address.
pub fn parse_key(text: &str) -> Result<PublicKey, ApiError> {
    let text = text.trim();
    if text.starts_with("trac1") {
        return decode_address(text)
            .map_err(|e| ApiError::bad_request(format!("Invalid address: {e}.")));
    }
    let key = PublicKey(super::hex32(text, "address")?);
    key.validate()
        .map_err(|_| ApiError::bad_request("Invalid address: not an Ed25519 public key."))?;
    Ok(key)
}

/// A u64 given as a JSON number or a decimal string.
fn u64_field(body: &Json, name: &str) -> Result<Option<u64>, ApiError> {
    match body.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid {name}: expected a u64."))),
        Some(Json::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("Invalid {name}: expected a u64."))),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid {name}: expected a u64."
        ))),
    }
}

/// The body the wallet signs, built from the request (`nonce` and `expires` as given, or
/// fresh ones).
fn user_body(node: &mut Node, body: &Json) -> Result<(UserBody, String, Vec<u8>), ApiError> {
    let (function, args) = call_of(body)?;
    let requester = address_of(body)?;
    let nonce = u64_field(body, "nonce")?.unwrap_or_else(rand::random);
    let latest = node.msb_mut().status().latest_height;
    let expires = u64_field(body, "expires")?.unwrap_or(latest + txflow::DEFAULT_EXPIRY_WINDOW);
    let subnet = node.subnet_id();
    Ok((
        UserBody {
            action: UserAction::Tx {
                subnet,
                content: TxOp::content_hash(&subnet, &function, &args),
            },
            requester,
            nonce,
            expires,
        },
        function,
        args,
    ))
}

async fn prepare(State(state): State<Shared>, JsonBody(body): JsonBody) -> ApiResult {
    let json = state
        .node
        .run(move |node: &mut Node| -> Result<Json, ApiError> {
            let (user, function, args) = user_body(node, &body)?;
            let network = node.msb_id();
            let domain = crate::crypto::Domain::new(crate::crypto::DomainKind::MsbOp, network);
            let mut preimage = domain.prefix();
            preimage.extend_from_slice(&codec::encode(&("user", &user)));
            let tx = user.tx_hash(&network);
            let UserAction::Tx { content, .. } = &user.action else {
                unreachable!("built as a tx above")
            };
            Ok(json!({
                "tx": tx.to_hex(),
                "sign": tx.to_hex(),
                "preimage": hex::encode(&preimage),
                "body": {
                    "networkId": network.to_hex(),
                    "subnet": node.subnet_id().to_hex(),
                    "function": function,
                    "args": hex::encode(&args),
                    "content": content.to_hex(),
                    "requester": user.requester.to_hex(),
                    "nonce": user.nonce.to_string(),
                    "expires": user.expires,
                },
            }))
        })
        .await??;
    Ok(axum::Json(json))
}

/// The text of a failed call, for JSON.
fn failure_json(failure: &CallFailure) -> Json {
    json!({ "error": failure.to_string() })
}

/// A tx-flow refusal as a status: the caller's mistakes are 4xx, node faults 500.
fn flow_error(e: TxFlowError) -> ApiError {
    match e {
        TxFlowError::Ledger(_) | TxFlowError::Store(_) | TxFlowError::Runtime(_) => internal(e),
        TxFlowError::NotWriter(_) | TxFlowError::NoContract => ApiError::conflict(e.to_string()),
        TxFlowError::TransactionsDisabled => ApiError::forbidden(e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

async fn tx(State(state): State<Shared>, client: Client, JsonBody(body): JsonBody) -> ApiResult {
    let sim = match body.get("sim") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid sim: expected true or false.",
            ));
        }
    };
    if sim {
        state.limit(&client.0)?;
        return simulate(&state, body).await;
    }
    if !state.api_tx_exposed {
        return Err(ApiError::forbidden(
            "Transactions not exposed in API: start the node with --api-tx-exposed to submit (simulations work without it).",
        ));
    }
    state.limit(&client.0)?;
    let signature = body
        .get("signature")
        .and_then(Json::as_str)
        .ok_or_else(|| ApiError::bad_request("Missing signature."))?;
    let signature = hex::decode(signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(Signature)
        .ok_or_else(|| ApiError::bad_request("Invalid signature: expected 128 hex digits."))?;
    if u64_field(&body, "nonce")?.is_none() || u64_field(&body, "expires")?.is_none() {
        return Err(ApiError::bad_request(
            "Missing nonce or expires: send the values the prepared transaction was signed with.",
        ));
    }
    let claimed = match body.get("tx").and_then(Json::as_str) {
        Some(text) => Some(Hash32(super::hex32(text, "tx")?)),
        None => None,
    };
    let outcome: Result<(Hash32, Option<ForwardOutcome>), ApiError> = state
        .node
        .run(move |node: &mut Node| {
            if node.writable() != Some(true) {
                return Err(ApiError::conflict(
                    "Peer is not writable: this peer cannot append transactions to the subnet.",
                ));
            }
            let (user, function, args) = user_body(node, &body)?;
            let tx_hash = user.tx_hash(&node.msb_id());
            if claimed.is_some_and(|c| c != tx_hash) {
                return Err(ApiError::bad_request(
                    "Invalid TX: the transaction hash does not match the call, address, nonce and expires given.",
                ));
            }
            crate::crypto::verify_hash(&user.requester, &tx_hash, &signature)
                .map_err(|_| ApiError::bad_request("Invalid signature."))?;
            let partial = PartialOp {
                body: user,
                requester_sig: signature,
            };
            let (result, forwarded) = node.with_tx_parts(|subnet, access, flow| {
                flow.submit_signed(subnet, access, &function, &args, partial)
            });
            let hash = result.map_err(flow_error)?;
            Ok((hash, forwarded))
        })
        .await?;
    let (tx_hash, forwarded) = outcome?;
    if let Some(forwarded) = forwarded {
        match forwarded.await {
            Ok(Ok(_)) => {}
            Ok(Err(Some(rejection))) => {
                return Err(ApiError::bad_request(format!(
                    "MSB refuses the transaction: {rejection}"
                )));
            }
            Ok(Err(None)) => {
                return Err(ApiError::unavailable(
                    "No MSB validator is reachable now: the transaction stays pending and is submitted again.",
                ));
            }
            Err(_) => return Err(ApiError::from(crate::node::runner::NodeStopped)),
        }
    }
    Ok(axum::Json(json!({
        "result": {
            "message": "Transaction broadcasted.",
            "tx": tx_hash.to_hex(),
        }
    })))
}

/// `sim: true`: runs the call on the latest state for the requester, nothing is signed or
/// submitted.
async fn simulate(state: &Shared, body: Json) -> ApiResult {
    let json = state
        .node
        .run(move |node: &mut Node| -> Result<Json, ApiError> {
            let (function, args) = call_of(&body)?;
            let requester = address_of(&body)?;
            let (result, _) = node.with_tx_parts(|subnet, access, flow| {
                flow.simulate(subnet, access, &function, &args, &requester)
            });
            let simulation = result.map_err(flow_error)?;
            let writes: Vec<Json> = simulation
                .writes
                .iter()
                .map(|w| {
                    json!({
                        "key": String::from_utf8_lossy(&w.key),
                        "value": w.value.as_deref().map(value_json),
                    })
                })
                .collect();
            let events: Vec<Json> = simulation
                .events
                .iter()
                .map(|e| json!({ "topic": e.topic, "data": value_json(&e.data) }))
                .collect();
            Ok(match simulation.result {
                Ok(bytes) => json!({
                    "result": value_json(&bytes),
                    "fuel": simulation.fuel,
                    "writes": writes,
                    "events": events,
                }),
                Err(failure) => {
                    return Err(ApiError::bad_request(format!(
                        "Simulation failed: {}",
                        failure_json(&failure)["error"].as_str().unwrap_or_default()
                    )));
                }
            })
        })
        .await??;
    Ok(axum::Json(json))
}

#[derive(Debug, Deserialize)]
struct QueryParams {
    name: Option<String>,
    args: Option<String>,
    confirmed: Option<String>,
}

async fn query(
    State(state): State<Shared>,
    client: Client,
    Query(q): Query<QueryParams>,
) -> ApiResult {
    state.limit(&client.0)?;
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing name."))?;
    let confirmed = confirmed_param(q.confirmed.as_deref(), true)?;
    let args = match q.args.as_deref() {
        None | Some("") => vec![0xc0],
        Some(text) => crate::codec::json::json_text_to_msgpack(text)
            .map_err(|e| ApiError::bad_request(format!("Invalid args: {e}.")))?,
    };
    let json = state
        .node
        .run(move |node: &mut Node| -> Result<Json, ApiError> {
            let outcome = node
                .subnet_mut()
                .read_with_machine(confirmed, |view, machine| {
                    let contract = machine
                        .current_contract(view)
                        .map_err(internal)?
                        .ok_or_else(|| {
                            ApiError::conflict("No contract is deployed in this subnet yet.")
                        })?;
                    machine
                        .runtime()
                        .query(&contract, view, &name, &args)
                        .map_err(internal)
                })
                .map_err(internal)??;
            match outcome.result {
                Ok(bytes) => Ok(json!({ "result": value_json(&bytes), "fuel": outcome.fuel_used })),
                Err(failure) => Err(ApiError::bad_request(format!("Query failed: {failure}"))),
            }
        })
        .await??;
    Ok(axum::Json(json))
}
