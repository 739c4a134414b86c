//! A kit for contracts written in WAT and assembled at run time (`wat` + `wit-component`):
//! hostile components in tests and the components of `trac bench contract`, with no wasm
//! toolchain needed.
//!
//! [`WatContract`] fills a core-module template that implements every export of the
//! `trac:contract` world with the canonical ABI (most of them trivially) and lets the caller
//! replace the bodies it cares about. Memory layout of the template: static data below 512, the
//! return area at 512..576, a bump heap from 4096 (`cabi_realloc`).
//!
//! Helpers available to bodies:
//! - `(call $ok_empty)` → `ok([])` for `execute`/`query`, `ok(())` for `init`/`migrate`;
//! - `(call $ok_bytes (ptr) (len))` → `ok(bytes)`;
//! - `(call $failed (ptr) (len))` → `err(contract-error::failed(string))`;
//! - `$get (key_ptr key_len ret)`, `$put (kp kl vp vl ret)`, `$delete (kp kl ret)`,
//!   `$scan (sp sl end_tag ep el limit ret)`, `$current (ret)`, `$emit (tp tl dp dl ret)`,
//!   `$debug (p l)`, `$abort (p l)`, `$blake3 (p l ret)`, `$verify (kp kl mp ml sp sl) -> i32`:
//!   the imports, lowered with the canonical ABI (`ret` is a return-area pointer).

/// The canonical ABI signatures of the world's exports, in order.
const EXPORTS: [(&str, &str); 8] = [
    ("describe", "(result i32)"),
    ("map-command", "(param i32 i32) (result i32)"),
    ("commands", "(result i32)"),
    ("run-command", "(param i32 i32 i32 i32) (result i32)"),
    (
        "execute",
        "(param $tag i32) (param $a i32) (param $b i32) (param $c i32) (param $d i32) (param $e i64) (param $f i32) (result i32)",
    ),
    (
        "query",
        "(param $fp i32) (param $fl i32) (param $ap i32) (param $al i32) (result i32)",
    ),
    ("init", "(param $ap i32) (param $al i32) (result i32)"),
    ("migrate", "(param $vp i32) (param $vl i32) (result i32)"),
];

/// A contract component built from WAT pieces.
#[derive(Debug, Clone, Default)]
pub struct WatContract {
    bodies: Vec<(String, String)>,
    extra: String,
    data: Vec<(u32, Vec<u8>)>,
}

impl WatContract {
    /// The template: describes itself as `wat-test` 0.1.0 and accepts every call doing nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the body of export `name` (instructions leaving its result on the stack).
    ///
    /// # Panics
    /// If `name` is not an export of the world (a mistake in the calling code).
    pub fn body(mut self, name: &str, body: &str) -> Self {
        assert!(
            EXPORTS.iter().any(|(n, _)| *n == name),
            "unknown export {name}"
        );
        self.bodies.push((name.to_string(), body.to_string()));
        self
    }

    /// Adds module fields (functions, globals, data) to the template.
    pub fn extra(mut self, fields: &str) -> Self {
        self.extra.push_str(fields);
        self.extra.push('\n');
        self
    }

    /// Places `bytes` in memory at `offset` (use offsets 128..512 or 1024..4096).
    pub fn data(mut self, offset: u32, bytes: &[u8]) -> Self {
        self.data.push((offset, bytes.to_vec()));
        self
    }

    /// The core module's WAT text.
    pub fn wat(&self) -> String {
        let mut wat = String::from(TEMPLATE_HEAD);
        for (name, sig) in EXPORTS {
            let body = self
                .bodies
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.as_str())
                .unwrap_or_else(|| default_body(name));
            wat.push_str(&format!("  (func (export \"{name}\") {sig}\n    {body})\n"));
        }
        for (offset, bytes) in &self.data {
            let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
            wat.push_str(&format!("  (data (i32.const {offset}) \"{escaped}\")\n"));
        }
        wat.push_str(&self.extra);
        wat.push_str(")\n");
        wat
    }

    /// The core module.
    pub fn core_module(&self) -> Result<Vec<u8>, KitError> {
        wat::parse_str(self.wat()).map_err(|e| KitError(format!("WAT does not parse: {e}")))
    }

    /// The component: the core module with the world's metadata, encoded by wit-component.
    pub fn build(&self) -> Result<Vec<u8>, KitError> {
        let module = self.core_module()?;
        let mut resolve = wit_parser::Resolve::new();
        let pkg = resolve
            .push_str("contract.wit", WORLD_WIT)
            .map_err(|e| KitError(format!("the WIT world does not parse: {e:#}")))?;
        componentize_in(module, &resolve, pkg, "contract")
    }
}

