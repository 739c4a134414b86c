//! The SC-Bridge's messages: client requests parsed from JSON text ([`parse`]) and the server's
//! replies and events built as JSON objects (docs/bridge.md lists them all).

use serde_json::{Map, Value, json};

use crate::node::sidechannel::ScNotice;
use crate::sidechannel::{Delivery, OpenOutcome};

/// `Invalid JSON.`: the frame is not JSON.
pub const INVALID_JSON: &str = "Invalid JSON.";
/// `Invalid message.`: the JSON is not an object.
pub const INVALID_MESSAGE: &str = "Invalid message.";
/// `Unauthorized.`: a wrong token, or a request before `auth_ok`.
pub const UNAUTHORIZED: &str = "Unauthorized.";
/// `Missing channel.`
pub const MISSING_CHANNEL: &str = "Missing channel.";
/// `Missing command.`
pub const MISSING_COMMAND: &str = "Missing command.";
/// `CLI over WS is disabled.`
pub const CLI_DISABLED: &str = "CLI over WS is disabled.";
/// `Sidechannel not ready.`
pub const NOT_READY: &str = "Sidechannel not ready.";
/// `Too many failed auth attempts.` (then the connection closes).
pub const TOO_MANY_FAILURES: &str = "Too many failed auth attempts.";
/// `Auth timeout.` (then the connection closes).
pub const AUTH_TIMEOUT: &str = "Auth timeout.";
/// `Binary frames are not supported.`
pub const BINARY: &str = "Binary frames are not supported.";
/// `Invalid invite (expected the base64 text of /sc_invite).`
pub const INVALID_INVITE: &str = "Invalid invite (expected the base64 text of /sc_invite).";
/// `Invalid welcome (expected the base64 text of /sc_welcome).`
pub const INVALID_WELCOME: &str = "Invalid welcome (expected the base64 text of /sc_welcome).";
/// `Invalid owner (expected a 64-hex-digit key).`
pub const INVALID_OWNER: &str = "Invalid owner (expected a 64-hex-digit key).";

/// A client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `auth {token}`.
    Auth {
        /// The token given (empty when absent or not a string).
        token: String,
    },
    /// `ping`.
    Ping,
    /// `set_filter {filter}`.
    SetFilter {
        /// The filter text (empty when absent).
        filter: String,
    },
    /// `clear_filter`.
    ClearFilter,
    /// `subscribe {channels | channel}`.
    Subscribe {
        /// The channel names (trimmed, non-empty).
        channels: Vec<String>,
    },
    /// `unsubscribe {channels | channel}`.
    Unsubscribe {
        /// The channel names (trimmed, non-empty).
        channels: Vec<String>,
    },
    /// `send {channel, message, invite?, welcome?}`.
    Send {
        /// The channel (trimmed; empty when missing).
        channel: String,
        /// The message (any JSON value; `null` when absent).
        message: Value,
        /// An invite, as given.
        invite: Option<Value>,
        /// A welcome, as given.
        welcome: Option<Value>,
    },
    /// `join {channel, invite?, welcome?, owner?}`.
    Join {
        /// The channel.
        channel: String,
        /// An invite, as given.
        invite: Option<Value>,
        /// A welcome, as given.
        welcome: Option<Value>,
        /// The channel's owner key, as given (hex).
        owner: Option<Value>,
    },
    /// `leave {channel}`.
    Leave {
        /// The channel.
        channel: String,
    },
    /// `open {channel, via?, invite?, welcome?}`.
    Open {
        /// The channel to ask the neighbours to join.
        channel: String,
        /// The channel to ask on (default: the entry channel).
        via: Option<String>,
        /// An invite, as given.
        invite: Option<Value>,
        /// A welcome, as given.
        welcome: Option<Value>,
    },
    /// `stats`.
    Stats,
    /// `info`.
    Info,
    /// `cli {command}`.
    Cli {
        /// The terminal line (empty when missing).
        command: String,
    },
    /// Any other `type` (or none: the empty string).
    Unknown(String),
}

/// A parsed request with its `id` (echoed on every reply when it is an integer).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The integer `id`, if any.
    pub id: Option<i64>,
    /// The request.
    pub request: Request,
}

