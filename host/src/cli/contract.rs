//! `trac contract build|inspect|exec`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use crate::builder::{self, Route};
use crate::codec::json::{json_text_to_msgpack, msgpack_to_json};
use crate::crypto::{Hash32, PublicKey, decode_address};
use crate::runtime::{
    CallContext, CallFailure, CallOutcome, CallRequest, FunctionKind, Invocation, Limits, OpKind,
    ReservedKeys, Runtime, RuntimeConfig, TxCall, validate_component,
};
use crate::store::{Store, StoreOptions, StoreRead};

/// `trac contract` arguments.
#[derive(Debug, Args)]
pub struct ContractArgs {
    #[command(subcommand)]
    command: ContractCommand,
}

#[derive(Debug, Subcommand)]
enum ContractCommand {
    /// Build a contract crate into a validated component (detects a wasm32 toolchain and says
    /// what to install when there is none).
    Build {
        /// The contract crate's directory.
        crate_dir: PathBuf,
        /// Where to write the component (default: <crate>/target/…/<name>.component.wasm).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Toolchain route.
        #[arg(long, value_enum, default_value = "auto")]
        toolchain: Route,
    },
    /// Validate a component and show what it offers: describe output, commands, imports, size,
    /// code hash and the validation verdict (exit status 1 when refused).
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run one call against a standalone local state and print result, fuel, writes and events.
    Exec(ExecArgs),
    /// Deploy a component on a node's subnet as its admin (the key of the peer store), through
    /// the running node (which appends and broadcasts it) or, when the node is stopped,
    /// appended to its store (broadcast when it starts).
    Deploy(DeployArgs),
}

/// `trac contract deploy` arguments.
#[derive(Debug, Args)]
struct DeployArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The node's peer store folder (holding keypair.json and the subnet store).
    #[arg(long)]
    store: PathBuf,
    /// How long to wait for a running node to take the deployment, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    #[command(flatten)]
    passphrase: super::passphrase::PassphraseArgs,
}

#[derive(Debug, Clone, Args)]
struct CacheArgs {
    /// Directory of compiled contracts (default: $XDG_CACHE_HOME/trac/contracts or
    /// ~/.cache/trac/contracts).
    #[arg(long, env = "TRAC_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    fn runtime(&self) -> anyhow::Result<Runtime> {
        let cache_dir = self.cache_dir.clone().or_else(default_cache_dir);
        Ok(Runtime::new(RuntimeConfig {
            cache_dir,
            ..RuntimeConfig::default()
        })?)
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("trac").join("contracts"))
}

