//! The deterministic WebAssembly contract runtime (docs/protocol.md, "Contract runtime").
//!
//! A contract is a component of the `trac:contract` world (`wit/contract.wit`). [`Runtime::load`]
//! validates it deterministically ([`validate_component`]), instruments its core modules with
//! the call-depth guard, compiles it off the calling thread and caches the result in memory
//! (`InstancePre`) and on disk. Every call then runs in a fresh instance from the pooling
//! allocator with metered fuel and the [`Limits`] in force, against a [`StateView`], and returns
//! a [`CallOutcome`]: the result or a recorded [`CallFailure`], the fuel used, and the call's
//! writes and events. Writes are buffered per call, so a failed call changes nothing; the caller
//! applies the writes of a successful call to its write batch.
//!
//! A contract can fail, the node cannot: every deterministic failure (trap, fuel, limits,
//! contract error) is a [`CallFailure`]; only faults of the node itself (a state read error, the
//! native stack) are a [`RuntimeError`].

mod cache;
mod engine;
mod host;
mod instrument;
mod limits;
pub mod testkit;
mod validate;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap};

use self::cache::{DiskCache, MemoryCache};
use self::host::{Access, BorrowedView, CallLimiter, CallState, HostTrap};
use crate::crypto::{Hash32, PublicKey, hash};
use crate::store::{StateRecord, StoreError};

pub use self::engine::{CALL_THREAD_STACK, NATIVE_WASM_STACK};
pub use self::instrument::{InstrumentError, instrument_component, instrument_module};
pub use self::limits::{
    HARD_CAPS, INSTRUMENTATION_VERSION, LimitError, Limits, PRICES_V1, PriceTable,
    WASMTIME_VERSION, runtime_protocol_version,
};
pub use self::validate::{
    ALLOWED_INTERFACES, ComponentReport, REQUIRED_EXPORTS, ValidationError, contract_features,
    import_allowed, validate_component,
};

/// Host bindings generated from `wit/contract.wit`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "contract",
    });
}

pub use self::bindings::trac::contract::types::{
    CommandInfo, ContractError, ContractInfo, FeatureCall, FeatureInfo, FunctionInfo, FunctionKind,
    Invocation, MappedOp, MessageCall, OpKind, TxCall,
};

/// Read access to the state a call runs against (any store snapshot, batch or overlay).
pub use crate::store::StateView;

/// A state with no records (for entry points without state access).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyState;

impl StateView for EmptyState {
    fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn range(&self, _: &[u8], _: Option<&[u8]>, _: usize) -> Result<Vec<StateRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// Keys contracts may read but not write: the system keyspace of the subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservedKeys {
    exact: BTreeSet<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
}

impl ReservedKeys {
    /// No reserved keys (a standalone state).
    pub fn none() -> Self {
        Self::default()
    }

    /// Reserves exact keys and key prefixes.
    pub fn new(
        exact: impl IntoIterator<Item = Vec<u8>>,
        prefixes: impl IntoIterator<Item = Vec<u8>>,
    ) -> Self {
        ReservedKeys {
            exact: exact.into_iter().collect(),
            prefixes: prefixes.into_iter().collect(),
        }
    }

    /// Whether `key` is reserved.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.exact.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p))
    }
}

/// One write of a call: a put (`Some`) or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// A consensus event emitted by a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// What happened.
    pub topic: String,
    /// Its data (usually MessagePack).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The deterministic context of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// What kind of operation runs.
    pub op_kind: OpKind,
    /// Hash of the transaction or log entry.
    pub tx_hash: Hash32,
    /// The requester.
    pub sender: PublicKey,
    /// The MSB validator that settled the transaction.
    pub validator: Option<PublicKey>,
    /// Position in the confirmed order.
    pub log_position: u64,
    /// Checkpoint time, milliseconds since the Unix epoch.
    pub checkpoint_time: u64,
}

impl CallContext {
    /// A context for read-only calls (queries, terminal commands): zero hash and sender.
    pub fn read_only(op_kind: OpKind) -> Self {
        CallContext {
            op_kind,
            tx_hash: Hash32::ZERO,
            sender: PublicKey([0; 32]),
            validator: None,
            log_position: 0,
            checkpoint_time: 0,
        }
    }

