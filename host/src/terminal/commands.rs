//! The built-in terminal commands: names, usage lines, typed arguments and the help text.
//!
//! Names are matched exactly (`/txfoo` is not `/tx`); a line whose first token is not a
//! built-in becomes [`Command::App`] for the app's run-command. Flags follow
//! [`parse`](super::parse); unknown flags, missing or malformed values and stray arguments are
//! errors that carry the command's usage line.
//!
//! Booleans are `1`/`0`/`true`/`false` (a bare flag means true). Keys are 64 hex digits or a
//! `trac1…` address and must be valid Ed25519 public keys. Amounts are TNK with up to 18
//! decimals.
//!
//! MSB commands that would clash with subnet commands of the reference (`/add_indexer`,
//! `/remove_indexer`, `/add_writer`, `/remove_writer`, which the reference MSB CLI also uses)
//! carry an `msb_` prefix, and so do the other MSB admin commands for consistency:
//! `/msb_add_whitelist` (the reference MSB's `/add_whitelist`), `/msb_add_indexer`,
//! `/msb_remove_indexer`, `/msb_remove_validator` (the reference MSB's `/ban_writer`), and the
//! self-service `/msb_join_validators` / `/msb_leave_validators` (the reference MSB's
//! `/add_writer` / `/remove_writer`).

use std::fmt;
use std::path::PathBuf;

use super::parse::Line;
use super::sanitize::sanitize;
use crate::crypto::{PublicKey, decode_address};
use crate::msb::ops::parse_amount;

/// A built-in command's name, usage line, help text and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The exact name, with its slash.
    pub name: &'static str,
    /// One usage line.
    pub usage: &'static str,
    /// What it does.
    pub help: &'static str,
    /// The flags it accepts.
    pub flags: &'static [&'static str],
    /// The help section it is listed under.
    pub section: &'static str,
}

const SUBNET_ADMIN: &str = "Subnet administration";
const CHAT: &str = "Chat";
const CONTRACT: &str = "Transactions and state";
const MSB: &str = "Settlement layer (MSB)";
const MSB_ADMIN: &str = "MSB administration (prefixed msb_: /add_indexer etc. are the subnet's)";
const SIDECHANNELS: &str = "Sidechannels";
const NODE: &str = "Node";

const fn spec(
    section: &'static str,
    name: &'static str,
    usage: &'static str,
    help: &'static str,
    flags: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        usage,
        help,
        flags,
        section,
    }
}