/// `trac contract deploy`: validates the component, unlocks the store's peer key, then hands
/// the component to the running node or appends its deploy ops to the stopped node's store.
fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    use crate::node::inbox::{self, LockError, StoreLock};

    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    validate_component(&component, &Limits::default())
        .map_err(|e| anyhow::anyhow!("{} is refused: {e}", args.file.display()))?;
    if !args.store.is_dir() {
        bail!("{} is not a peer store folder", args.store.display());
    }
    let keystore = args.store.join(crate::node::config::KEYSTORE_FILE);
    if !keystore.is_file() {
        bail!(
            "{} has no keystore ({}): is it a node's peer store?",
            args.store.display(),
            keystore.display()
        );
    }
    let passphrase = if crate::crypto::keystore::info(&keystore)?.encrypted {
        args.passphrase
            .resolve(super::passphrase::Purpose::Unlock)?
    } else {
        zeroize::Zeroizing::new(String::new())
    };
    let key = crate::crypto::keystore::unlock(&keystore, &passphrase)
        .with_context(|| format!("cannot unlock {}", keystore.display()))?;
    match StoreLock::acquire(&args.store) {
        Ok(_lock) => {
            let mut ledger = crate::node::runner::open_subnet_ledger(&args.store, key.clone())?;
            let (text, _) = crate::node::terminal::deploy_contract(&mut ledger, &key, &component)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{text}");
            println!("The node is stopped: the entries go out when it starts.");
            Ok(())
        }
        // The running node signs with this same key; unlocking it above is what shows that
        // the caller holds it.
        Err(LockError::InUse(_)) => {
            let path = inbox::submit_component(&args.store, &component)
                .context("cannot write to the node's inbox")?;
            println!("Handed to the running node; waiting for it to append the deployment...");
            match inbox::wait_outcome(&path, std::time::Duration::from_secs(args.wait)) {
                Some(Ok(text)) => {
                    println!("{text}");
                    Ok(())
                }
                Some(Err(message)) => bail!("the node refused the deployment: {message}"),
                None => bail!(
                    "the node did not take the deployment within {} s; it stays queued in {}",
                    args.wait,
                    path.display()
                ),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Which entry point `exec` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Entry {
    /// `query` for functions the contract describes as queries, else `execute`.
    Auto,
    /// A transaction (`execute`).
    Tx,
    /// A read-only query (nothing is ever written).
    Query,
    /// `init`, with the arguments.
    Init,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// State directory (an LMDB store, created if missing).
    #[arg(long)]
    state: PathBuf,
    /// Function to call.
    #[arg(long, required_unless_present = "entry")]
    call: Option<String>,
    /// Arguments as JSON (converted to MessagePack; numbers must be integers).
    #[arg(long, default_value = "null")]
    args: String,
    /// Simulate: run the call but write nothing.
    #[arg(long)]
    sim: bool,
    /// Entry point.
    #[arg(long, value_enum, default_value = "auto")]
    entry: Entry,
    /// Requester: a trac1… address or 64 hex digits (default: all zeros).
    #[arg(long)]
    sender: Option<String>,
    /// Checkpoint time in milliseconds given to the contract.
    #[arg(long, default_value_t = 0)]
    time: u64,
    /// Log position given to the contract.
    #[arg(long, default_value_t = 0)]
    position: u64,
    /// Fuel for the call (default: the protocol default).
    #[arg(long)]
    fuel: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs a `trac contract` command.
pub fn run(args: ContractArgs) -> anyhow::Result<()> {
    match args.command {
        ContractCommand::Build {
            crate_dir,
            out,
            toolchain,
        } => {
            if !crate_dir.join("Cargo.toml").exists() {
                return Err(builder::BuildError::NotACrate(crate_dir).into());
            }
            let toolchain = builder::detect(toolchain)?;
            eprintln!(
                "building {} with {}",
                crate_dir.display(),
                toolchain.describe()
            );
            let built = builder::build(&crate_dir, &toolchain, out.as_deref())?;
            println!("component  {}", built.path.display());
            println!("size       {} bytes", built.report.size);
            println!("code hash  {}", built.code_hash());
            println!("verdict    accepted");
            Ok(())
        }
        ContractCommand::Inspect { file, json, cache } => inspect(&file, json, &cache),
        ContractCommand::Exec(exec_args) => exec(exec_args),
        ContractCommand::Deploy(args) => deploy(args),
    }
}

fn read_component(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read component {}", file.display()))
}

fn inspect(file: &Path, as_json: bool, cache: &CacheArgs) -> anyhow::Result<()> {
    let bytes = read_component(file)?;
    let limits = Limits::default();
    let code_hash = crate::crypto::hash(&bytes);
    let report = match validate_component(&bytes, &limits) {
        Ok(report) => report,
        Err(e) => {
            if as_json {
                println!(
                    "{}",
                    json!({
                        "file": file.display().to_string(),
                        "size": bytes.len(),
                        "code_hash": code_hash.to_hex(),
                        "verdict": "refused",
                        "reason": e.to_string(),
                    })
                );
            } else {
                println!("file       {}", file.display());
                println!("size       {} bytes", bytes.len());
                println!("code hash  {code_hash}");
                println!("verdict    refused: {e}");
            }
            bail!("component refused: {e}");
        }
    };
    let runtime = cache.runtime()?;
    let contract = runtime.load(&bytes, &limits)?;
    let info = runtime
        .describe(&contract)?
        .result
        .map_err(call_error("describe"))?;
    let commands = runtime
        .commands(&contract)?
        .result
        .map_err(call_error("commands"))?;
    let functions: Vec<Json> = info
        .functions
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": kind_name(f.kind),
                "description": f.description,
                "args_schema": serde_json::from_str::<Json>(&f.args_schema)
                    .unwrap_or_else(|_| Json::String(f.args_schema.clone())),
            })
        })
        .collect();
    let doc = json!({
        "file": file.display().to_string(),
        "size": report.size,
        "code_hash": report.code_hash.to_hex(),
        "verdict": "accepted",
        "imports": report.imports,
        "exports": report.exports,
        "core_modules": report.core_modules,
        "functions_defined": report.functions,
        "contract": { "name": info.name, "version": info.version },
        "functions": functions,
        "features": info.features.iter().map(|f| json!({"name": f.name, "description": f.description})).collect::<Vec<_>>(),
        "commands": commands.iter().map(|c| json!({"name": c.name, "usage": c.usage, "help": c.help})).collect::<Vec<_>>(),
    });
    if as_json {
        println!("{doc}");
        return Ok(());
    }
    println!("file       {}", file.display());
    println!("size       {} bytes", report.size);
    println!("code hash  {}", report.code_hash);
    println!("verdict    accepted");
    println!("contract   {} {}", info.name, info.version);
    println!("imports    {}", report.imports.join(", "));
    println!("exports    {}", report.exports.join(", "));
    println!(
        "modules    {} core modules, {} functions",
        report.core_modules, report.functions
    );
    println!("functions  {}", info.functions.len());
    for f in &info.functions {
        println!("  {} ({}) {}", f.name, kind_name(f.kind), f.description);
        if !f.args_schema.is_empty() {
            println!("    args schema: {}", f.args_schema);
        }
    }
    println!("features   {}", info.features.len());
    for f in &info.features {
        println!("  {} {}", f.name, f.description);
    }
    println!("commands   {}", commands.len());
    for c in &commands {
        println!("  {:<28} {}", c.usage, c.help);
    }
    Ok(())
}

