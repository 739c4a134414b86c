//! The protocol side of an app: mapping command strings to calls, and parsing the flags of
//! terminal commands.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::context::encode;

/// A call a command maps to: a function and its MessagePack arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The contract function.
    pub function: String,
    /// MessagePack arguments.
    pub args: Vec<u8>,
}

impl Call {
    /// A call without arguments (MessagePack nil).
    pub fn no_args(function: &str) -> Self {
        Call {
            function: function.to_string(),
            args: vec![0xc0],
        }
    }

    /// A call with arguments encoded as MessagePack (with field names).
    pub fn with_args<T: Serialize + ?Sized>(function: &str, args: &T) -> Result<Self, String> {
        Ok(Call {
            function: function.to_string(),
            args: encode(args).map_err(|e| e.to_string())?,
        })
    }
}

/// If `command` is a JSON object, the object (`Ok(None)` when it is not JSON-shaped, `Err` when
/// it looks like JSON but does not parse).
pub fn json_command(command: &str) -> Result<Option<serde_json::Value>, String> {
    let trimmed = command.trim();
    if !trimmed.starts_with('{') {
        return Ok(None);
    }
    serde_json::from_str(trimmed)
        .map(Some)
        .map_err(|e| format!("invalid JSON command: {e}"))
}

/// Flags of a terminal command: `--key value`, `--key=value`, or a bare `--flag` (no value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    values: BTreeMap<String, Option<String>>,
    positional: Vec<String>,
}

impl Flags {
    /// Parses the tokens after the command name.
    pub fn parse(tokens: &[String]) -> Self {
        let mut flags = Flags::default();
        let mut i = 0;
        while i < tokens.len() {
            let token = &tokens[i];
            if let Some(name) = token.strip_prefix("--") {
                if let Some((key, value)) = name.split_once('=') {
                    flags
                        .values
                        .insert(key.to_string(), Some(value.to_string()));
                } else if tokens
                    .get(i + 1)
                    .is_some_and(|next| !next.starts_with("--"))
                {
                    flags
                        .values
                        .insert(name.to_string(), Some(tokens[i + 1].clone()));
                    i += 1;
                } else {
                    flags.values.insert(name.to_string(), None);
                }
            } else {
                flags.positional.push(token.clone());
            }
            i += 1;
        }
        flags
    }

    /// The value of `--name`, if given with one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.as_deref())
    }

    /// Whether `--name` was given (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Tokens that are not flags or flag values.
    pub fn positional(&self) -> &[String] {
        &self.positional
    }
}
