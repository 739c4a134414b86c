//! Registration of a contract's functions, features and terminal commands.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::encode;
use crate::protocol::Flags;
use crate::{Ctx, Error};

/// Arguments of a contract function: decoded from MessagePack inside the component, then
/// validated. The JSON Schema shown by `describe` comes from [`schemars::JsonSchema`]; checks
/// the schema cannot express (lengths, ranges) go in [`Args::validate`].
pub trait Args: DeserializeOwned + schemars::JsonSchema {
    /// Checks the decoded arguments; the error becomes the call's `invalid-args` error.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Args for () {}
impl Args for serde_json::Value {}

/// Whether a function is a transaction, a query or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tx,
    Query,
    Both,
}

type Handler = Box<dyn Fn(&mut Ctx, &[u8]) -> Result<Vec<u8>, Error>>;
type FeatureHandler = Box<dyn Fn(&mut Ctx, &str, &[u8]) -> Result<(), Error>>;
type CommandHandler = Box<dyn Fn(&Ctx, &Flags) -> Result<String, String>>;

pub(crate) struct Function {
    pub name: String,
    pub kind: Kind,
    pub description: String,
    pub schema: fn() -> String,
    pub call: Handler,
}

pub(crate) struct Feature {
    pub name: String,
    pub description: String,
    pub handler: FeatureHandler,
}

pub(crate) struct Command {
    pub name: String,
    pub usage: String,
    pub help: String,
    pub run: CommandHandler,
}

/// What a contract offers, filled by [`crate::Contract::register`].
#[derive(Default)]
pub struct Registry {
    pub(crate) functions: Vec<Function>,
    pub(crate) features: Vec<Feature>,
    pub(crate) commands: Vec<Command>,
}

/// Decodes one complete MessagePack value into `T`, refusing trailing bytes and, wherever the
/// JSON Schema of `T` expects an object, any shape but a map with text keys (serde alone would
/// also fill a struct from an array of its fields or from integer keys).
pub(crate) fn decode_strict<T: DeserializeOwned + schemars::JsonSchema>(
    bytes: &[u8],
) -> Result<T, String> {
    // No bytes at all means "no value" (MessagePack nil).
    let bytes: &[u8] = if bytes.is_empty() { &[0xc0] } else { bytes };
    let mut rest = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, 128)
        .map_err(|e| format!("not MessagePack: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the value", rest.len()));
    }
    // Only values holding arrays or maps with non-text keys can be mistaken for objects; the
    // schema is built only for those.
    if needs_shape_check(&value) {
        let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
        check_shape(&value, &schema, &schema, "arguments", 0)?;
    }
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

fn needs_shape_check(value: &rmpv::Value) -> bool {
    match value {
        rmpv::Value::Array(_) => true,
        rmpv::Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| !k.is_str() || needs_shape_check(v)),
        _ => false,
    }
}

/// Checks that `value` has an object's shape wherever `schema` expects one.
fn check_shape(
    value: &rmpv::Value,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    at: &str,
    depth: u32,
) -> Result<(), String> {
    if depth > 64 {
        return Ok(());
    }
    // Follow references into the schema's definitions.
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) {
        let target = reference
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs").and_then(|d| d.get(name)));
        return match target {
            Some(target) => check_shape(value, target, root, at, depth + 1),
            None => Ok(()),
        };
    }
    // Alternatives (`Option`, enums): one of them must fit.
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(|b| b.as_array()) {
            let mut first_error = None;
            for branch in branches {
                match check_shape(value, branch, root, at, depth + 1) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            return first_error.map_or(Ok(()), Err);
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.as_str()],
        Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => return Ok(()),
    };
    let object = types.contains(&"object");
    let array = types.contains(&"array");
    match value {
        rmpv::Value::Map(entries) if object => {
            let properties = schema.get("properties");
            for (k, v) in entries {
                let Some(name) = k.as_str() else {
                    return Err(format!("{at}: object keys must be text"));
                };
                if let Some(property) = properties.and_then(|p| p.get(name)) {
                    check_shape(v, property, root, &format!("{at}.{name}"), depth + 1)?;
                }
            }
            Ok(())
        }
        rmpv::Value::Array(items) if array => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check_shape(v, item, root, &format!("{at}[{i}]"), depth + 1)?;
                }
            }
            Ok(())
        }
        rmpv::Value::Array(_) | rmpv::Value::Map(_) if object => {
            Err(format!("{at}: expected an object (a map with text keys)"))
        }
        rmpv::Value::Array(_) | rmpv::Value::Map(_) => {
            Err(format!("{at}: expected {}", types.join(" or ")))
        }
        _ => Ok(()),
    }
}

