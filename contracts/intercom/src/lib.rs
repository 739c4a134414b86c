//! Intercom, the reference Trac app (the contract and protocol of the JavaScript Intercom,
//! re-created deterministically).
//!
//! Transactions and queries: `storeSomething`, `submitSomething`, `readSnapshot`,
//! `readChatLast`, `readTimer`, `readKey`, `getSampleData`; the `timer` feature (key
//! `currentTime`); a chat-message hook keeping `chat_last`; the command mapping of the
//! reference (`something`, `read_snapshot`, `read_chat_last`, `read_timer` and the JSON `op`
//! forms); the terminal command `/print --text <t>`.

use serde::{Deserialize, Serialize};
use trac_sdk::prelude::*;

/// Intercom.
pub struct Intercom;

/// Arguments of `submitSomething`: exactly `op` and `some_key`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitSomething {
    /// The operation name (`do_something` from the command form).
    #[schemars(length(min = 1, max = 128))]
    pub op: String,
    /// The value to record for the sender.
    #[schemars(length(min = 1, max = 128))]
    pub some_key: String,
}

impl Args for SubmitSomething {
    fn validate(&self) -> Result<(), String> {
        check_len("op", &self.op, 1, 128)?;
        check_len("some_key", &self.some_key, 1, 128)
    }
}

/// Arguments of `readKey`: exactly `op` and `key`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadKey {
    /// The operation name (`read_key` from the command form).
    #[schemars(length(min = 1, max = 128))]
    pub op: String,
    /// The state key to read.
    #[schemars(length(min = 1, max = 256))]
    pub key: String,
}

impl Args for ReadKey {
    fn validate(&self) -> Result<(), String> {
        check_len("op", &self.op, 1, 128)?;
        check_len("key", &self.key, 1, 256)
    }
}

/// What `submitSomething` records and returns.
#[derive(Debug, Clone, Serialize)]
struct Submission {
    op: String,
    some_key: String,
    timestamp: u64,
    submitted_by: String,
}

/// The last chat message, as kept under `chat_last`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChatLast {
    msg: String,
    address: Option<String>,
    at: Option<u64>,
}

/// What `readSnapshot` returns.
#[derive(Debug, Clone, Serialize)]
struct Snapshot {
    something: Option<String>,
    #[serde(rename = "currentTime")]
    current_time: Option<u64>,
    msgl: u64,
    msg0: Option<rmpv::Value>,
    msg1: Option<rmpv::Value>,
}

/// A stored value as it is: MessagePack decoded when it is MessagePack, else the raw bytes.
fn read_any(ctx: &Ctx, key: &str) -> Result<Option<rmpv::Value>, Error> {
    Ok(ctx.get_raw(key)?.map(|bytes| {
        let mut reader = bytes.as_slice();
        match rmpv::decode::read_value_with_max_depth(&mut reader, 64) {
            Ok(value) if reader.is_empty() => value,
            _ => rmpv::Value::Binary(bytes.clone()),
        }
    }))
}