/// The contract world's WIT text (`wit/contract.wit`).
pub const WORLD_WIT: &str = include_str!("../../../wit/contract.wit");

/// Why a kit component could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KitError(pub String);

/// Wraps a core module into a component of `world` from the WIT package in directory `wit_dir`.
pub fn componentize(
    module: Vec<u8>,
    wit_dir: &std::path::Path,
    world: &str,
) -> Result<Vec<u8>, KitError> {
    let mut resolve = wit_parser::Resolve::new();
    let (pkg, _) = resolve.push_dir(wit_dir).map_err(|e| {
        KitError(format!(
            "WIT in {} does not parse: {e:#}",
            wit_dir.display()
        ))
    })?;
    componentize_in(module, &resolve, pkg, world)
}

fn componentize_in(
    mut module: Vec<u8>,
    resolve: &wit_parser::Resolve,
    pkg: wit_parser::PackageId,
    world: &str,
) -> Result<Vec<u8>, KitError> {
    let world = resolve
        .select_world(&[pkg], Some(world))
        .map_err(|e| KitError(format!("no world {world}: {e:#}")))?;
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| KitError(format!("cannot embed metadata: {e:#}")))?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .map_err(|e| KitError(format!("module refused by the component encoder: {e:#}")))?
        .encode()
        .map_err(|e| KitError(format!("cannot encode the component: {e:#}")))
}

fn default_body(name: &str) -> &'static str {
    match name {
        "describe" => "(call $describe_default)",
        "map-command" => {
            "(i32.store8 (i32.const 512) (i32.const 0)) (i32.store8 (i32.const 516) (i32.const 0)) (i32.const 512)"
        }
        "commands" => {
            "(i32.store (i32.const 512) (i32.const 0)) (i32.store (i32.const 516) (i32.const 0)) (i32.const 512)"
        }
        "run-command" => {
            "(i32.store8 (i32.const 512) (i32.const 0)) (i32.store (i32.const 516) (i32.const 0)) (i32.store (i32.const 520) (i32.const 0)) (i32.const 512)"
        }
        _ => "(call $ok_empty)",
    }
}

const TEMPLATE_HEAD: &str = r#"(module
  (import "trac:contract/state@0.1.0" "get" (func $get (param i32 i32 i32)))
  (import "trac:contract/state@0.1.0" "put" (func $put (param i32 i32 i32 i32 i32)))
  (import "trac:contract/state@0.1.0" "delete" (func $delete (param i32 i32 i32)))
  (import "trac:contract/state@0.1.0" "scan" (func $scan (param i32 i32 i32 i32 i32 i32 i32)))
  (import "trac:contract/context@0.1.0" "current" (func $current (param i32)))
  (import "trac:contract/events@0.1.0" "emit" (func $emit (param i32 i32 i32 i32 i32)))
  (import "trac:contract/events@0.1.0" "debug" (func $debug (param i32 i32)))
  (import "trac:contract/events@0.1.0" "abort" (func $abort (param i32 i32)))
  (import "trac:contract/crypto@0.1.0" "blake3" (func $blake3 (param i32 i32 i32)))
  (import "trac:contract/crypto@0.1.0" "ed25519-verify" (func $verify (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 100) "wat-test")
  (data (i32.const 110) "0.1.0")
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add
                  (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536))
                  (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (local.get $ptr))
  (func $describe_default (result i32)
    (i32.store (i32.const 512) (i32.const 100)) (i32.store (i32.const 516) (i32.const 8))
    (i32.store (i32.const 520) (i32.const 110)) (i32.store (i32.const 524) (i32.const 5))
    (i32.store (i32.const 528) (i32.const 0)) (i32.store (i32.const 532) (i32.const 0))
    (i32.store (i32.const 536) (i32.const 0)) (i32.store (i32.const 540) (i32.const 0))
    (i32.const 512))
  (func $ok_empty (result i32)
    (i32.store8 (i32.const 512) (i32.const 0))
    (i32.store (i32.const 516) (i32.const 0))
    (i32.store (i32.const 520) (i32.const 0))
    (i32.const 512))
  (func $ok_bytes (param $p i32) (param $l i32) (result i32)
    (i32.store8 (i32.const 512) (i32.const 0))
    (i32.store (i32.const 516) (local.get $p))
    (i32.store (i32.const 520) (local.get $l))
    (i32.const 512))
  (func $failed (param $p i32) (param $l i32) (result i32)
    (i32.store8 (i32.const 512) (i32.const 1))
    (i32.store8 (i32.const 516) (i32.const 2))
    (i32.store (i32.const 520) (local.get $p))
    (i32.store (i32.const 524) (local.get $l))
    (i32.const 512))
"#;