/// Parses one text frame. Errors are [`INVALID_JSON`] or [`INVALID_MESSAGE`] (replied without
/// an id).
pub fn parse(text: &str) -> Result<Parsed, &'static str> {
    let value: Value = serde_json::from_str(text).map_err(|_| INVALID_JSON)?;
    let Value::Object(object) = value else {
        return Err(INVALID_MESSAGE);
    };
    let id = object.get("id").and_then(Value::as_i64);
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
    let text_of = |key: &str| object.get(key).map(text_field).unwrap_or_default();
    let optional = |key: &str| object.get(key).filter(|v| !v.is_null()).cloned();
    let request = match kind {
        "auth" => Request::Auth {
            token: object
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        },
        "ping" => Request::Ping,
        "set_filter" => Request::SetFilter {
            filter: object
                .get("filter")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        },
        "clear_filter" => Request::ClearFilter,
        "subscribe" => Request::Subscribe {
            channels: channel_list(&object),
        },
        "unsubscribe" => Request::Unsubscribe {
            channels: channel_list(&object),
        },
        "send" => Request::Send {
            channel: text_of("channel"),
            message: object.get("message").cloned().unwrap_or(Value::Null),
            invite: optional("invite"),
            welcome: optional("welcome"),
        },
        "join" => Request::Join {
            channel: text_of("channel"),
            invite: optional("invite"),
            welcome: optional("welcome"),
            owner: optional("owner"),
        },
        "leave" => Request::Leave {
            channel: text_of("channel"),
        },
        "open" => Request::Open {
            channel: text_of("channel"),
            via: Some(text_of("via")).filter(|v| !v.is_empty()),
            invite: optional("invite"),
            welcome: optional("welcome"),
        },
        "stats" => Request::Stats,
        "info" => Request::Info,
        "cli" => Request::Cli {
            command: object
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string(),
        },
        other => Request::Unknown(other.to_string()),
    };
    Ok(Parsed { id, request })
}

/// A field converted to text and trimmed (strings as they are, numbers and booleans as their
/// JSON; `null` and containers give nothing).
fn text_field(value: &Value) -> String {
    match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// `channels` (an array) or `channel`, trimmed, empty names dropped.
fn channel_list(object: &Map<String, Value>) -> Vec<String> {
    let values: Vec<&Value> = match object.get("channels") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) if !other.is_null() => vec![other],
        _ => object.get("channel").into_iter().collect(),
    };
    values
        .into_iter()
        .map(text_field)
        .filter(|c| !c.is_empty())
        .collect()
}

/// Reads an invite or welcome given as base64 text (the form `/sc_invite` and `/sc_welcome`
/// print, optionally prefixed with `b64:`), or as an object `{"b64": "<text>"}`.
pub fn blob_text(value: &Value) -> Option<&str> {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("b64")?.as_str()?,
        _ => return None,
    };
    let text = text.trim();
    Some(text.strip_prefix("b64:").unwrap_or(text))
}

/// A reply of `kind` with `fields`, carrying `id` when given.
pub fn reply(kind: &str, id: Option<i64>, fields: Value) -> Value {
    let mut object = Map::new();
    if let Some(id) = id {
        object.insert("id".into(), json!(id));
    }
    object.insert("type".into(), json!(kind));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Value::Object(object)
}

/// `{id?, type: "error", error}`.
pub fn error(id: Option<i64>, message: &str) -> Value {
    reply("error", id, json!({ "error": message }))
}

/// The text a filter is matched against: a JSON string as its content, anything else as its
/// JSON text.
pub fn message_text(message_json: &str) -> String {
    match serde_json::from_str::<Value>(message_json) {
        Ok(Value::String(s)) => s,
        _ => message_json.to_string(),
    }
}

/// `sidechannel_message` for a delivery.
pub fn message_event(delivery: &Delivery) -> Value {
    let message: Value = serde_json::from_str(&delivery.message).unwrap_or(Value::Null);
    json!({
        "type": "sidechannel_message",
        "channel": delivery.channel,
        "id": delivery.id,
        "from": delivery.from.to_hex(),
        "origin": delivery.from.to_hex(),
        "sig": hex::encode(delivery.sig.0),
        "relayedBy": delivery.relayed_by.map(|k| k.to_hex()),
        "ttl": delivery.ttl,
        "ts": delivery.ts,
        "message": message,
        "verified": delivery.verified,
    })
}

