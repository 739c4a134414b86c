//! Deterministic static validation of a contract component before it is accepted.
//!
//! The same bytes give the same verdict on every node: validation depends only on the bytes,
//! the [`Limits`] and this code (never on the machine or on wasmtime's compiler).

use wasmparser::{
    ComponentTypeRef, Encoding, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures,
};

use super::limits::Limits;
use crate::crypto::{Hash32, hash};

/// The WIT package version every allowed import carries.
pub const WIT_PACKAGE: &str = "trac:contract";
/// Version of the WIT package.
pub const WIT_VERSION: &str = "0.1.0";

/// Interfaces a contract may import; anything else (WASI included) is refused.
pub const ALLOWED_INTERFACES: [&str; 5] = ["types", "state", "context", "events", "crypto"];

/// Functions a contract must export.
pub const REQUIRED_EXPORTS: [&str; 8] = [
    "describe",
    "map-command",
    "commands",
    "run-command",
    "execute",
    "query",
    "init",
    "migrate",
];

/// Most core modules in one component.
pub const MAX_CORE_MODULES: u32 = 32;
/// Most functions (imported and defined) in one core module.
pub const MAX_FUNCTIONS: u32 = 100_000;
/// Most locals (parameters included) in one function.
pub const MAX_LOCALS: u32 = 2_048;
/// Most globals in one core module.
pub const MAX_GLOBALS: u32 = 1_024;
/// Largest function body in bytes.
pub const MAX_FUNCTION_BYTES: u32 = 512 << 10;

/// The WebAssembly features contracts may use. Threads, relaxed SIMD, tail calls, exceptions,
/// GC, memory64, multi-memory and component-model async are off: they are either
/// non-deterministic or would escape the call-depth instrumentation.
pub fn contract_features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::SIMD
        | WasmFeatures::FLOATS
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::COMPONENT_MODEL
}

/// Why a component was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Larger than the component size limit.
    #[error("component is {size} bytes, above the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A plain core module (contracts must be components).
    #[error(
        "this is a core WebAssembly module, not a component; wrap it with `wasm-tools component new` or build it with `trac contract build`"
    )]
    CoreModule,
    /// Not WebAssembly, or invalid under the contract feature set.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// An import outside the allow-list.
    #[error(
        "refused import `{0}`: contracts may only import trac:contract/{{types,state,context,events,crypto}}@0.1.0 (no WASI)"
    )]
    ForbiddenImport(String),
    /// A required export is missing.
    #[error("missing export `{0}` of the trac:contract world")]
    MissingExport(String),
    /// A count above its limit.
    #[error("{what}: {count} is above the limit of {max}")]
    TooMany {
        /// What was counted.
        what: String,
        /// How many there are.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// An instruction contracts may not use.
    #[error(
        "core module {module}, function {function}: instruction `{instruction}` is not allowed ({why})"
    )]
    ForbiddenInstruction {
        /// Index of the core module in the component.
        module: u32,
        /// Function index in that module.
        function: u32,
        /// The instruction.
        instruction: String,
        /// Why.
        why: &'static str,
    },
}

/// What validation learned about an accepted component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentReport {
    /// Size in bytes.
    pub size: usize,
    /// BLAKE3 of the bytes: the contract's identity.
    pub code_hash: Hash32,
    /// Top-level imports.
    pub imports: Vec<String>,
    /// Top-level exports.
    pub exports: Vec<String>,
    /// Number of core modules.
    pub core_modules: u32,
    /// Functions defined across all core modules.
    pub functions: u32,
    /// Largest initial linear memory, in bytes.
    pub max_initial_memory: u64,
}

fn too_many(what: impl Into<String>, count: u64, max: u64) -> Result<(), ValidationError> {
    if count > max {
        Err(ValidationError::TooMany {
            what: what.into(),
            count,
            max,
        })
    } else {
        Ok(())
    }
}

/// Whether an import name is on the allow-list: `trac:contract/<interface>@0.1.0`.
pub fn import_allowed(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(WIT_PACKAGE)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    let Some((interface, version)) = rest.split_once('@') else {
        return false;
    };
    version == WIT_VERSION && ALLOWED_INTERFACES.contains(&interface)
}