/// A value for the log: JSON-like text, or `null`.
fn show(value: &Option<rmpv::Value>) -> String {
    value
        .as_ref()
        .map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn read_snapshot(ctx: &Ctx, (): ()) -> Result<Snapshot, Error> {
    let snapshot = Snapshot {
        something: ctx.get("something")?,
        current_time: ctx.get("currentTime")?,
        msgl: ctx.get("msgl").ok().flatten().unwrap_or(0),
        msg0: read_any(ctx, "msg/0")?,
        msg1: read_any(ctx, "msg/1")?,
    };
    ctx.log(&format!("snapshot {snapshot:?}"));
    Ok(snapshot)
}

fn read_chat_last(ctx: &Ctx, (): ()) -> Result<Option<rmpv::Value>, Error> {
    let value = read_any(ctx, "chat_last")?;
    ctx.log(&format!("chat_last: {}", show(&value)));
    Ok(value)
}

fn read_timer(ctx: &Ctx, (): ()) -> Result<Option<u64>, Error> {
    let value: Option<u64> = ctx.get("currentTime")?;
    ctx.log(&format!("currentTime: {value:?}"));
    Ok(value)
}

fn read_key(ctx: &Ctx, args: ReadKey) -> Result<Option<rmpv::Value>, Error> {
    let value = read_any(ctx, &args.key)?;
    ctx.log(&format!("readKey {}: {}", args.key, show(&value)));
    Ok(value)
}

impl Contract for Intercom {
    const NAME: &'static str = "intercom";
    const VERSION: &'static str = "0.1.0";

    fn register(r: &mut Registry) {
        r.tx(
            "storeSomething",
            "Writes `something` = \"there is something\" unless it is already set",
            |ctx, (): ()| {
                let existing: Option<String> = ctx.get("something")?;
                ctx.log(&format!("is there already something? {existing:?}"));
                if existing.is_none() {
                    ctx.put("something", "there is something")?;
                }
                Ok(existing)
            },
        );
        r.tx(
            "submitSomething",
            "Records `some_key` for the sender under submitted_by/<sender public key>",
            |ctx, args: SubmitSomething| {
                let submission = Submission {
                    op: args.op,
                    some_key: args.some_key,
                    timestamp: ctx.time(),
                    submitted_by: ctx.sender_address(),
                };
                ctx.put(
                    format!("submitted_by/{}", ctx.sender_hex()),
                    &submission.some_key,
                )?;
                ctx.log(&format!(
                    "submitted by {} {submission:?}",
                    submission.submitted_by
                ));
                ctx.emit("submitted", &submission)?;
                Ok(submission)
            },
        );
        r.both(
            "readSnapshot",
            "Shows something, currentTime, the chat length and the first two messages",
            read_snapshot,
        );
        r.both("readChatLast", "Shows the last chat message", read_chat_last);
        r.both("readTimer", "Shows the timer's currentTime", read_timer);
        r.both("readKey", "Shows the value of any state key", read_key);
        r.query(
            "getSampleData",
            "Returns a sample string",
            |_ctx, (): ()| Ok("Some sample data"),
        );
        r.feature(
            "timer",
            "Timer feature: entries with key currentTime set the app's clock (milliseconds)",
            |ctx, key, value: u64| {
                if key != "currentTime" {
                    return Err(Error::invalid_args(format!(
                        "timer: unknown key {key:?} (expected currentTime)"
                    )));
                }
                let previous: Option<u64> = ctx.get("currentTime")?;
                if previous.is_none() {
                    ctx.log(&format!("timer started at {value}"));
                }
                ctx.put("currentTime", &value)
            },
        );
        r.command(
            "/print",
            "/print --text <t>",
            "Prints the text",
            |_ctx, flags| match flags.get("text") {
                Some(text) => Ok(text.to_string()),
                None => Err("Usage: /print --text <t>".to_string()),
            },
        );
    }

    fn map_command(command: &str) -> Result<Option<Call>, String> {
        if let Some(json) = trac_sdk::protocol::json_command(command)? {
            let op = json.get("op").and_then(|op| op.as_str()).unwrap_or_default();
            return Ok(match op {
                "do_something" => Some(Call::with_args("submitSomething", &json)?),
                "read_key" => Some(Call::with_args("readKey", &json)?),
                "read_chat_last" => Some(Call::no_args("readChatLast")),
                "read_timer" => Some(Call::no_args("readTimer")),
                _ => None,
            });
        }
        Ok(match command.trim() {
            "something" => Some(Call::no_args("storeSomething")),
            "read_snapshot" => Some(Call::no_args("readSnapshot")),
            "read_chat_last" => Some(Call::no_args("readChatLast")),
            "read_timer" => Some(Call::no_args("readTimer")),
            _ => None,
        })
    }

    fn on_message(ctx: &mut Ctx, message: &Message) -> Result<(), Error> {
        ctx.log(&format!("message triggered contract {message:?}"));
        if !message.text.is_empty() {
            let last = ChatLast {
                msg: message.text.clone(),
                address: Some(trac_sdk::address(&message.author)),
                at: ctx.get("currentTime")?,
            };
            ctx.put("chat_last", &last)?;
        }
        Ok(())
    }
}

trac_sdk::export_contract!(Intercom);