/// Decodes and validates the arguments of `function`.
fn decode_args<A: Args>(function: &str, bytes: &[u8]) -> Result<A, Error> {
    let args: A =
        decode_strict(bytes).map_err(|e| Error::invalid_args(format!("{function}: {e}")))?;
    args.validate()
        .map_err(|e| Error::invalid_args(format!("{function}: {e}")))?;
    Ok(args)
}

fn schema_of<A: Args>() -> String {
    serde_json::to_string(&schemars::schema_for!(A)).unwrap_or_default()
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn add<A: Args, R: Serialize>(
        &mut self,
        name: &str,
        kind: Kind,
        description: &str,
        call: impl Fn(&mut Ctx, A) -> Result<R, Error> + 'static,
    ) -> &mut Self {
        let function = name.to_string();
        self.functions.push(Function {
            name: name.to_string(),
            kind,
            description: description.to_string(),
            schema: schema_of::<A>,
            call: Box::new(move |ctx, bytes| {
                let args = decode_args::<A>(&function, bytes)?;
                encode(&call(ctx, args)?)
            }),
        });
        self
    }

    /// A transaction: may write state and emit events.
    pub fn tx<A: Args, R: Serialize>(
        &mut self,
        name: &str,
        description: &str,
        call: impl Fn(&mut Ctx, A) -> Result<R, Error> + 'static,
    ) -> &mut Self {
        self.add(name, Kind::Tx, description, call)
    }

    /// A read-only query (also callable as a transaction, which then only reads and logs).
    pub fn query<A: Args, R: Serialize>(
        &mut self,
        name: &str,
        description: &str,
        call: impl Fn(&Ctx, A) -> Result<R, Error> + 'static,
    ) -> &mut Self {
        self.add(name, Kind::Query, description, move |ctx, a| call(ctx, a))
    }

    /// A read-only function offered both as a query and as a transaction.
    pub fn both<A: Args, R: Serialize>(
        &mut self,
        name: &str,
        description: &str,
        call: impl Fn(&Ctx, A) -> Result<R, Error> + 'static,
    ) -> &mut Self {
        self.add(name, Kind::Both, description, move |ctx, a| call(ctx, a))
    }

    /// A feature (for example `timer`): its entries carry a key and a MessagePack value.
    pub fn feature<V: DeserializeOwned + schemars::JsonSchema>(
        &mut self,
        name: &str,
        description: &str,
        handler: impl Fn(&mut Ctx, &str, V) -> Result<(), Error> + 'static,
    ) -> &mut Self {
        let feature = name.to_string();
        self.features.push(Feature {
            name: name.to_string(),
            description: description.to_string(),
            handler: Box::new(move |ctx, key, bytes| {
                let value: V = decode_strict(bytes).map_err(|e| {
                    Error::invalid_args(format!("feature {feature}, key {key}: {e}"))
                })?;
                handler(ctx, key, value)
            }),
        });
        self
    }

    /// A terminal command of the app (`name` includes the slash, e.g. `/print`), run read-only
    /// against local state; its output is printed.
    pub fn command(
        &mut self,
        name: &str,
        usage: &str,
        help: &str,
        run: impl Fn(&Ctx, &Flags) -> Result<String, String> + 'static,
    ) -> &mut Self {
        self.commands.push(Command {
            name: name.to_string(),
            usage: usage.to_string(),
            help: help.to_string(),
            run: Box::new(run),
        });
        self
    }

    pub(crate) fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}