/// Every built-in command, in help order.
pub const BUILTINS: &[Spec] = &[
    spec(
        SUBNET_ADMIN,
        "/add_admin",
        "/add_admin --address <hex64|trac1…>",
        "Sets the subnet admin (once, from the subnet's bootstrap writer).",
        &["address"],
    ),
    spec(
        SUBNET_ADMIN,
        "/update_admin",
        "/update_admin --address <hex64|trac1…|null>",
        "Hands the admin role to another key (null gives it up for good).",
        &["address"],
    ),
    spec(
        SUBNET_ADMIN,
        "/add_writer",
        "/add_writer --key <hex64|trac1…>",
        "Admin: adds a subnet writer.",
        &["key"],
    ),
    spec(
        SUBNET_ADMIN,
        "/add_indexer",
        "/add_indexer --key <hex64|trac1…>",
        "Admin: adds a subnet indexer (also a writer).",
        &["key"],
    ),
    spec(
        SUBNET_ADMIN,
        "/remove_writer",
        "/remove_writer --key <hex64|trac1…>",
        "Admin: removes a subnet writer or indexer.",
        &["key"],
    ),
    spec(
        SUBNET_ADMIN,
        "/remove_indexer",
        "/remove_indexer --key <hex64|trac1…>",
        "Admin: demotes a subnet indexer to a writer.",
        &["key"],
    ),
    spec(
        SUBNET_ADMIN,
        "/set_auto_add_writers",
        "/set_auto_add_writers --enabled <1|0>",
        "Admin: lets peers that ask become writers automatically, or not.",
        &["enabled"],
    ),
    spec(
        SUBNET_ADMIN,
        "/enable_transactions",
        "/enable_transactions --enabled <1|0>",
        "Admin: enables or disables contract transactions.",
        &["enabled"],
    ),
    spec(
        CHAT,
        "/set_chat_status",
        "/set_chat_status --enabled <1|0>",
        "Admin: turns chat on or off.",
        &["enabled"],
    ),
    spec(
        CHAT,
        "/post",
        "/post --message \"<text>\" [--reply_to <n>]",
        "Posts a chat message (chat must be on).",
        &["message", "reply_to"],
    ),
    spec(
        CHAT,
        "/set_nick",
        "/set_nick --nick \"<nick>\" [--user <hex64|trac1…>]",
        "Sets your nick, or another user's (admin or moderator).",
        &["nick", "user"],
    ),
    spec(
        CHAT,
        "/mute_status",
        "/mute_status --user <hex64|trac1…> --muted <1|0>",
        "Admin or moderator: mutes or unmutes a user.",
        &["user", "muted"],
    ),
    spec(
        CHAT,
        "/set_mod",
        "/set_mod --user <hex64|trac1…> --mod <1|0>",
        "Admin: makes a user a moderator or not.",
        &["user", "mod"],
    ),
    spec(
        CHAT,
        "/delete_message",
        "/delete_message --id <n>",
        "Deletes a message (its author, a moderator or the admin).",
        &["id"],
    ),
    spec(
        CHAT,
        "/pin_message",
        "/pin_message --id <n> [--pin <1|0>]",
        "Admin or moderator: pins (default) or unpins a message.",
        &["id", "pin"],
    ),
    spec(
        CHAT,
        "/unpin_message",
        "/unpin_message --pin_id <n>",
        "Admin or moderator: unpins by pin slot.",
        &["pin_id"],
    ),
    spec(
        CHAT,
        "/enable_whitelist",
        "/enable_whitelist --enabled <1|0>",
        "Admin: restricts posting to whitelisted users, or not.",
        &["enabled"],
    ),
    spec(
        CHAT,
        "/set_whitelist_status",
        "/set_whitelist_status --user <hex64|trac1…> --status <1|0>",
        "Admin: whitelists a user or not.",
        &["user", "status"],
    ),
    spec(
        CONTRACT,
        "/tx",
        "/tx --command \"<command>\" [--sim <1|0>]",
        "Runs a contract transaction (settled on MSB); --sim only simulates it.",
        &["command", "sim"],
    ),
    spec(
        CONTRACT,
        "/get",
        "/get --key \"<key>\" [--confirmed <true|false>] [--unconfirmed]",
        "Prints a state value (confirmed state by default).",
        &["key", "confirmed", "unconfirmed"],
    ),
    spec(
        CONTRACT,
        "/deploy_contract",
        "/deploy_contract --file <path.wasm>",
        "Admin: deploys a contract component to the subnet.",
        &["file"],
    ),
    spec(
        MSB,
        "/deploy_subnet",
        "/deploy_subnet",
        "Registers this subnet on MSB.",
        &[],
    ),
    spec(
        MSB,
        "/msb",
        "/msb",
        "Prints the MSB network, lengths, validators, this peer's address, balance and fee.",
        &[],
    ),
    spec(
        MSB,
        "/transfer",
        "/transfer --to <trac1…|hex64> --amount <TNK>",
        "Sends TNK on MSB (the fee comes on top).",
        &["to", "amount"],
    ),
    spec(
        MSB,
        "/balance",
        "/balance [--address <trac1…|hex64>]",
        "Prints an MSB balance (this peer's by default).",
        &["address"],
    ),
    spec(
        MSB_ADMIN,
        "/msb_add_whitelist",
        "/msb_add_whitelist --address <trac1…|hex64>",
        "MSB admin: whitelists an account (it may then join the validators).",
        &["address"],
    ),
    spec(
        MSB_ADMIN,
        "/msb_join_validators",
        "/msb_join_validators",
        "Joins the MSB validators with this node's MSB key (whitelisted, funded: locks the stake; another validator co-signs).",
        &[],
    ),
    spec(
        MSB_ADMIN,
        "/msb_leave_validators",
        "/msb_leave_validators",
        "This node's MSB key leaves the validators (the stake returns; another validator co-signs).",
        &[],
    ),
    spec(
        MSB_ADMIN,
        "/msb_add_indexer",
        "/msb_add_indexer --address <trac1…|hex64>",
        "MSB admin: makes a validator an MSB indexer.",
        &["address"],
    ),
    spec(
        MSB_ADMIN,
        "/msb_remove_indexer",
        "/msb_remove_indexer --address <trac1…|hex64>",
        "MSB admin: makes an MSB indexer a plain validator again.",
        &["address"],
    ),
    spec(
        MSB_ADMIN,
        "/msb_remove_validator",
        "/msb_remove_validator --address <trac1…|hex64>",
        "MSB admin: removes a validator and its whitelisting.",
        &["address"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_join",
        "/sc_join --channel <name> [--invite <b64|@file>] [--welcome <b64|@file>] [--owner <hex64>]",
        "Joins a sidechannel (with an invite for invite-only channels; --owner sets its owner key).",
        &["channel", "invite", "welcome", "owner"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_open",
        "/sc_open --channel <name> [--via <channel>] [--invite <b64|@file>] [--welcome <b64|@file>]",
        "Asks peers (on the entry channel, or --via) to open a channel.",
        &["channel", "via", "invite", "welcome"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_send",
        "/sc_send --channel <name> --message <text> [--invite <b64|@file>]",
        "Sends a message on a sidechannel (joining it first).",
        &["channel", "message", "invite"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_invite",
        "/sc_invite --channel <name> --pubkey <hex64> [--ttl <sec>]",
        "Invites a peer to an invite-only channel; prints the invite (base64).",
        &["channel", "pubkey", "ttl"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_revoke",
        "/sc_revoke --channel <name> --pubkey <hex64>",
        "Revokes a member of an invite-only channel you own (the channel key rotates).",
        &["channel", "pubkey"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_welcome",
        "/sc_welcome --channel <name> --text <text>",
        "Signs the welcome of a channel you own; prints it (base64).",
        &["channel", "text"],
    ),
    spec(
        SIDECHANNELS,
        "/sc_stats",
        "/sc_stats",
        "Prints the channels, roles, neighbours, traffic and drops per reason.",
        &[],
    ),
    spec(
        SIDECHANNELS,
        "/sc_leave",
        "/sc_leave --channel <name>",
        "Leaves a sidechannel (not the entry channel).",
        &["channel"],
    ),
    spec(
        NODE,
        "/stats",
        "/stats",
        "Prints keys, roles, connections, lengths, the state root and the divergence flag.",
        &[],
    ),
    spec(
        NODE,
        "/get_keys",
        "/get_keys",
        "Prints this peer's address, public key and secret key.",
        &[],
    ),
    spec(NODE, "/help", "/help", "Prints this help.", &[]),
    spec(NODE, "/exit", "/exit", "Stops the node.", &[]),
];

/// The built-in command called `name`, if any (exact match).
pub fn builtin(name: &str) -> Option<&'static Spec> {
    BUILTINS.iter().find(|s| s.name == name)
}

/// A parsed terminal command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/add_admin --address`.
    AddAdmin {
        /// The admin key.
        address: PublicKey,
    },
    /// `/update_admin --address` (`None`: `null`, no admin any more).
    UpdateAdmin {
        /// The new admin.
        address: Option<PublicKey>,
    },
    /// `/add_writer --key`.
    AddWriter {
        /// The writer key.
        key: PublicKey,
    },
    /// `/add_indexer --key`.
    AddIndexer {
        /// The indexer key.
        key: PublicKey,
    },
    /// `/remove_writer --key`.
    RemoveWriter {
        /// The key.
        key: PublicKey,
    },
    /// `/remove_indexer --key`.
    RemoveIndexer {
        /// The key.
        key: PublicKey,
    },
    /// `/set_auto_add_writers --enabled`.
    SetAutoAddWriters {
        /// On or off.
        enabled: bool,
    },
    /// `/enable_transactions --enabled`.
    EnableTransactions {
        /// On or off.
        enabled: bool,
    },
    /// `/set_chat_status --enabled`.
    SetChatStatus {
        /// On or off.
        enabled: bool,
    },
    /// `/post --message [--reply_to]`.
    Post {
        /// The text (not empty).
        message: String,
        /// The message replied to.
        reply_to: Option<u64>,
    },
    /// `/set_nick --nick [--user]`.
    SetNick {
        /// The nick (not empty).
        nick: String,
        /// Whose nick (`None`: this peer's).
        user: Option<PublicKey>,
    },
    /// `/mute_status --user --muted`.
    MuteStatus {
        /// The user.
        user: PublicKey,
        /// Muted or not.
        muted: bool,
    },
    /// `/set_mod --user --mod`.
    SetMod {
        /// The user.
        user: PublicKey,
        /// Moderator or not.
        enabled: bool,
    },
    /// `/delete_message --id`.
    DeleteMessage {
        /// The message number.
        id: u64,
    },
    /// `/pin_message --id [--pin]`.
    PinMessage {
        /// The message number.
        id: u64,
        /// Pinned (default) or not.
        pinned: bool,
    },
    /// `/unpin_message --pin_id`.
    UnpinMessage {
        /// The pin slot.
        pin_id: u64,
    },
    /// `/enable_whitelist --enabled`.
    EnableWhitelist {
        /// On or off.
        enabled: bool,
    },
    /// `/set_whitelist_status --user --status`.
    SetWhitelistStatus {
        /// The user.
        user: PublicKey,
        /// Whitelisted or not.
        status: bool,
    },
    /// `/tx --command [--sim]`.
    Tx {
        /// The command string the app maps to a call (not empty).
        command: String,
        /// Only simulate.
        sim: bool,
    },
    /// `/get --key [--confirmed] [--unconfirmed]`.
    Get {
        /// The state key (not empty).
        key: String,
        /// Read the confirmed state (default) or the latest one.
        confirmed: bool,
    },
    /// `/deploy_contract --file`.
    DeployContract {
        /// The component file (read by the executor).
        file: PathBuf,
    },
    /// `/deploy_subnet`.
    DeploySubnet,
    /// `/msb`.
    Msb,
    /// `/transfer --to --amount`.
    Transfer {
        /// The recipient.
        to: PublicKey,
        /// Base units.
        amount: u128,
    },
    /// `/balance [--address]`.
    Balance {
        /// Whose balance (`None`: this peer's).
        address: Option<PublicKey>,
    },
    /// `/msb_add_whitelist --address`.
    MsbAddWhitelist {
        /// The account.
        address: PublicKey,
    },
    /// `/msb_join_validators`.
    MsbJoinValidators,
    /// `/msb_leave_validators`.
    MsbLeaveValidators,
    /// `/msb_add_indexer --address`.
    MsbAddIndexer {
        /// The validator.
        address: PublicKey,
    },
    /// `/msb_remove_indexer --address`.
    MsbRemoveIndexer {
        /// The indexer.
        address: PublicKey,
    },
    /// `/msb_remove_validator --address`.
    MsbRemoveValidator {
        /// The validator.
        address: PublicKey,
    },
    /// `/sc_join --channel [--invite] [--welcome] [--owner]`.
    ScJoin {
        /// The channel.
        channel: String,
        /// An invite (base64 or `@file`).
        invite: Option<String>,
        /// A welcome (base64 or `@file`).
        welcome: Option<String>,
        /// The channel's owner key.
        owner: Option<PublicKey>,
    },
    /// `/sc_open --channel [--via] [--invite] [--welcome]`.
    ScOpen {
        /// The channel to open.
        channel: String,
        /// The channel the request goes on (default: the entry channel).
        via: Option<String>,
        /// An invite (base64 or `@file`).
        invite: Option<String>,
        /// A welcome (base64 or `@file`).
        welcome: Option<String>,
    },
    /// `/sc_send --channel --message [--invite]`.
    ScSend {
        /// The channel.
        channel: String,
        /// The message text.
        message: String,
        /// An invite to attach (base64 or `@file`).
        invite: Option<String>,
    },
    /// `/sc_invite --channel --pubkey [--ttl]`.
    ScInvite {
        /// The channel.
        channel: String,
        /// The invitee.
        pubkey: PublicKey,
        /// Lifetime in seconds (default: `--sidechannel-invite-ttl`).
        ttl: Option<u64>,
    },
    /// `/sc_revoke --channel --pubkey`.
    ScRevoke {
        /// The channel.
        channel: String,
        /// The member.
        pubkey: PublicKey,
    },
    /// `/sc_welcome --channel --text`.
    ScWelcome {
        /// The channel.
        channel: String,
        /// The welcome text.
        text: String,
    },
    /// `/sc_stats`.
    ScStats,
    /// `/sc_leave --channel`.
    ScLeave {
        /// The channel.
        channel: String,
    },
    /// `/stats`.
    Stats,
    /// `/get_keys`.
    GetKeys,
    /// `/help`.
    Help,
    /// `/exit`.
    Exit,
    /// Not a built-in: for the app's run-command.
    App {
        /// The first token, e.g. `/print`.
        name: String,
        /// The tokens after it, quotes resolved.
        args: Vec<String>,
    },
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// What is wrong.
    pub message: String,
    /// The command's usage line, when the command is known.
    pub usage: Option<&'static str>,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(usage) = self.usage {
            write!(f, "\nUsage: {usage}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandError {}

/// Reads the flags of one built-in command.
struct Flags<'a> {
    spec: &'static Spec,
    line: &'a Line,
}

impl Flags<'_> {
    fn error(&self, message: impl Into<String>) -> CommandError {
        CommandError {
            message: message.into(),
            usage: Some(self.spec.usage),
        }
    }

    /// The value of `--key`; `None` if absent; an error if bare.
    fn value(&self, key: &str) -> Result<Option<&str>, CommandError> {
        match self.line.flag(key) {
            None => Ok(None),
            Some(None) => Err(self.error(format!("--{key} needs a value"))),
            Some(Some(v)) => Ok(Some(v)),
        }
    }

    fn required(&self, key: &str) -> Result<&str, CommandError> {
        self.value(key)?
            .ok_or_else(|| self.error(format!("missing --{key}")))
    }

    fn text(&self, key: &str) -> Result<String, CommandError> {
        let value = self.required(key)?;
        if value.is_empty() {
            return Err(self.error(format!("--{key} must not be empty")));
        }
        Ok(value.to_string())
    }

    fn key(&self, flag: &str, value: &str) -> Result<PublicKey, CommandError> {
        parse_key(value).map_err(|e| self.error(format!("--{flag}: {e}")))
    }

    fn required_key(&self, flag: &str) -> Result<PublicKey, CommandError> {
        let value = self.required(flag)?;
        self.key(flag, value)
    }

    fn optional_key(&self, flag: &str) -> Result<Option<PublicKey>, CommandError> {
        self.value(flag)?.map(|v| self.key(flag, v)).transpose()
    }

    fn integer(&self, flag: &str, value: &str) -> Result<u64, CommandError> {
        value
            .parse::<u64>()
            .map_err(|_| self.error(format!("--{flag}: {value:?} is not a whole number")))
    }

    fn required_integer(&self, flag: &str) -> Result<u64, CommandError> {
        let value = self.required(flag)?;
        self.integer(flag, value)
    }

    /// A boolean flag: `None` if absent, true if bare.
    fn boolean(&self, flag: &str) -> Result<Option<bool>, CommandError> {
        match self.line.flag(flag) {
            None => Ok(None),
            Some(None) => Ok(Some(true)),
            Some(Some(v)) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| self.error(format!("--{flag}: {v:?} is not 1, 0, true or false"))),
        }
    }

    fn required_boolean(&self, flag: &str) -> Result<bool, CommandError> {
        self.boolean(flag)?
            .ok_or_else(|| self.error(format!("missing --{flag}")))
    }
}

/// `1`/`true` or `0`/`false`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A public key given as 64 hex digits or a `trac1…` address; it must be a valid Ed25519 key.
pub fn parse_key(text: &str) -> Result<PublicKey, String> {
    let key = if text.starts_with("trac1") {
        decode_address(text).map_err(|e| e.to_string())?
    } else {
        PublicKey::from_hex(text).map_err(|e| {
            format!("expected a key (64 hex digits) or a trac1… address, got {text:?}: {e}")
        })?
    };
    key.validate()
        .map_err(|_| format!("{text:?} is not a valid public key"))?;
    Ok(key)
}

impl Command {
    /// Parses one terminal line. Blank lines are an error; see [`super::dispatch`] for how the
    /// terminal skips them.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let first = line.split_whitespace().next().unwrap_or("");
        let spec = builtin(first);
        let parsed = Line::parse(line).map_err(|e| CommandError {
            message: e.0,
            usage: spec.map(|s| s.usage),
        })?;
        if parsed.name.is_empty() {
            return Err(CommandError {
                message: "empty command".into(),
                usage: None,
            });
        }
        // The first token after quote removal decides (a quoted "/tx" is still /tx).
        let Some(spec) = builtin(&parsed.name) else {
            return Ok(Command::App {
                name: parsed.name,
                args: parsed.rest,
            });
        };
        let flags = Flags {
            spec,
            line: &parsed,
        };
        if let Some(extra) = parsed.positional.first() {
            return Err(flags.error(format!("unexpected argument {extra:?}")));
        }
        if let Some((key, _)) = parsed
            .flags
            .iter()
            .find(|(k, _)| !spec.flags.contains(&k.as_str()))
        {
            return Err(flags.error(format!("unknown flag --{key}")));
        }
        let f = &flags;
        Ok(match spec.name {
            "/add_admin" => Command::AddAdmin {
                address: f.required_key("address")?,
            },
            "/update_admin" => Command::UpdateAdmin {
                address: match f.required("address")? {
                    "null" => None,
                    value => Some(f.key("address", value)?),
                },
            },
            "/add_writer" => Command::AddWriter {
                key: f.required_key("key")?,
            },
            "/add_indexer" => Command::AddIndexer {
                key: f.required_key("key")?,
            },
            "/remove_writer" => Command::RemoveWriter {
                key: f.required_key("key")?,
            },
            "/remove_indexer" => Command::RemoveIndexer {
                key: f.required_key("key")?,
            },
            "/set_auto_add_writers" => Command::SetAutoAddWriters {
                enabled: f.required_boolean("enabled")?,
            },
            "/enable_transactions" => Command::EnableTransactions {
                enabled: f.required_boolean("enabled")?,
            },
            "/set_chat_status" => Command::SetChatStatus {
                enabled: f.required_boolean("enabled")?,
            },
            "/post" => Command::Post {
                message: f.text("message")?,
                reply_to: f
                    .value("reply_to")?
                    .map(|v| f.integer("reply_to", v))
                    .transpose()?,
            },
            "/set_nick" => Command::SetNick {
                nick: f.text("nick")?,
                user: f.optional_key("user")?,
            },
            "/mute_status" => Command::MuteStatus {
                user: f.required_key("user")?,
                muted: f.required_boolean("muted")?,
            },
            "/set_mod" => Command::SetMod {
                user: f.required_key("user")?,
                enabled: f.required_boolean("mod")?,
            },
            "/delete_message" => Command::DeleteMessage {
                id: f.required_integer("id")?,
            },
            "/pin_message" => Command::PinMessage {
                id: f.required_integer("id")?,
                pinned: f.boolean("pin")?.unwrap_or(true),
            },
            "/unpin_message" => Command::UnpinMessage {
                pin_id: f.required_integer("pin_id")?,
            },
            "/enable_whitelist" => Command::EnableWhitelist {
                enabled: f.required_boolean("enabled")?,
            },
            "/set_whitelist_status" => Command::SetWhitelistStatus {
                user: f.required_key("user")?,
                status: f.required_boolean("status")?,
            },
            "/tx" => Command::Tx {
                command: f.text("command")?,
                sim: f.boolean("sim")?.unwrap_or(false),
            },
            "/get" => {
                let key = f.text("key")?;
                let confirmed = f.boolean("confirmed")?;
                let unconfirmed = f.boolean("unconfirmed")?;
                let confirmed = match (confirmed, unconfirmed) {
                    (Some(c), Some(u)) if c == u => {
                        return Err(f.error("--confirmed and --unconfirmed contradict each other"));
                    }
                    (Some(c), _) => c,
                    (None, Some(u)) => !u,
                    (None, None) => true,
                };
                Command::Get { key, confirmed }
            }
            "/deploy_contract" => Command::DeployContract {
                file: PathBuf::from(f.text("file")?),
            },
            "/deploy_subnet" => Command::DeploySubnet,
            "/msb" => Command::Msb,
            "/transfer" => {
                let to = f.required_key("to")?;
                let amount = f.required("amount")?;
                let amount = parse_amount(amount).map_err(|e| f.error(format!("--amount: {e}")))?;
                Command::Transfer { to, amount }
            }
            "/balance" => Command::Balance {
                address: f.optional_key("address")?,
            },
            "/msb_add_whitelist" => Command::MsbAddWhitelist {
                address: f.required_key("address")?,
            },
            "/msb_join_validators" => Command::MsbJoinValidators,
            "/msb_leave_validators" => Command::MsbLeaveValidators,
            "/msb_add_indexer" => Command::MsbAddIndexer {
                address: f.required_key("address")?,
            },
            "/msb_remove_indexer" => Command::MsbRemoveIndexer {
                address: f.required_key("address")?,
            },
            "/msb_remove_validator" => Command::MsbRemoveValidator {
                address: f.required_key("address")?,
            },
            "/sc_join" => Command::ScJoin {
                channel: f.text("channel")?,
                invite: f.value("invite")?.map(str::to_string),
                welcome: f.value("welcome")?.map(str::to_string),
                owner: f.optional_key("owner")?,
            },
            "/sc_open" => Command::ScOpen {
                channel: f.text("channel")?,
                via: f.value("via")?.map(str::to_string),
                invite: f.value("invite")?.map(str::to_string),
                welcome: f.value("welcome")?.map(str::to_string),
            },
            "/sc_send" => Command::ScSend {
                channel: f.text("channel")?,
                message: f.text("message")?,
                invite: f.value("invite")?.map(str::to_string),
            },
            "/sc_invite" => Command::ScInvite {
                channel: f.text("channel")?,
                pubkey: f.required_key("pubkey")?,
                ttl: f.value("ttl")?.map(|v| f.integer("ttl", v)).transpose()?,
            },
            "/sc_revoke" => Command::ScRevoke {
                channel: f.text("channel")?,
                pubkey: f.required_key("pubkey")?,
            },
            "/sc_welcome" => Command::ScWelcome {
                channel: f.text("channel")?,
                text: f.text("text")?,
            },
            "/sc_stats" => Command::ScStats,
            "/sc_leave" => Command::ScLeave {
                channel: f.text("channel")?,
            },
            "/stats" => Command::Stats,
            "/get_keys" => Command::GetKeys,
            "/help" => Command::Help,
            "/exit" => Command::Exit,
            other => unreachable!("built-in {other} has no parser"),
        })
    }

    /// The command's name as typed (`/tx`, or the app command's first token).
    pub fn name(&self) -> &str {
        match self {
            Command::App { name, .. } => name,
            other => other.spec().map(|s| s.name).unwrap_or(""),
        }
    }

    /// The built-in's spec (`None` for [`Command::App`]).
    pub fn spec(&self) -> Option<&'static Spec> {
        let name = match self {
            Command::AddAdmin { .. } => "/add_admin",
            Command::UpdateAdmin { .. } => "/update_admin",
            Command::AddWriter { .. } => "/add_writer",
            Command::AddIndexer { .. } => "/add_indexer",
            Command::RemoveWriter { .. } => "/remove_writer",
            Command::RemoveIndexer { .. } => "/remove_indexer",
            Command::SetAutoAddWriters { .. } => "/set_auto_add_writers",
            Command::EnableTransactions { .. } => "/enable_transactions",
            Command::SetChatStatus { .. } => "/set_chat_status",
            Command::Post { .. } => "/post",
            Command::SetNick { .. } => "/set_nick",
            Command::MuteStatus { .. } => "/mute_status",
            Command::SetMod { .. } => "/set_mod",
            Command::DeleteMessage { .. } => "/delete_message",
            Command::PinMessage { .. } => "/pin_message",
            Command::UnpinMessage { .. } => "/unpin_message",
            Command::EnableWhitelist { .. } => "/enable_whitelist",
            Command::SetWhitelistStatus { .. } => "/set_whitelist_status",
            Command::Tx { .. } => "/tx",
            Command::Get { .. } => "/get",
            Command::DeployContract { .. } => "/deploy_contract",
            Command::DeploySubnet => "/deploy_subnet",
            Command::Msb => "/msb",
            Command::Transfer { .. } => "/transfer",
            Command::Balance { .. } => "/balance",
            Command::MsbAddWhitelist { .. } => "/msb_add_whitelist",
            Command::MsbJoinValidators => "/msb_join_validators",
            Command::MsbLeaveValidators => "/msb_leave_validators",
            Command::MsbAddIndexer { .. } => "/msb_add_indexer",
            Command::MsbRemoveIndexer { .. } => "/msb_remove_indexer",
            Command::MsbRemoveValidator { .. } => "/msb_remove_validator",
            Command::ScJoin { .. } => "/sc_join",
            Command::ScOpen { .. } => "/sc_open",
            Command::ScSend { .. } => "/sc_send",
            Command::ScInvite { .. } => "/sc_invite",
            Command::ScRevoke { .. } => "/sc_revoke",
            Command::ScWelcome { .. } => "/sc_welcome",
            Command::ScStats => "/sc_stats",
            Command::ScLeave { .. } => "/sc_leave",
            Command::Stats => "/stats",
            Command::GetKeys => "/get_keys",
            Command::Help => "/help",
            Command::Exit => "/exit",
            Command::App { .. } => return None,
        };
        builtin(name)
    }
}

/// The help text: every built-in's usage line and help by section, then the app's commands
/// (`(name, usage, help)`, from the contract and therefore sanitised; app commands named like
/// a built-in are left out, since the built-in wins).
pub fn help_text(app_commands: &[(&str, &str, &str)]) -> String {
    let mut out = String::from("Available commands:\n");
    let mut section = "";
    for spec in BUILTINS {
        if spec.section != section {
            section = spec.section;
            out.push_str(&format!("\n{section}:\n"));
        }
        out.push_str(&format!("  {}\n      {}\n", spec.usage, spec.help));
    }
    let app: Vec<_> = app_commands
        .iter()
        .filter(|(name, _, _)| builtin(name).is_none())
        .collect();
    if !app.is_empty() {
        out.push_str("\nApp commands:\n");
        for (name, usage, help) in app {
            let usage = if usage.trim().is_empty() { name } else { usage };
            out.push_str(&format!(
                "  {}\n      {}\n",
                sanitize(usage),
                sanitize(help)
            ));
        }
    }
    out
}