    /// The deterministic seed: BLAKE3 of the context's fields (docs/protocol.md).
    pub fn seed(&self) -> Hash32 {
        let mut data = Vec::with_capacity(32 * 3 + 17);
        data.extend_from_slice(b"trac/v1/seed\0");
        data.extend_from_slice(self.tx_hash.as_bytes());
        data.extend_from_slice(self.sender.as_bytes());
        data.extend_from_slice(&self.log_position.to_be_bytes());
        data.extend_from_slice(&self.checkpoint_time.to_be_bytes());
        hash(&data)
    }

    pub(crate) fn to_wit(&self) -> bindings::trac::contract::types::CallContext {
        bindings::trac::contract::types::CallContext {
            op_kind: self.op_kind,
            tx_hash: self.tx_hash.0.to_vec(),
            sender: self.sender.0.to_vec(),
            validator: self.validator.map(|v| v.0.to_vec()),
            log_position: self.log_position,
            checkpoint_time: self.checkpoint_time,
            seed: self.seed().0.to_vec(),
        }
    }
}

/// A recorded, deterministic failure of a contract call. Its writes are rolled back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallFailure {
    /// The contract has no such function.
    #[error("unknown function: {0}")]
    UnknownFunction(String),
    /// The arguments do not match the function's schema.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// The contract refused the call.
    #[error("contract error: {0}")]
    Contract(String),
    /// The contract panicked or aborted with a message.
    #[error("contract panicked: {0}")]
    Aborted(String),
    /// The call used all its fuel.
    #[error("out of fuel")]
    OutOfFuel,
    /// Memory growth beyond the limit.
    #[error("memory limit exceeded")]
    MemoryLimit,
    /// Table growth beyond the limit.
    #[error("table limit exceeded")]
    TableLimit,
    /// The deterministic call-depth limit.
    #[error("call depth limit exceeded")]
    CallDepth,
    /// Any other wasm trap.
    #[error("trap: {0}")]
    Trap(String),
    /// The result is larger than the limit.
    #[error("result of {0} bytes exceeds the limit")]
    ResultTooLarge(u64),
}

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome<R> {
    /// The result, or the recorded failure.
    pub result: Result<R, CallFailure>,
    /// Fuel used (wasm instructions, host charges, argument and result bytes).
    pub fuel_used: u64,
    /// The writes (empty when the call failed: they are rolled back).
    pub writes: Vec<StateWrite>,
    /// The events (empty when the call failed).
    pub events: Vec<Event>,
    /// Debug lines (not consensus; kept for failed calls too).
    pub debug: Vec<String>,
}

/// A fault of the node, never recorded as a contract result.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The component was refused.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Limits above the hard caps.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// Instrumentation or compilation failed.
    #[error("cannot compile contract: {0}")]
    Compile(String),
    /// The contract was loaded for another call-depth limit than the call's.
    #[error(
        "contract was compiled for call depth {compiled}, the call needs {requested}; load it with the call's limits"
    )]
    DepthMismatch {
        /// Depth compiled in.
        compiled: u32,
        /// Depth of the call's limits.
        requested: u32,
    },
    /// Reading state failed.
    #[error("state read failed during a contract call: {0}")]
    State(String),
    /// The native stack limit was hit (the depth limit should have stopped the call first).
    #[error("contract call exhausted the native stack")]
    NativeStack,
    /// Any other engine failure (for example the instance pool is exhausted).
    #[error("contract engine failure: {0}")]
    Engine(String),
}

/// Where a loaded contract came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// The in-memory cache.
    Memory,
    /// The on-disk artifact cache.
    Disk,
    /// Freshly compiled.
    Compiled,
}

/// A validated, instrumented and compiled contract, ready to instantiate.
pub struct Contract {
    report: ComponentReport,
    limits: Limits,
    pre: bindings::ContractPre<CallState>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("code_hash", &self.report.code_hash)
            .finish()
    }
}

