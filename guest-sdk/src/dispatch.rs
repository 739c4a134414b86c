//! The world's exports, implemented once for every [`Contract`].

use std::marker::PhantomData;
use std::sync::Once;

use crate::bindings::trac::contract::events;
use crate::bindings::trac::contract::types::{
    CommandInfo, ContractError, ContractInfo, FeatureInfo, FunctionInfo, FunctionKind, Invocation,
    MappedOp,
};
use crate::protocol::Flags;
use crate::registry::{Kind, Registry};
use crate::{Contract, Ctx, Message};

/// Routes every export to the contract `C`.
pub struct Exports<C>(PhantomData<C>);

static PANIC_HOOK: Once = Once::new();

/// A panic ends the call through `events.abort`, so its message is recorded.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            let text = match info.location() {
                Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
                None => message,
            };
            events::abort(&text);
        }));
    });
}

fn registry<C: Contract>() -> Registry {
    install_panic_hook();
    let mut registry = Registry::new();
    C::register(&mut registry);
    registry
}

impl<C: Contract> Exports<C> {
    /// `describe`.
    pub fn describe() -> ContractInfo {
        let registry = registry::<C>();
        ContractInfo {
            name: C::NAME.to_string(),
            version: C::VERSION.to_string(),
            functions: registry
                .functions
                .iter()
                .map(|f| FunctionInfo {
                    name: f.name.clone(),
                    kind: match f.kind {
                        Kind::Tx => FunctionKind::Tx,
                        Kind::Query => FunctionKind::Query,
                        Kind::Both => FunctionKind::Both,
                    },
                    description: f.description.clone(),
                    args_schema: (f.schema)(),
                })
                .collect(),
            features: registry
                .features
                .iter()
                .map(|f| FeatureInfo {
                    name: f.name.clone(),
                    description: f.description.clone(),
                })
                .collect(),
        }
    }

    /// `map-command`.
    pub fn map_command(command: String) -> Result<Option<MappedOp>, String> {
        install_panic_hook();
        Ok(C::map_command(&command)?.map(|call| MappedOp {
            function: call.function,
            args: call.args,
        }))
    }

    /// `commands`.
    pub fn commands() -> Vec<CommandInfo> {
        registry::<C>()
            .commands
            .into_iter()
            .map(|c| CommandInfo {
                name: c.name,
                usage: c.usage,
                help: c.help,
            })
            .collect()
    }

    /// `run-command`.
    pub fn run_command(name: String, args: Vec<String>) -> Result<String, String> {
        let registry = registry::<C>();
        let command = registry
            .commands
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("unknown command {name}"))?;
        (command.run)(&Ctx::new(), &Flags::parse(&args))
    }

    /// `execute`.
    pub fn execute(call: Invocation) -> Result<Vec<u8>, ContractError> {
        let registry = registry::<C>();
        let mut ctx = Ctx::new();
        match call {
            Invocation::Tx(tx) => {
                let function = registry
                    .function(&tx.function)
                    .ok_or_else(|| ContractError::UnknownFunction(tx.function.clone()))?;
                (function.call)(&mut ctx, &tx.args).map_err(|e| e.into_wit())
            }
            Invocation::Feature(f) => {
                let feature = registry
                    .features
                    .iter()
                    .find(|h| h.name == f.feature)
                    .ok_or_else(|| {
                        ContractError::UnknownFunction(format!("feature {}", f.feature))
                    })?;
                (feature.handler)(&mut ctx, &f.key, &f.value).map_err(|e| e.into_wit())?;
                Ok(Vec::new())
            }
            Invocation::Message(m) => {
                let mut author = [0u8; 32];
                let n = m.author.len().min(32);
                author[..n].copy_from_slice(&m.author[..n]);
                let message = Message {
                    text: m.text,
                    author,
                    number: m.number,
                };
                C::on_message(&mut ctx, &message).map_err(|e| e.into_wit())?;
                Ok(Vec::new())
            }
        }
    }

    /// `query`.
    pub fn query(function: String, args: Vec<u8>) -> Result<Vec<u8>, ContractError> {
        let registry = registry::<C>();
        let f = registry
            .function(&function)
            .ok_or_else(|| ContractError::UnknownFunction(function.clone()))?;
        if f.kind == Kind::Tx {
            return Err(ContractError::UnknownFunction(format!(
                "{function} is a transaction, not a query"
            )));
        }
        (f.call)(&mut Ctx::new(), &args).map_err(|e| e.into_wit())
    }

    /// `init`.
    pub fn init(args: Vec<u8>) -> Result<(), ContractError> {
        install_panic_hook();
        C::init(&mut Ctx::new(), &args).map_err(|e| e.into_wit())
    }

    /// `migrate`.
    pub fn migrate(from_version: String) -> Result<(), ContractError> {
        install_panic_hook();
        C::migrate(&mut Ctx::new(), &from_version).map_err(|e| e.into_wit())
    }
}
