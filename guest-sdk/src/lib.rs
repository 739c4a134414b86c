//! Write Trac contracts in plain Rust.
//!
//! A contract is a type implementing [`Contract`]: it registers its functions (transactions and
//! queries with typed, validated arguments and JSON Schemas), its features, chat-message handler,
//! command mapping and terminal commands. [`export_contract!`] turns it into the exports of the
//! `trac:contract` world; an author never touches the raw WIT bindings.
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//! use trac_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Greet { name: String }
//!
//! impl Args for Greet {
//!     fn validate(&self) -> Result<(), String> {
//!         check_len("name", &self.name, 1, 64)
//!     }
//! }
//!
//! struct Hello;
//!
//! impl Contract for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = "0.1.0";
//!
//!     fn register(r: &mut Registry) {
//!         r.tx("greet", "Remembers who was greeted", |ctx, args: Greet| {
//!             ctx.put(format!("greeted/{}", args.name), &ctx.time())?;
//!             Ok(format!("hello, {}", args.name))
//!         });
//!         r.query("greeted", "When a name was greeted", |ctx, args: Greet| {
//!             ctx.get::<u64>(format!("greeted/{}", args.name))
//!         });
//!     }
//! }
//!
//! trac_sdk::export_contract!(Hello);
//! ```
//!
//! Everything is deterministic: the only time is the checkpoint time ([`Ctx::time`]) and the
//! only randomness the call's seed ([`Ctx::seed`]). A panic ends the call as a recorded failure
//! carrying the panic message; its writes are rolled back.

extern crate self as trac_sdk;

mod context;
mod dispatch;
mod error;
#[cfg(all(target_arch = "wasm32", feature = "heap"))]
mod heap;
pub mod protocol;
mod registry;

/// Serves a call's heap from the initial linear memory before growing it (see `heap.rs`).
/// Turn off the default feature `heap` to install another global allocator.
#[cfg(all(target_arch = "wasm32", feature = "heap"))]
#[global_allocator]
static HEAP: heap::Heap = heap::Heap::new();

pub use context::{Ctx, Message, OpKind, Record, address, hex};
pub use error::{Error, check_len};
pub use registry::{Args, Registry};
pub use schemars::JsonSchema;

/// The raw bindings of the `trac:contract` world (for the export macro; authors do not need
/// them).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "contract",
        pub_export_macro: true,
        export_macro_name: "__export_contract_world",
        default_bindings_module: "::trac_sdk::bindings",
        runtime_path: "::trac_sdk::__private::wit_bindgen::rt",
    });
}

/// What the export macro needs from this crate.
#[doc(hidden)]
pub mod __private {
    pub use crate::dispatch::Exports;
    pub use wit_bindgen;
}

/// The usual imports of a contract.
pub mod prelude {
    pub use crate::protocol::{Call, Flags};
    pub use crate::{Args, Contract, Ctx, Error, JsonSchema, Message, Registry, check_len};
}

/// A contract: its identity and what it offers. Every method has a default doing nothing, so a
/// contract implements only what it uses.
pub trait Contract: 'static {
    /// Name shown by `describe`.
    const NAME: &'static str;
    /// Version shown by `describe` and given to `migrate` of the next version.
    const VERSION: &'static str;

    /// Registers functions, features and terminal commands.
    fn register(registry: &mut Registry);

    /// Maps a terminal/RPC command string to a call; `Ok(None)` when the command is not the
    /// app's, `Err` when it is malformed.
    fn map_command(command: &str) -> Result<Option<protocol::Call>, String> {
        let _ = command;
        Ok(None)
    }

    /// Handles a chat message accepted by the subnet's rules.
    fn on_message(ctx: &mut Ctx, message: &Message) -> Result<(), Error> {
        let _ = (ctx, message);
        Ok(())
    }

    /// Initialises state when the contract is deployed (`args`: MessagePack).
    fn init(ctx: &mut Ctx, args: &[u8]) -> Result<(), Error> {
        let _ = (ctx, args);
        Ok(())
    }

    /// Migrates state written by `from_version`.
    fn migrate(ctx: &mut Ctx, from_version: &str) -> Result<(), Error> {
        let _ = (ctx, from_version);
        Ok(())
    }
}

/// Exports a [`Contract`] as the component's `trac:contract` world.
#[macro_export]
macro_rules! export_contract {
    ($contract:ty) => {
        const _: () = {
            struct __TracExports;
            impl $crate::bindings::Guest for __TracExports {
                fn describe() -> $crate::bindings::trac::contract::types::ContractInfo {
                    $crate::__private::Exports::<$contract>::describe()
                }
                fn map_command(
                    command: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::option::Option<$crate::bindings::trac::contract::types::MappedOp>,
                    ::std::string::String,
                > {
                    $crate::__private::Exports::<$contract>::map_command(command)
                }
                fn commands() -> ::std::vec::Vec<$crate::bindings::trac::contract::types::CommandInfo> {
                    $crate::__private::Exports::<$contract>::commands()
                }
                fn run_command(
                    name: ::std::string::String,
                    args: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::Exports::<$contract>::run_command(name, args)
                }
                fn execute(
                    call: $crate::bindings::trac::contract::types::Invocation,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<u8>,
                    $crate::bindings::trac::contract::types::ContractError,
                > {
                    $crate::__private::Exports::<$contract>::execute(call)
                }
                fn query(
                    function: ::std::string::String,
                    args: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<u8>,
                    $crate::bindings::trac::contract::types::ContractError,
                > {
                    $crate::__private::Exports::<$contract>::query(function, args)
                }
                fn init(
                    args: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), $crate::bindings::trac::contract::types::ContractError>
                {
                    $crate::__private::Exports::<$contract>::init(args)
                }
                fn migrate(
                    from_version: ::std::string::String,
                ) -> ::std::result::Result<(), $crate::bindings::trac::contract::types::ContractError>
                {
                    $crate::__private::Exports::<$contract>::migrate(from_version)
                }
            }
            $crate::bindings::__export_contract_world!(__TracExports with_types_in $crate::bindings);
        };
    };
}