fn kind_name(kind: FunctionKind) -> &'static str {
    match kind {
        FunctionKind::Tx => "tx",
        FunctionKind::Query => "query",
        FunctionKind::Both => "tx or query",
    }
}

fn call_error(what: &'static str) -> impl Fn(CallFailure) -> anyhow::Error {
    move |f| anyhow::anyhow!("the contract's `{what}` failed: {f}")
}

fn parse_sender(text: &str) -> anyhow::Result<PublicKey> {
    if text.starts_with("trac1") {
        return decode_address(text).with_context(|| format!("invalid --sender {text:?}"));
    }
    PublicKey::from_hex(text).with_context(|| {
        format!("invalid --sender {text:?}: expected a trac1… address or 64 hex digits")
    })
}

fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let bytes = read_component(&args.file)?;
    let call_args = json_text_to_msgpack(&args.args).context("invalid --args")?;
    let sender = match &args.sender {
        Some(s) => parse_sender(s)?,
        None => PublicKey([0; 32]),
    };
    let mut limits = Limits::default();
    if let Some(fuel) = args.fuel {
        limits.fuel_per_call = fuel;
    }
    limits.check().context("invalid --fuel")?;
    let runtime = args.cache.runtime()?;
    let contract = runtime.load(&bytes, &limits)?;
    let function = args.call.clone().unwrap_or_default();
    let entry = match args.entry {
        Entry::Auto => {
            let info = runtime
                .describe(&contract)?
                .result
                .map_err(call_error("describe"))?;
            match info.functions.iter().find(|f| f.name == function) {
                Some(f) if f.kind == FunctionKind::Query => Entry::Query,
                _ => Entry::Tx,
            }
        }
        other => other,
    };
    let store = Store::open(&args.state, StoreOptions::default())?;
    let context = CallContext {
        op_kind: if entry == Entry::Init {
            OpKind::Init
        } else {
            OpKind::Tx
        },
        tx_hash: crate::crypto::hash_parts(&[function.as_bytes(), &[0], &call_args]),
        sender,
        validator: None,
        log_position: args.position,
        checkpoint_time: args.time,
    };
    let (outcome, committed, root) = match entry {
        Entry::Query => {
            let read = store.read()?;
            let outcome = runtime.query(&contract, &read, &function, &call_args)?;
            let root = read.state_root()?;
            (outcome, false, root)
        }
        Entry::Tx | Entry::Init | Entry::Auto => {
            let mut batch = store.write()?;
            let request = CallRequest {
                view: &batch,
                context,
                reserved: Arc::new(ReservedKeys::none()),
            };
            let outcome: CallOutcome<Vec<u8>> = if entry == Entry::Init {
                let o = runtime.init(&contract, &request, &call_args)?;
                CallOutcome {
                    result: o.result.map(|()| Vec::new()),
                    fuel_used: o.fuel_used,
                    writes: o.writes,
                    events: o.events,
                    debug: o.debug,
                }
            } else {
                let invocation = Invocation::Tx(TxCall {
                    function: function.clone(),
                    args: call_args.clone(),
                });
                runtime.execute(&contract, &request, &invocation)?
            };
            let commit = outcome.result.is_ok() && !args.sim;
            if commit {
                for write in &outcome.writes {
                    match &write.value {
                        Some(value) => batch.state_put(&write.key, value)?,
                        None => batch.state_delete(&write.key)?,
                    };
                }
            }
            let root = batch.state_root()?;
            if commit {
                batch.commit()?;
            }
            (outcome, commit, root)
        }
    };
    print_outcome(&args, entry, &outcome, committed, &root);
    match &outcome.result {
        Ok(_) => Ok(()),
        Err(failure) => bail!("the call failed: {failure}"),
    }
}