/// `sidechannel_event` for a notice other than a message.
pub fn notice_event(notice: &ScNotice) -> Option<Value> {
    let event = match notice {
        ScNotice::Message(_) => return None,
        ScNotice::Joined { channel } => json!({ "event": "joined", "channel": channel }),
        ScNotice::Left { channel } => json!({ "event": "left", "channel": channel }),
        ScNotice::OpenRequest {
            via,
            channel,
            from,
            outcome,
        } => {
            let (outcome, reason) = match outcome {
                OpenOutcome::Accepted { auto_joined: true } => ("auto_joined", None),
                OpenOutcome::Accepted { auto_joined: false } => ("accepted", None),
                OpenOutcome::Denied(reason) => ("denied", Some(reason.clone())),
                OpenOutcome::Ignored => ("ignored", None),
            };
            json!({
                "event": "open_request",
                "channel": channel,
                "via": via,
                "from": from.to_hex(),
                "outcome": outcome,
                "reason": reason,
            })
        }
        ScNotice::PeerConnected(key) => json!({ "event": "peer_connected", "peer": key.to_hex() }),
        ScNotice::PeerDisconnected(key) => {
            json!({ "event": "peer_disconnected", "peer": key.to_hex() })
        }
    };
    Some(reply("sidechannel_event", None, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames() {
        assert_eq!(parse("{").unwrap_err(), INVALID_JSON);
        assert_eq!(parse("[1]").unwrap_err(), INVALID_MESSAGE);
        assert_eq!(parse("null").unwrap_err(), INVALID_MESSAGE);
        assert_eq!(parse("\"auth\"").unwrap_err(), INVALID_MESSAGE);
    }

    #[test]
    fn ids_are_integers_only() {
        assert_eq!(parse(r#"{"type":"ping","id":7}"#).unwrap().id, Some(7));
        assert_eq!(parse(r#"{"type":"ping","id":"7"}"#).unwrap().id, None);
        assert_eq!(parse(r#"{"type":"ping","id":7.5}"#).unwrap().id, None);
    }

    #[test]
    fn fields_are_text_and_trimmed() {
        let parsed = parse(r#"{"type":"join","channel":"  news  "}"#).unwrap();
        assert_eq!(
            parsed.request,
            Request::Join {
                channel: "news".into(),
                invite: None,
                welcome: None,
                owner: None
            }
        );
        let parsed = parse(r#"{"type":"leave","channel":42}"#).unwrap();
        assert_eq!(
            parsed.request,
            Request::Leave {
                channel: "42".into()
            }
        );
        let parsed = parse(r#"{"type":"subscribe","channels":[" a ","",3]}"#).unwrap();
        assert_eq!(
            parsed.request,
            Request::Subscribe {
                channels: vec!["a".into(), "3".into()]
            }
        );
        let parsed = parse(r#"{"type":"unsubscribe","channel":"b"}"#).unwrap();
        assert_eq!(
            parsed.request,
            Request::Unsubscribe {
                channels: vec!["b".into()]
            }
        );
        let parsed = parse(r#"{"type":"nope"}"#).unwrap();
        assert_eq!(parsed.request, Request::Unknown("nope".into()));
        let parsed = parse(r#"{}"#).unwrap();
        assert_eq!(parsed.request, Request::Unknown(String::new()));
    }

    #[test]
    fn replies_carry_the_id() {
        let r = reply("sent", Some(3), json!({"channel": "c"}));
        assert_eq!(r, json!({"id": 3, "type": "sent", "channel": "c"}));
        assert_eq!(
            error(None, UNAUTHORIZED),
            json!({"type": "error", "error": "Unauthorized."})
        );
    }

    #[test]
    fn blobs() {
        assert_eq!(blob_text(&json!(" b64:QUJD ")), Some("QUJD"));
        assert_eq!(blob_text(&json!({"b64": "QUJD"})), Some("QUJD"));
        assert_eq!(blob_text(&json!(5)), None);
    }
}