impl Contract {
    /// The BLAKE3 of the component bytes.
    pub fn code_hash(&self) -> Hash32 {
        self.report.code_hash
    }

    /// What validation found.
    pub fn report(&self) -> &ComponentReport {
        &self.report
    }

    /// The limits the contract was loaded with (its call-depth limit is compiled in).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Runtime settings that are local to the node (not consensus).
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Directory of the compiled-artifact cache; none keeps artifacts in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Contracts kept instantiated-ready in memory (default 64).
    pub memory_cache_entries: Option<usize>,
}

/// A state-changing call: the state it reads and the consensus inputs it runs with.
pub struct CallRequest<'a> {
    /// The state the call reads (its writes are returned, not applied).
    pub view: &'a dyn StateView,
    /// The deterministic context.
    pub context: CallContext,
    /// Keys the call may not write.
    pub reserved: Arc<ReservedKeys>,
}

/// The engine, its linker and the caches. Share one per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    compatibility: Hash32,
    memory: Mutex<MemoryCache<Contract>>,
    disk: Option<DiskCache>,
    prices: PriceTable,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("compatibility", &self.compatibility)
            .finish()
    }
}

fn engine_error(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine(e.to_string())
}

impl Runtime {
    /// Builds the engine and linker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = engine::build_engine().map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        host::add_imports(&mut linker).map_err(engine_error)?;
        let disk = match &config.cache_dir {
            Some(dir) => Some(DiskCache::new(dir).map_err(|e| {
                RuntimeError::Engine(format!("cache directory {}: {e}", dir.display()))
            })?),
            None => None,
        };
        Ok(Runtime {
            compatibility: engine::engine_compatibility_hash(&engine),
            engine,
            linker,
            memory: Mutex::new(MemoryCache::new(config.memory_cache_entries.unwrap_or(64))),
            disk,
            prices: PRICES_V1,
        })
    }

    /// The engine compatibility hash that keys compiled artifacts.
    pub fn compatibility_hash(&self) -> Hash32 {
        self.compatibility
    }

    fn artifact_key(&self, code_hash: &Hash32, limits: &Limits) -> Hash32 {
        let mut data = Vec::with_capacity(68);
        data.extend_from_slice(code_hash.as_bytes());
        data.extend_from_slice(self.compatibility.as_bytes());
        data.extend_from_slice(&limits.max_call_depth.to_be_bytes());
        hash(&data)
    }

    /// Validates, instruments, compiles (on a compiler thread) and caches a contract.
    pub fn load(&self, bytes: &[u8], limits: &Limits) -> Result<Arc<Contract>, RuntimeError> {
        self.load_traced(bytes, limits)
            .map(|(contract, _)| contract)
    }

    /// [`Runtime::load`], also saying which cache (if any) served the contract.
    pub fn load_traced(
        &self,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<(Arc<Contract>, LoadSource), RuntimeError> {
        limits.check()?;
        let report = validate_component(bytes, limits)?;
        let key = self.artifact_key(&report.code_hash, limits);
        let cached = self.lock_memory().get(&key);
        if let Some(hit) = cached {
            if hit.limits == *limits {
                return Ok((hit, LoadSource::Memory));
            }
            // The same compiled code (the key covers the call depth), loaded with other limits
            // (`setParams`): the contract must run with the limits it is loaded with.
            let contract = Arc::new(Contract {
                report,
                limits: *limits,
                pre: hit.pre.clone(),
            });
            self.lock_memory().insert(key, contract.clone());
            return Ok((contract, LoadSource::Memory));
        }
        let mut source = LoadSource::Compiled;
        let mut component = None;
        if let Some(payload) = self.disk.as_ref().and_then(|d| d.load(&key)) {
            // SAFETY: the payload was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is part of the key) and its checksum matches, so it
            // is the artifact this runtime produced; wasmtime checks its header again.
            match unsafe { Component::deserialize(&self.engine, &payload) } {
                Ok(c) => {
                    component = Some(c);
                    source = LoadSource::Disk;
                }
                Err(e) => tracing::warn!(error = %e, "ignoring an unusable cached artifact"),
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let component = self.compile_off_thread(bytes, limits.max_call_depth)?;
                if let Some(disk) = &self.disk {
                    match component.serialize() {
                        Ok(payload) => disk.store(&key, &payload),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot serialise a compiled contract")
                        }
                    }
                }
                component
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
        let pre =
            bindings::ContractPre::new(pre).map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
        let contract = Arc::new(Contract {
            report,
            limits: *limits,
            pre,
        });
        self.lock_memory().insert(key, contract.clone());
        Ok((contract, source))
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, MemoryCache<Contract>> {
        // A panic while holding the lock cannot leave the cache inconsistent (each operation
        // is a single insert or lookup), so a poisoned lock is still usable.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Instruments and compiles on a dedicated thread (with a large stack for the compiler),
    /// leaving the calling thread's stack and the apply path out of it.
    fn compile_off_thread(&self, bytes: &[u8], max_depth: u32) -> Result<Component, RuntimeError> {
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        let started = Instant::now();
        let handle = std::thread::Builder::new()
            .name("contract-compiler".into())
            .stack_size(64 << 20)
            .spawn(move || -> Result<Component, RuntimeError> {
                let instrumented = instrument_component(&bytes, max_depth)
                    .map_err(|e| RuntimeError::Compile(e.to_string()))?;
                Component::new(&engine, &instrumented)
                    .map_err(|e| RuntimeError::Compile(format!("{e:#}")))
            })
            .map_err(|e| RuntimeError::Compile(format!("cannot start the compiler thread: {e}")))?;
        let component = handle
            .join()
            .map_err(|_| RuntimeError::Compile("the compiler thread panicked".into()))??;
        tracing::debug!(elapsed = ?started.elapsed(), "compiled contract");
        Ok(component)
    }

    /// The contract's description. No state access.
    pub fn describe(&self, contract: &Contract) -> Result<CallOutcome<ContractInfo>, RuntimeError> {
        self.run_without_state(contract, 0, |c, s| Ok(Ok(c.call_describe(s)?)), info_bytes)
    }

    /// The contract's custom terminal commands. No state access.
    pub fn commands(
        &self,
        contract: &Contract,
    ) -> Result<CallOutcome<Vec<CommandInfo>>, RuntimeError> {
        self.run_without_state(
            contract,
            0,
            |c, s| Ok(Ok(c.call_commands(s)?)),
            |cmds: &Vec<CommandInfo>| {
                cmds.iter()
                    .map(|c| (c.name.len() + c.usage.len() + c.help.len()) as u64)
                    .sum()
            },
        )
    }

    /// Maps a command string to an operation (`None`: the app does not know the command).
    pub fn map_command(
        &self,
        contract: &Contract,
        command: &str,
    ) -> Result<CallOutcome<Option<MappedOp>>, RuntimeError> {
        self.run_without_state(
            contract,
            command.len() as u64,
            |c, s| {
                Ok(c.call_map_command(s, command)?
                    .map_err(CallFailure::Contract))
            },
            |m: &Option<MappedOp>| {
                m.as_ref()
                    .map_or(0, |m| (m.function.len() + m.args.len()) as u64)
            },
        )
    }

    /// Runs a custom terminal command read-only against `view`.
    pub fn run_command(
        &self,
        contract: &Contract,
        view: &dyn StateView,
        name: &str,
        args: &[String],
    ) -> Result<CallOutcome<String>, RuntimeError> {
        let input = (name.len() + args.iter().map(String::len).sum::<usize>()) as u64;
        self.run(
            contract,
            Setup::read_only(view, OpKind::Command, input),
            |c, s| {
                Ok(c.call_run_command(s, name, args)?
                    .map_err(CallFailure::Contract))
            },
            |text: &String| text.len() as u64,
        )
    }

    /// A read-only query against `view`.
    pub fn query(
        &self,
        contract: &Contract,
        view: &dyn StateView,
        function: &str,
        args: &[u8],
    ) -> Result<CallOutcome<Vec<u8>>, RuntimeError> {
        self.run(
            contract,
            Setup::read_only(view, OpKind::Query, (function.len() + args.len()) as u64),
            |c, s| Ok(c.call_query(s, function, args)?.map_err(failure)),
            |r: &Vec<u8>| r.len() as u64,
        )
    }

    /// Executes a transaction, feature entry or chat message.
    pub fn execute(
        &self,
        contract: &Contract,
        request: &CallRequest<'_>,
        invocation: &Invocation,
    ) -> Result<CallOutcome<Vec<u8>>, RuntimeError> {
        let input = match invocation {
            Invocation::Tx(tx) => tx.function.len() + tx.args.len(),
            Invocation::Feature(f) => f.feature.len() + f.key.len() + f.value.len(),
            Invocation::Message(m) => m.text.len() + m.author.len() + 8,
        } as u64;
        self.run(
            contract,
            Setup::writable(request, input),
            |c, s| Ok(c.call_execute(s, invocation)?.map_err(failure)),
            |r: &Vec<u8>| r.len() as u64,
        )
    }

    /// Initialises the contract's state at deployment.
    pub fn init(
        &self,
        contract: &Contract,
        request: &CallRequest<'_>,
        args: &[u8],
    ) -> Result<CallOutcome<()>, RuntimeError> {
        self.run(
            contract,
            Setup::writable(request, args.len() as u64),
            |c, s| Ok(c.call_init(s, args)?.map_err(failure)),
            |_: &()| 0,
        )
    }

    /// Migrates state written by `from_version` of the contract.
    pub fn migrate(
        &self,
        contract: &Contract,
        request: &CallRequest<'_>,
        from_version: &str,
    ) -> Result<CallOutcome<()>, RuntimeError> {
        self.run(
            contract,
            Setup::writable(request, from_version.len() as u64),
            |c, s| Ok(c.call_migrate(s, from_version)?.map_err(failure)),
            |_: &()| 0,
        )
    }

    fn run_without_state<R>(
        &self,
        contract: &Contract,
        input_bytes: u64,
        call: impl FnOnce(
            &bindings::Contract,
            &mut Store<CallState>,
        ) -> wasmtime::Result<Result<R, CallFailure>>,
        output_bytes: impl Fn(&R) -> u64,
    ) -> Result<CallOutcome<R>, RuntimeError> {
        let setup = Setup {
            access: Access::None,
            ..Setup::read_only(&EmptyState, OpKind::Query, input_bytes)
        };
        self.run(contract, setup, call, output_bytes)
    }

    fn run<R>(
        &self,
        contract: &Contract,
        setup: Setup<'_>,
        call: impl FnOnce(
            &bindings::Contract,
            &mut Store<CallState>,
        ) -> wasmtime::Result<Result<R, CallFailure>>,
        output_bytes: impl Fn(&R) -> u64,
    ) -> Result<CallOutcome<R>, RuntimeError> {
        let Setup {
            view,
            access,
            context,
            reserved,
            input_bytes,
        } = setup;
        let limits = contract.limits;
        let state = CallState {
            // SAFETY: `view` outlives `store`, which is dropped at the end of this function.
            view: unsafe { BorrowedView::new(view) },
            access,
            context,
            limits,
            prices: self.prices,
            reserved,
            overlay: Default::default(),
            write_bytes: 0,
            events: Vec::new(),
            event_bytes: 0,
            debug: Vec::new(),
            limiter: CallLimiter {
                max_memory: limits.max_memory_bytes,
                max_table: limits.max_table_elements,
                max_instances: limits.max_instances,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let budget = limits.fuel_per_call;
        let input_charge = self.prices.io_byte.saturating_mul(input_bytes);
        let raw: Result<Result<R, CallFailure>, RuntimeError> = if input_charge > budget {
            Ok(Err(CallFailure::OutOfFuel))
        } else {
            store
                .set_fuel(budget - input_charge)
                .map_err(engine_error)?;
            // Run on a stack with room for the native wasm stack limit.
            stacker::maybe_grow(NATIVE_WASM_STACK + (1 << 20), 2 * NATIVE_WASM_STACK, || {
                let instance = match contract.pre.instantiate(&mut store) {
                    Ok(instance) => instance,
                    Err(e) => return classify(e).map(Err),
                };
                match call(&instance, &mut store) {
                    Ok(result) => Ok(result),
                    Err(e) => classify(e).map(Err),
                }
            })
        };
        let mut result = raw?;
        if let Ok(value) = &result {
            let out = output_bytes(value);
            let fuel = store.get_fuel().map_err(engine_error)?;
            let charge = self.prices.io_byte.saturating_mul(out);
            if out > u64::from(limits.max_result_bytes) {
                result = Err(CallFailure::ResultTooLarge(out));
            } else if charge > fuel {
                store.set_fuel(0).map_err(engine_error)?;
                result = Err(CallFailure::OutOfFuel);
            } else {
                store.set_fuel(fuel - charge).map_err(engine_error)?;
            }
        }
        if let Err(
            CallFailure::UnknownFunction(m)
            | CallFailure::InvalidArgs(m)
            | CallFailure::Contract(m)
            | CallFailure::Aborted(m),
        ) = &mut result
        {
            truncate_utf8(m, limits.max_result_bytes as usize);
        }
        let fuel_used = budget - store.get_fuel().map_err(engine_error)?;
        let data = store.into_data();
        let (writes, events) = if result.is_ok() {
            (data.writes(), data.events)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(CallOutcome {
            result,
            fuel_used,
            writes,
            events,
            debug: data.debug,
        })
    }
}

/// What one call runs against and with.
struct Setup<'v> {
    view: &'v dyn StateView,
    access: Access,
    context: CallContext,
    reserved: Arc<ReservedKeys>,
    /// Bytes of arguments passed in (charged per byte).
    input_bytes: u64,
}

impl<'v> Setup<'v> {
    /// A read-only call with the read-only context of `op_kind`.
    fn read_only(view: &'v dyn StateView, op_kind: OpKind, input_bytes: u64) -> Self {
        Setup {
            view,
            access: Access::ReadOnly,
            context: CallContext::read_only(op_kind),
            reserved: Arc::new(ReservedKeys::none()),
            input_bytes,
        }
    }

    /// A state-changing call of `request`.
    fn writable(request: &CallRequest<'v>, input_bytes: u64) -> Self {
        Setup {
            view: request.view,
            access: Access::ReadWrite,
            context: request.context.clone(),
            reserved: request.reserved.clone(),
            input_bytes,
        }
    }
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
    }
}

fn info_bytes(info: &ContractInfo) -> u64 {
    let functions: usize = info
        .functions
        .iter()
        .map(|f| f.name.len() + f.description.len() + f.args_schema.len())
        .sum();
    let features: usize = info
        .features
        .iter()
        .map(|f| f.name.len() + f.description.len())
        .sum();
    (info.name.len() + info.version.len() + functions + features) as u64
}

fn failure(e: ContractError) -> CallFailure {
    match e {
        ContractError::UnknownFunction(m) => CallFailure::UnknownFunction(m),
        ContractError::InvalidArgs(m) => CallFailure::InvalidArgs(m),
        ContractError::Failed(m) => CallFailure::Contract(m),
    }
}

/// Sorts an engine error into a recorded failure (deterministic) or a node fault.
fn classify(e: wasmtime::Error) -> Result<CallFailure, RuntimeError> {
    if let Some(host) = e.downcast_ref::<HostTrap>() {
        return match host {
            HostTrap::OutOfFuel => Ok(CallFailure::OutOfFuel),
            HostTrap::Abort(m) => Ok(CallFailure::Aborted(m.clone())),
            HostTrap::MemoryLimit(_) => Ok(CallFailure::MemoryLimit),
            HostTrap::TableLimit(_) => Ok(CallFailure::TableLimit),
            HostTrap::Node(m) => Err(RuntimeError::State(m.clone())),
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Ok(CallFailure::OutOfFuel),
            Trap::BadConversionToInteger => Ok(CallFailure::CallDepth),
            Trap::StackOverflow => Err(RuntimeError::NativeStack),
            Trap::Interrupt => Err(RuntimeError::Engine("interrupted".into())),
            other => Ok(CallFailure::Trap(other.to_string())),
        };
    }
    Err(RuntimeError::Engine(format!("{e:#}")))
}