/// A key for people: text when printable UTF-8, else hex.
fn show_key(bytes: &[u8]) -> Json {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => Json::String(text.to_string()),
        _ => Json::String(format!("0x{}", hex::encode(bytes))),
    }
}

/// A value or result for people: JSON when it is one MessagePack value (how contracts encode
/// results and the SDK stores values), else as a key.
fn show_bytes(bytes: &[u8]) -> Json {
    msgpack_to_json(bytes).unwrap_or_else(|| show_key(bytes))
}

fn entry_name(entry: Entry) -> &'static str {
    match entry {
        Entry::Auto | Entry::Tx => "tx",
        Entry::Query => "query",
        Entry::Init => "init",
    }
}

fn print_outcome(
    args: &ExecArgs,
    entry: Entry,
    outcome: &CallOutcome<Vec<u8>>,
    committed: bool,
    root: &Hash32,
) {
    let result = match &outcome.result {
        Ok(bytes) => json!({ "ok": show_bytes(bytes) }),
        Err(failure) => json!({ "error": failure.to_string() }),
    };
    let writes: Vec<Json> = outcome
        .writes
        .iter()
        .map(|w| {
            json!({
                "key": show_key(&w.key),
                "value": w.value.as_deref().map(show_bytes),
            })
        })
        .collect();
    let events: Vec<Json> = outcome
        .events
        .iter()
        .map(|e| json!({ "topic": e.topic, "data": show_bytes(&e.data) }))
        .collect();
    let state = if committed {
        "committed"
    } else if args.sim || entry == Entry::Query {
        "simulated: nothing written"
    } else {
        "not written: the call failed"
    };
    if args.json {
        println!(
            "{}",
            json!({
                "call": args.call,
                "entry": entry_name(entry),
                "result": result,
                "fuel_used": outcome.fuel_used,
                "writes": writes,
                "events": events,
                "debug": outcome.debug,
                "committed": committed,
                "state_root": root.to_hex(),
            })
        );
        return;
    }
    println!(
        "call       {} ({})",
        args.call.as_deref().unwrap_or(""),
        entry_name(entry)
    );
    match &outcome.result {
        Ok(bytes) => println!("result     ok {}", show_bytes(bytes)),
        Err(failure) => println!("result     failed: {failure}"),
    }
    println!("fuel       {}", outcome.fuel_used);
    println!("writes     {}", outcome.writes.len());
    for w in &writes {
        match &w["value"] {
            Json::Null => println!("  delete {}", w["key"]),
            value => println!("  put    {} = {}", w["key"], value),
        }
    }
    println!("events     {}", outcome.events.len());
    for e in &events {
        println!("  {} {}", e["topic"], e["data"]);
    }
    if !outcome.debug.is_empty() {
        println!("debug");
        for line in &outcome.debug {
            println!("  {line}");
        }
    }
    println!("state      {state}, root {root}");
}