/// Validates `bytes` as a contract component under `limits`.
pub fn validate_component(
    bytes: &[u8],
    limits: &Limits,
) -> Result<ComponentReport, ValidationError> {
    if bytes.len() > limits.max_component_bytes as usize {
        return Err(ValidationError::TooLarge {
            size: bytes.len(),
            max: limits.max_component_bytes,
        });
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(ValidationError::CoreModule);
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(ValidationError::Invalid(
            "not a WebAssembly component (bad magic or version)".into(),
        ));
    }
    Validator::new_with_features(contract_features())
        .validate_all(bytes)
        .map_err(|e| ValidationError::Invalid(e.to_string()))?;

    let mut report = ComponentReport {
        size: bytes.len(),
        code_hash: hash(bytes),
        imports: Vec::new(),
        exports: Vec::new(),
        core_modules: 0,
        functions: 0,
        max_initial_memory: 0,
    };
    // Nesting: every `Version` payload opens a module or component, every `End` closes one.
    let mut stack: Vec<Encoding> = Vec::new();
    let mut module_index = 0u32;
    let mut imported_funcs = 0u32;
    let mut globals = 0u32;
    let mut body_index = 0u32;
    let mut instances = 0u64;
    // Initial bytes of the current module's memory 0 (defined or imported), if known.
    let mut memory0: Option<u64> = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ValidationError::Invalid(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if encoding == Encoding::Module {
                    report.core_modules += 1;
                    too_many(
                        "core modules",
                        report.core_modules.into(),
                        MAX_CORE_MODULES.into(),
                    )?;
                    module_index = report.core_modules - 1;
                    imported_funcs = 0;
                    globals = 0;
                    body_index = 0;
                    memory0 = None;
                }
                stack.push(encoding);
            }
            Payload::End(_) => {
                stack.pop();
            }
            Payload::InstanceSection(reader) => {
                instances += u64::from(reader.count());
                too_many("core instances", instances, limits.max_instances.into())?;
            }
            Payload::ComponentImportSection(reader) if stack.len() == 1 => {
                for import in reader {
                    let import = import.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    let name = import.name.name.to_string();
                    match import.ty {
                        // Types carry no capability (the world's `use`d types appear as
                        // imported types).
                        ComponentTypeRef::Type(_) => continue,
                        ComponentTypeRef::Instance(_) if import_allowed(&name) => {}
                        _ => return Err(ValidationError::ForbiddenImport(name)),
                    }
                    report.imports.push(name);
                }
            }
            Payload::ComponentExportSection(reader) if stack.len() == 1 => {
                for export in reader {
                    let export = export.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    report.exports.push(export.name.name.to_string());
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    if matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)) {
                        imported_funcs += 1;
                    }
                    if matches!(import.ty, TypeRef::Global(_)) {
                        globals += 1;
                    }
                    if let TypeRef::Memory(memory) = import.ty
                        && memory0.is_none()
                    {
                        memory0 = Some(memory.initial.saturating_mul(65_536));
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                let defined_funcs = reader.count();
                report.functions += defined_funcs;
                too_many(
                    format!("functions in core module {module_index}"),
                    u64::from(imported_funcs) + u64::from(defined_funcs),
                    MAX_FUNCTIONS.into(),
                )?;
            }
            Payload::GlobalSection(reader) => {
                globals += reader.count();
                too_many(
                    format!("globals in core module {module_index}"),
                    globals.into(),
                    MAX_GLOBALS.into(),
                )?;
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    let initial = memory.initial.saturating_mul(65_536);
                    report.max_initial_memory = report.max_initial_memory.max(initial);
                    memory0.get_or_insert(initial);
                    too_many(
                        format!("initial memory bytes of core module {module_index}"),
                        initial,
                        limits.max_memory_bytes,
                    )?;
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    too_many(
                        format!("initial table elements of core module {module_index}"),
                        table.ty.initial,
                        limits.max_table_elements.into(),
                    )?;
                }
            }
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    let wasmparser::DataKind::Active {
                        memory_index: 0,
                        offset_expr,
                    } = &data.kind
                    else {
                        continue;
                    };
                    // Only constant offsets can be checked here; an offset read from an
                    // imported global is checked by instantiation (a recorded trap).
                    let mut ops = offset_expr.get_operators_reader();
                    let offset = match ops.read() {
                        Ok(Operator::I32Const { value }) => u64::from(value as u32),
                        _ => continue,
                    };
                    let end = offset.saturating_add(data.data.len() as u64);
                    if let Some(size) = memory0
                        && end > size
                    {
                        return Err(ValidationError::Invalid(format!(
                            "core module {module_index}: a data segment ends at byte {end}, beyond the initial memory of {size} bytes (every instantiation would trap)"
                        )));
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let function = imported_funcs + body_index;
                body_index += 1;
                let size = body.range().len() as u64;
                too_many(
                    format!("bytes of function {function} in core module {module_index}"),
                    size,
                    MAX_FUNCTION_BYTES.into(),
                )?;
                let mut locals = 0u64;
                let reader = body
                    .get_locals_reader()
                    .map_err(|e| ValidationError::Invalid(e.to_string()))?;
                for local in reader {
                    let (count, _) = local.map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    locals += u64::from(count);
                }
                too_many(
                    format!("locals of function {function} in core module {module_index}"),
                    locals,
                    MAX_LOCALS.into(),
                )?;
                let mut ops = body
                    .get_operators_reader()
                    .map_err(|e| ValidationError::Invalid(e.to_string()))?;
                while !ops.eof() {
                    let op = ops
                        .read()
                        .map_err(|e| ValidationError::Invalid(e.to_string()))?;
                    if let Some(name) = trapping_conversion(&op) {
                        return Err(ValidationError::ForbiddenInstruction {
                            module: module_index,
                            function,
                            instruction: name.to_string(),
                            why: "trapping float-to-int conversions are reserved for the call-depth guard; use the saturating forms (Rust's `as` does)",
                        });
                    }
                }
            }
            _ => {}
        }
    }
    for export in REQUIRED_EXPORTS {
        if !report.exports.iter().any(|e| e == export) {
            return Err(ValidationError::MissingExport(export.to_string()));
        }
    }
    Ok(report)
}

/// The trapping float-to-int conversions (the depth guard's trap, see `instrument`).
fn trapping_conversion(op: &Operator<'_>) -> Option<&'static str> {
    Some(match op {
        Operator::I32TruncF32S => "i32.trunc_f32_s",
        Operator::I32TruncF32U => "i32.trunc_f32_u",
        Operator::I32TruncF64S => "i32.trunc_f64_s",
        Operator::I32TruncF64U => "i32.trunc_f64_u",
        Operator::I64TruncF32S => "i64.trunc_f32_s",
        Operator::I64TruncF32U => "i64.trunc_f32_u",
        Operator::I64TruncF64S => "i64.trunc_f64_s",
        Operator::I64TruncF64U => "i64.trunc_f64_u",
        _ => return None,
    })
}
