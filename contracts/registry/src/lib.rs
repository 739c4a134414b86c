//! A name registry: anyone can claim a free name, only its owner can change, transfer or
//! release it, and anyone can look names up. What a third party writes for Trac: typed,
//! validated arguments, ownership checks, prefix scans, events, a query and a terminal command.

use serde::{Deserialize, Serialize};
use trac_sdk::prelude::*;

/// The name registry.
pub struct NameRegistry;

/// A name's record, stored under `name/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Record {
    /// Owner's public key (hex).
    pub owner: String,
    /// What the name points to.
    pub target: String,
    /// Checkpoint time of the last change (milliseconds).
    pub updated_at: u64,
}

/// Arguments naming a name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Name {
    /// Lower-case letters, digits and dashes, 1 to 64 characters.
    pub name: String,
}

/// Arguments of `claim` and `set`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameTarget {
    /// Lower-case letters, digits and dashes, 1 to 64 characters.
    pub name: String,
    /// What the name points to, 1 to 256 characters.
    pub target: String,
}

/// Arguments of `transfer`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The name.
    pub name: String,
    /// The new owner's public key, 64 hex digits.
    pub to: String,
}

/// Arguments of `list`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Names starting with this (may be empty).
    #[serde(default)]
    pub prefix: String,
    /// At most this many (1 to 100, default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

fn check_name(name: &str) -> Result<(), String> {
    check_len("name", name, 1, 64)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("name may hold only a-z, 0-9 and '-'".to_string());
    }
    Ok(())
}

impl Args for Name {
    fn validate(&self) -> Result<(), String> {
        check_name(&self.name)
    }
}

impl Args for NameTarget {
    fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        check_len("target", &self.target, 1, 256)
    }
}

impl Args for Transfer {
    fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.to.len() != 64 || !self.to.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("to must be a public key of 64 hex digits".to_string());
        }
        Ok(())
    }
}

impl Args for List {
    fn validate(&self) -> Result<(), String> {
        if !self.prefix.is_empty() {
            check_name(&self.prefix)?;
        }
        match self.limit {
            Some(l) if !(1..=100).contains(&l) => Err("limit must be 1 to 100".to_string()),
            _ => Ok(()),
        }
    }
}

fn key(name: &str) -> String {
    format!("name/{name}")
}

/// The record of `name`, which the sender must own.
fn owned(ctx: &Ctx, name: &str) -> Result<Record, Error> {
    let record: Record = ctx
        .get(key(name))?
        .ok_or_else(|| Error::failed(format!("{name} is not registered")))?;
    if record.owner != ctx.sender_hex() {
        return Err(Error::failed(format!("{name} belongs to someone else")));
    }
    Ok(record)
}

impl Contract for NameRegistry {
    const NAME: &'static str = "registry";
    const VERSION: &'static str = "0.1.0";

    fn register(r: &mut Registry) {
        r.tx("claim", "Claims a free name for the sender", |ctx, a: NameTarget| {
            if ctx.get::<Record>(key(&a.name))?.is_some() {
                return Err(Error::failed(format!("{} is taken", a.name)));
            }
            let record = Record {
                owner: ctx.sender_hex(),
                target: a.target,
                updated_at: ctx.time(),
            };
            ctx.put(key(&a.name), &record)?;
            ctx.emit("claimed", &a.name)?;
            Ok(record)
        });
        r.tx("set", "Points an owned name elsewhere", |ctx, a: NameTarget| {
            let mut record = owned(ctx, &a.name)?;
            record.target = a.target;
            record.updated_at = ctx.time();
            ctx.put(key(&a.name), &record)?;
            Ok(record)
        });
        r.tx("transfer", "Gives an owned name to another key", |ctx, a: Transfer| {
            let mut record = owned(ctx, &a.name)?;
            record.owner = a.to.to_lowercase();
            record.updated_at = ctx.time();
            ctx.put(key(&a.name), &record)?;
            ctx.emit("transferred", &(&a.name, &record.owner))?;
            Ok(record)
        });
        r.tx("release", "Frees an owned name", |ctx, a: Name| {
            owned(ctx, &a.name)?;
            ctx.delete(key(&a.name))?;
            ctx.emit("released", &a.name)?;
            Ok(())
        });
        r.query("lookup", "The record of a name", |ctx, a: Name| {
            ctx.get::<Record>(key(&a.name))
        });
        r.query("list", "Names in order, by prefix", |ctx, a: List| {
            let entries = ctx.scan_prefix(key(&a.prefix), a.limit.unwrap_or(20))?;
            Ok(entries
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k["name/".len()..]).into_owned())
                .collect::<Vec<_>>())
        });
        r.command(
            "/whois",
            "/whois --name <name>",
            "Shows who owns a name and where it points",
            |ctx, flags| {
                let name = flags.get("name").ok_or("Usage: /whois --name <name>")?;
                match ctx.get::<Record>(key(name)).map_err(|e| e.to_string())? {
                    Some(r) => Ok(format!("{name} -> {} (owner {})", r.target, r.owner)),
                    None => Ok(format!("{name} is free")),
                }
            },
        );
    }

    fn map_command(command: &str) -> Result<Option<Call>, String> {
        // `claim <name> <target>`, `release <name>`, or the JSON forms {"op": "...", ...}.
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["claim", name, target] => Call::with_args(
                "claim",
                &serde_json::json!({ "name": name, "target": target }),
            )
            .map(Some),
            ["release", name] => {
                Call::with_args("release", &serde_json::json!({ "name": name })).map(Some)
            }
            _ => match trac_sdk::protocol::json_command(command)? {
                Some(mut json) => {
                    let op = json
                        .get("op")
                        .and_then(|o| o.as_str())
                        .unwrap_or_default()
                        .to_string();
                    if let Some(object) = json.as_object_mut() {
                        object.remove("op");
                    }
                    match op.as_str() {
                        "claim" | "set" | "transfer" | "release" => {
                            Call::with_args(&op, &json).map(Some)
                        }
                        _ => Ok(None),
                    }
                }
                None => Ok(None),
            },
        }
    }
}

trac_sdk::export_contract!(NameRegistry);
