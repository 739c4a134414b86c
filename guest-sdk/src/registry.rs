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

/// Decodes one complete MessagePack value into `T`, refusing trailing bytes and, where the
/// schema of `T` is an object, any top-level shape but a map with text keys (serde would
/// otherwise also fill a struct from an array or from integer keys).
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
    let is_object_map = match &value {
        rmpv::Value::Map(entries) => entries.iter().all(|(k, _)| k.is_str()),
        _ => false,
    };
    if !is_object_map && matches!(value, rmpv::Value::Array(_) | rmpv::Value::Map(_)) {
        let schema = schemars::schema_for!(T);
        if schema.get("type").and_then(|t| t.as_str()) == Some("object") {
            return Err("expected an object (a map with text keys)".to_string());
        }
    }
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
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
