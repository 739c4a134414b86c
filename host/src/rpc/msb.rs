//! The MSB HTTP API routes that apply to this node (reference `msb.md` §10), served from the
//! node's MSB replica:
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /v1/balance/{address}?confirmed=` | `{address, balance}` (base units, decimal string) |
//! | `GET /v1/account/{address}?confirmed=` | `{address, writingKey, isWhitelisted, isValidator, isIndexer, license, balance, stakedBalance}` |
//! | `GET /v1/fee` | `{fee}` |
//! | `GET /v1/confirmed-length` | `{confirmed_length}` (the final MSB height) |
//! | `GET /v1/unconfirmed-length` | `{unconfirmed_length}` (the latest verified height) |
//! | `GET /v1/tx/{hash}` | `{txDetails}` (final only) |
//! | `GET /v1/tx/details/{hash}?confirmed=` | `{txDetails, confirmed_length, fee}` |
//! | `GET /v1/tx-hashes/{start}/{end}` | `{hashes: [{hash, confirmed_length}]}` of final heights `start..end` |
//! | `POST /v1/broadcast-transaction` | `{result: {message, tx, signedLength, unsignedLength}}` |
//!
//! `confirmed` is strict (`true` or `false`) and defaults to `true`. Lengths are MSB
//! checkpoint heights (this MSB counts checkpoints, not Hypercore blocks). A broadcast carries
//! `payload` = base64 of a signed user op (`PartialOp`, canonical encoding): a transfer, a
//! subnet registration, a settled transaction, joining or leaving the validators.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{ApiError, ApiResult, Client, JsonBody, Shared, confirmed_param, internal};
use crate::codec;
use crate::crypto::{Hash32, PublicKey, encode_address};
use crate::msb::{
    Account, FEE, MsbOp, PartialOp, ProofError, ROLE_INDEXER, ROLE_VALIDATOR, ROLE_WHITELISTED,
    Receipt, SettlementProof, SubmitError, UserAction,
};
use crate::node::runner::{Node, Submission};

/// The widest range of heights `tx-hashes` lists at once.
pub const MAX_HASH_RANGE: u64 = 1000;

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/balance/{address}", get(balance))
        .route("/v1/account/{address}", get(account))
        .route("/v1/fee", get(fee))
        .route("/v1/confirmed-length", get(confirmed_length))
        .route("/v1/unconfirmed-length", get(unconfirmed_length))
        .route("/v1/tx/{hash}", get(tx))
        .route("/v1/tx/details/{hash}", get(tx_details))
        .route("/v1/tx-hashes/{start}/{end}", get(tx_hashes))
        .route("/v1/broadcast-transaction", post(broadcast))
}

#[derive(Debug, Deserialize)]
struct Confirmed {
    confirmed: Option<String>,
}

/// The account of `key` in the confirmed or latest MSB view.
fn read_account(node: &mut Node, key: PublicKey, confirmed: bool) -> Result<Account, ApiError> {
    node.msb_mut()
        .read(confirmed, |s| crate::msb::account(s, &key))
        .map_err(internal)?
        .map_err(internal)
}

/// The account an `{address}` route names, in the view its `confirmed` parameter asks for.
async fn lookup(
    state: &Shared,
    address: &str,
    confirmed: Option<&str>,
) -> Result<(PublicKey, Account), ApiError> {
    let key = super::peer::parse_key(address)?;
    let confirmed = confirmed_param(confirmed, true)?;
    let account = state
        .node
        .run(move |node: &mut Node| read_account(node, key, confirmed))
        .await??;
    Ok((key, account))
}

async fn balance(
    State(state): State<Shared>,
    Path(address): Path<String>,
    Query(q): Query<Confirmed>,
) -> ApiResult {
    let (key, account) = lookup(&state, &address, q.confirmed.as_deref()).await?;
    Ok(axum::Json(json!({
        "address": encode_address(&key),
        "balance": account.balance.to_string(),
    })))
}

async fn account(
    State(state): State<Shared>,
    Path(address): Path<String>,
    Query(q): Query<Confirmed>,
) -> ApiResult {
    let (key, account) = lookup(&state, &address, q.confirmed.as_deref()).await?;
    Ok(axum::Json(json!({
        "address": encode_address(&key),
        "writingKey": key.to_hex(),
        "isWhitelisted": account.has(ROLE_WHITELISTED),
        "isValidator": account.has(ROLE_VALIDATOR),
        "isIndexer": account.has(ROLE_INDEXER),
        "license": Json::Null,
        "balance": account.balance.to_string(),
        "stakedBalance": account.staked.to_string(),
    })))
}

async fn fee() -> axum::Json<Json> {
    axum::Json(json!({ "fee": FEE.to_string() }))
}

async fn confirmed_length(State(state): State<Shared>) -> ApiResult {
    let height = state
        .node
        .run(|node: &mut Node| node.msb_mut().status().final_height)
        .await?;
    Ok(axum::Json(json!({ "confirmed_length": height })))
}

async fn unconfirmed_length(State(state): State<Shared>) -> ApiResult {
    let height = state
        .node
        .run(|node: &mut Node| node.msb_mut().status().latest_height)
        .await?;
    Ok(axum::Json(json!({ "unconfirmed_length": height })))
}

/// A tx hash path parameter: 64 hex digits, any case.
fn tx_hash(text: &str) -> Result<Hash32, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("Transaction hash is required."));
    }
    super::hex32(text, "transaction hash").map(Hash32)
}

fn key_json(key: &PublicKey) -> Json {
    json!(key.to_hex())
}

/// An MSB op and its receipt for people.
fn details(op: &MsbOp, receipt: &Receipt, height: u64) -> Json {
    let mut out = json!({
        "hash": receipt.tx_hash.to_hex(),
        "kind": receipt.kind,
        "confirmed_length": height,
        "requester": receipt.requester.as_ref().map(key_json),
        "validator": receipt.validator.as_ref().map(key_json),
        "fee": receipt.fee.to_string(),
        "error": receipt.error.as_ref().map(|e| json!({
            "code": format!("{:?}", e.code),
            "message": e.message,
        })),
    });
    let action = match op {
        MsbOp::User(complete) => {
            out["nonce"] = json!(complete.body.nonce.to_string());
            out["expires"] = json!(complete.body.expires);
            match &complete.body.action {
                UserAction::Transfer { to, amount } => {
                    json!({ "type": "transfer", "to": to.to_hex(), "amount": amount.to_string() })
                }
                UserAction::DeploySubnet { subnet, channel } => {
                    json!({ "type": "deploySubnet", "subnet": subnet.to_hex(), "channel": channel })
                }
                UserAction::Tx { subnet, content } => {
                    json!({ "type": "tx", "subnet": subnet.to_hex(), "content": content.to_hex() })
                }
                UserAction::JoinValidators => json!({ "type": "joinValidators" }),
                UserAction::LeaveValidators => json!({ "type": "leaveValidators" }),
            }
        }
        MsbOp::Admin(admin) => json!({ "type": admin.action.name() }),
        MsbOp::Faucet { to } => json!({ "type": "faucet", "to": to.to_hex() }),
    };
    out["action"] = action;
    out
}

/// The final record of `hash`: `Ok(None)` when MSB has not applied it in a final checkpoint.
fn final_details(node: &mut Node, hash: Hash32) -> Result<Option<Json>, ApiError> {
    match SettlementProof::build(node.msb_mut(), &hash) {
        Ok(proof) => Ok(Some(details(
            &proof.op,
            &proof.receipt,
            proof.checkpoint.body.height,
        ))),
        Err(ProofError::NotApplied(_)) | Err(ProofError::NotFinal(_)) => Ok(None),
        Err(ProofError::Ledger(e)) => Err(internal(e)),
    }
}

async fn tx(State(state): State<Shared>, Path(hash): Path<String>) -> ApiResult {
    let hash = tx_hash(&hash)?;
    let found = state
        .node
        .run(move |node: &mut Node| final_details(node, hash))
        .await??;
    match found {
        Some(details) => Ok(axum::Json(json!({ "txDetails": details }))),
        None => Err(ApiError::not_found(format!(
            "Transaction {hash} not found."
        ))),
    }
}

async fn tx_details(
    State(state): State<Shared>,
    Path(hash): Path<String>,
    Query(q): Query<Confirmed>,
) -> ApiResult {
    let hash = tx_hash(&hash)?;
    let confirmed = confirmed_param(q.confirmed.as_deref(), true)?;
    let (found, pending) = state
        .node
        .run(move |node: &mut Node| -> Result<_, ApiError> {
            let found = final_details(node, hash)?;
            // Applied in the latest view but not final yet: the replay guard holds it.
            let pending = found.is_none()
                && !confirmed
                && node
                    .msb_mut()
                    .read(false, |s| s.get(&crate::msb::keys::tx(&hash)))
                    .map_err(internal)?
                    .map_err(internal)?
                    .is_some();
            Ok((found, pending))
        })
        .await??;
    match (found, pending) {
        (Some(details), _) => Ok(axum::Json(json!({
            "fee": details["fee"].clone(),
            "confirmed_length": details["confirmed_length"].clone(),
            "txDetails": details,
        }))),
        (None, true) => Ok(axum::Json(json!({
            "txDetails": { "hash": hash.to_hex(), "status": "pending" },
            "confirmed_length": 0,
            "fee": "0",
        }))),
        (None, false) => Err(ApiError::not_found(format!(
            "No payload found for tx hash: {hash}"
        ))),
    }
}

async fn tx_hashes(
    State(state): State<Shared>,
    Path((start, end)): Path<(String, String)>,
) -> ApiResult {
    let parse = |text: &str| {
        text.parse::<i128>()
            .map_err(|_| ApiError::bad_request("Params must be integer."))
    };
    let (start, end) = (parse(&start)?, parse(&end)?);
    if start < 0 || end < 0 {
        return Err(ApiError::bad_request("Params must be non-negative."));
    }
    if end < start {
        return Err(ApiError::bad_request(
            "end must be greater than or equal to start.",
        ));
    }
    if end - start > MAX_HASH_RANGE as i128 {
        return Err(ApiError::bad_request(format!(
            "The max range is {MAX_HASH_RANGE}."
        )));
    }
    let (start, end) = (
        u64::try_from(start).map_err(|_| ApiError::bad_request("Params too large."))?,
        u64::try_from(end).map_err(|_| ApiError::bad_request("Params too large."))?,
    );
    let hashes = state
        .node
        .run(move |node: &mut Node| -> Result<Vec<Json>, ApiError> {
            let ledger = node.msb_mut();
            let last = ledger.status().final_height;
            let mut out = Vec::new();
            for height in start.max(1)..end.min(last.saturating_add(1)) {
                for bytes in ledger.receipts(height).map_err(internal)? {
                    let receipt: Receipt = codec::decode(&bytes).map_err(internal)?;
                    out.push(json!({
                        "hash": receipt.tx_hash.to_hex(),
                        "confirmed_length": height,
                    }));
                }
            }
            Ok(out)
        })
        .await??;
    Ok(axum::Json(json!({ "hashes": hashes })))
}

async fn broadcast(
    State(state): State<Shared>,
    client: Client,
    JsonBody(body): JsonBody,
) -> ApiResult {
    state.limit(&client.0)?;
    let payload = body
        .get("payload")
        .ok_or_else(|| ApiError::bad_request("Payload is missing."))?
        .as_str()
        .ok_or_else(|| ApiError::bad_request("Payload must be a valid base64 string."))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|_| ApiError::bad_request("Payload must be a valid base64 string."))?;
    let partial: PartialOp = codec::decode(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid payload structure: expected a signed user op (PartialOp): {e}"
        ))
    })?;
    let submission = state
        .node
        .run(move |node: &mut Node| -> Result<_, ApiError> {
            let tx = partial.body.tx_hash(&node.msb_id());
            crate::crypto::verify_hash(&partial.body.requester, &tx, &partial.requester_sig)
                .map_err(|_| {
                    ApiError::bad_request(
                        "Invalid transaction payload: the requester's signature does not verify.",
                    )
                })?;
            Ok(node.submit_user_op(partial))
        })
        .await??;
    let result = match submission {
        Submission::Done(Ok(tx)) => Ok(tx),
        Submission::Done(Err(SubmitError::Rejected(rejection))) => Err(Some(rejection)),
        Submission::Done(Err(SubmitError::Node(e))) => return Err(internal(e)),
        Submission::Forwarded(outcome) => outcome
            .await
            .map_err(|_| ApiError::from(crate::node::runner::NodeStopped))?,
    };
    let tx = match result {
        Ok(tx) => tx,
        Err(Some(rejection)) => {
            return Err(ApiError::bad_request(format!(
                "Invalid transaction payload: {rejection}"
            )));
        }
        Err(None) => {
            return Err(super::ApiError::unavailable(
                "Failed to broadcast the transaction: no MSB validator is reachable now; retry later.",
            ));
        }
    };
    let (signed, unsigned) = state
        .node
        .run(|node: &mut Node| {
            let status = node.msb_mut().status();
            (status.final_height, status.latest_height)
        })
        .await?;
    Ok(axum::Json(json!({
        "result": {
            "message": "Transaction broadcasted successfully.",
            "tx": tx.to_hex(),
            "signedLength": signed,
            "unsignedLength": unsigned,
        }
    })))
}
