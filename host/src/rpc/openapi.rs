//! `GET /v1/openapi.json`: the OpenAPI 3.0 document of every route, built from [`ROUTES`]
//! (the tests check that the document, this table and the router agree).

use axum::Router;
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::Shared;

/// A documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// `get` or `post`.
    pub method: &'static str,
    /// The path, with `{param}` segments.
    pub path: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Query parameters: `(name, required, description)`.
    pub query: &'static [(&'static str, bool, &'static str)],
    /// Whether it takes a JSON body.
    pub body: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, bool, &'static str)],
    body: bool,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        query,
        body,
    }
}

const CONFIRMED: (&str, bool, &str) = (
    "confirmed",
    false,
    "true (default): the final state; false: the latest verified state",
);

/// Every route the RPC serves.
pub const ROUTES: &[RouteDoc] = &[
    route("get", "/v1/health", "Liveness: {ok: true}", &[], false),
    route(
        "get",
        "/v1/status",
        "The peer's keys, roles, subnet and MSB heights, roots and ids",
        &[],
        false,
    ),
    route(
        "get",
        "/v1/state",
        "A subnet state value: {key, confirmed, value}",
        &[("key", true, "the state key"), CONFIRMED],
        false,
    ),
    route(
        "get",
        "/v1/contract/schema",
        "The active contract's functions, their kinds and argument schemas (JSON Schema)",
        &[],
        false,
    ),
    route(
        "get",
        "/v1/contract/nonce",
        "A fresh nonce for a wallet transaction",
        &[],
        false,
    ),
    route(
        "get",
        "/v1/contract/tx/context",
        "The ids and MSB heights a wallet transaction through this peer is built with",
        &[],
        false,
    ),
    route(
        "post",
        "/v1/contract/tx/prepare",
        "The exact bytes a wallet signs for a call: {tx, sign, preimage, body}",
        &[],
        true,
    ),
    route(
        "post",
        "/v1/contract/tx",
        "Simulate a call (sim: true) or submit a wallet-signed transaction",
        &[],
        true,
    ),
    route(
        "get",
        "/v1/contract/query",
        "Run a read-only contract query",
        &[
            ("name", true, "the query function"),
            ("args", false, "its arguments as JSON text (default null)"),
            CONFIRMED,
        ],
        false,
    ),
    route(
        "get",
        "/v1/balance/{address}",
        "An MSB balance in base units",
        &[CONFIRMED],
        false,
    ),
    route(
        "get",
        "/v1/account/{address}",
        "An MSB account: roles, balance and stake",
        &[CONFIRMED],
        false,
    ),
    route("get", "/v1/fee", "The MSB fee in base units", &[], false),
    route(
        "get",
        "/v1/confirmed-length",
        "The final MSB checkpoint height",
        &[],
        false,
    ),
    route(
        "get",
        "/v1/unconfirmed-length",
        "The latest verified MSB checkpoint height",
        &[],
        false,
    ),
    route(
        "get",
        "/v1/tx/{hash}",
        "A final MSB transaction by hash",
        &[],
        false,
    ),
    route(
        "get",
        "/v1/tx/details/{hash}",
        "An MSB transaction by hash, with its height and fee (pending ones with confirmed=false)",
        &[CONFIRMED],
        false,
    ),
    route(
        "get",
        "/v1/tx-hashes/{start}/{end}",
        "The hashes of the MSB transactions final at heights start..end (at most 1000 heights)",
        &[],
        false,
    ),
    route(
        "post",
        "/v1/broadcast-transaction",
        "Submit a signed MSB user op: {payload: base64(PartialOp)}",
        &[],
        true,
    ),
    route("get", "/v1/openapi.json", "This document", &[], false),
];

/// The route of this module.
pub fn routes() -> Router<Shared> {
    Router::new().route("/v1/openapi.json", get(|| async { axum::Json(document()) }))
}

/// The OpenAPI 3.0 document of [`ROUTES`].
pub fn document() -> Json {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut parameters: Vec<Json> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "schema": { "type": "string" },
                })
            })
            .collect();
        parameters.extend(r.query.iter().map(|(name, required, description)| {
            json!({
                "name": name,
                "in": "query",
                "required": required,
                "description": description,
                "schema": { "type": "string" },
            })
        }));
        let mut operation = json!({
            "summary": r.summary,
            "operationId": operation_id(r),
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "Success",
                    "content": { "application/json": { "schema": { "type": "object" } } },
                },
                "400": { "description": "A client mistake", "content": { "application/json": { "schema": error } } },
                "404": { "description": "Not found", "content": { "application/json": { "schema": error } } },
                "429": { "description": "Rate limited", "content": { "application/json": { "schema": error } } },
                "500": { "description": "A fault of the node", "content": { "application/json": { "schema": error } } },
            },
        });
        if r.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "type": "object" } } },
            });
            operation["responses"]["413"] = json!({ "description": "Body too large", "content": { "application/json": { "schema": error } } });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "trac node RPC",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP RPC of a trac node: the subnet peer's routes, the wallet flow and the MSB API. Errors are {\"error\": message}.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "string" } },
                }
            }
        },
    })
}

/// `get_v1_contract_tx_context`-style ids.
fn operation_id(r: &RouteDoc) -> String {
    let path: String = r
        .path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{}{}", r.method, path.trim_end_matches('_')).replace("__", "_")
}
