//! Deterministic call-depth limiting (docs/protocol.md, "Call depth").
//!
//! Each core module of an accepted component is rewritten before compilation:
//!
//! - two mutable `i32` globals, the depth counter and the stack counter, are appended to the
//!   module's globals;
//! - every function body starts with a prologue that increments the counter and, when it
//!   exceeds the limit, executes `f32.const nan; i32.trunc_f32_u`, whose trap
//!   (`BadConversionToInteger`) contracts cannot otherwise produce: validation refuses the
//!   trapping float-to-int instructions in contract code;
//! - the original body is wrapped in a block with the function's result type, so every branch
//!   to the function's outermost label lands in that block, after which the counter is
//!   decremented; every `return` decrements the counter first.
//!
//! A second counter bounds the native stack the frames can use. Every function adds an estimate
//! of its frame on entry and subtracts it on exit: [`STACK_FRAME_BYTES`] plus
//! [`STACK_SLOT_BYTES`] for each parameter, local and value an operator pushes, so for every
//! value the function can hold at once, wherever the compiler keeps it. The same trap fires when
//! the sum exceeds [`STACK_BUDGET_BYTES`], half the native wasm stack. Without it,
//! `max_call_depth` frames with many live values (locals, or the operand stack, which only the
//! code size bounds) exhaust the native stack: a node error, not a recorded failure. Ordinary
//! frames stay far below the budget at the deepest allowed depth.
//!
//! The depth therefore depends only on the wasm code, never on the native stack, and the same
//! call traps at the same depth on every node. Tail calls and exceptions, which would bypass the
//! decrement, are not in the contract feature set. Each call runs in a fresh instance, so a trap
//! that skips decrements leaves nothing behind.

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, ReencodeComponent, utils};
use wasm_encoder::{
    BlockType, ConstExpr, GlobalSection, GlobalType, Ieee32, Instruction, SectionId, ValType,
};
use wasmparser::{FuncType, Parser, Payload, TypeRef};

use super::engine::NATIVE_WASM_STACK;

/// Estimated native stack bytes of one wasm value held by a frame (a spill slot; v128 needs 16).
pub const STACK_SLOT_BYTES: u32 = 16;
/// Estimated fixed native stack bytes of a frame (return address, frame pointer, saved
/// registers, outgoing arguments).
pub const STACK_FRAME_BYTES: u32 = 256;
/// The estimated bytes the active frames of a core module may use together: half the native
/// wasm stack, leaving the rest as margin for the estimate, trampolines and host calls.
pub const STACK_BUDGET_BYTES: u32 = (NATIVE_WASM_STACK / 2) as u32;

/// Why instrumentation failed (the component passed validation, so this means malformed
/// input that slipped through, reported as a validation failure by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot instrument component: {0}")]
pub struct InstrumentError(pub String);

/// What one core module needs before it is re-encoded.
#[derive(Debug, Default, Clone)]
struct ModulePlan {
    /// Function types of the module, by type index.
    types: Vec<FuncType>,
    /// Type index of every function (imported first).
    func_types: Vec<u32>,
    /// Number of imported functions.
    imported_funcs: u32,
    /// Index the depth global gets (the stack global follows it).
    depth_global: u32,
    /// Whether the module has a global section (else one is inserted).
    has_global_section: bool,
    /// Result lists with more than one value, each needing a block type `[] -> results`, with
    /// the type index it gets.
    multi_results: Vec<(Vec<wasmparser::ValType>, u32)>,
}

fn plan_module(bytes: &[u8]) -> Result<ModulePlan, InstrumentError> {
    let err = |e: wasmparser::BinaryReaderError| InstrumentError(e.to_string());
    let mut plan = ModulePlan::default();
    let mut globals = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(err)? {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    plan.types.push(ty.map_err(err)?);
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import.map_err(err)?.ty {
                        TypeRef::Func(idx) | TypeRef::FuncExact(idx) => {
                            plan.func_types.push(idx);
                            plan.imported_funcs += 1;
                        }
                        TypeRef::Global(_) => globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for idx in reader {
                    plan.func_types.push(idx.map_err(err)?);
                }
            }
            Payload::GlobalSection(reader) => {
                plan.has_global_section = true;
                globals += reader.count();
            }
            // Nested payloads cannot occur in a core module.
            _ => {}
        }
    }
    plan.depth_global = globals;
    let mut next_type = plan.types.len() as u32;
    for &ty in &plan.func_types[plan.imported_funcs as usize..] {
        let results = plan
            .types
            .get(ty as usize)
            .ok_or_else(|| InstrumentError(format!("function type {ty} out of range")))?
            .results()
            .to_vec();
        if results.len() > 1 && !plan.multi_results.iter().any(|(r, _)| *r == results) {
            plan.multi_results.push((results, next_type));
            next_type += 1;
        }
    }
    Ok(plan)
}

/// The re-encoder that inserts the depth counter into every core module.
struct DepthInstrumenter {
    max_depth: u32,
    plan: ModulePlan,
    /// Index of the next defined function body.
    next_body: u32,
    global_emitted: bool,
}

type Re<T> = Result<T, ReencodeError<InstrumentError>>;

impl DepthInstrumenter {
    /// Declares the depth and the stack counters.
    fn depth_global_decl(&self, globals: &mut GlobalSection) {
        for _ in 0..2 {
            globals.global(
                GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &ConstExpr::i32_const(0),
            );
        }
    }

    /// Number of values pushed by `op` at most (a call pushes all its results).
    fn pushed(&self, op: &wasmparser::Operator<'_>) -> u64 {
        let results = |ty: Option<&FuncType>| ty.map_or(1, |t| t.results().len() as u64);
        match op {
            wasmparser::Operator::Call { function_index } => results(
                self.plan
                    .func_types
                    .get(*function_index as usize)
                    .and_then(|t| self.plan.types.get(*t as usize)),
            ),
            wasmparser::Operator::CallIndirect { type_index, .. } => {
                results(self.plan.types.get(*type_index as usize))
            }
            _ => 1,
        }
        .max(1)
    }

    /// The estimated native stack bytes of a frame of `func` (of type `ty`).
    fn frame_estimate(&self, func: &wasmparser::FunctionBody<'_>, ty: u32) -> Re<u32> {
        let mut values = self.plan.types[ty as usize].params().len() as u64;
        for local in func.get_locals_reader()? {
            values += u64::from(local?.0);
        }
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            values += self.pushed(&reader.read()?);
        }
        let bytes = u64::from(STACK_FRAME_BYTES) + u64::from(STACK_SLOT_BYTES) * values;
        // Clamped so the counter cannot overflow: a larger frame traps on entry either way.
        Ok(bytes.min(u64::from(STACK_BUDGET_BYTES) + 1) as u32)
    }

    fn block_type(&mut self, results: &[wasmparser::ValType]) -> Re<BlockType> {
        Ok(match results {
            [] => BlockType::Empty,
            [one] => BlockType::Result(self.val_type(*one)?),
            many => {
                let idx = self
                    .plan
                    .multi_results
                    .iter()
                    .find(|(r, _)| r == many)
                    .map(|(_, idx)| *idx)
                    .expect("planned");
                BlockType::FunctionType(idx)
            }
        })
    }
}

/// `depth -= 1; stack -= frame`.
fn decrement(f: &mut wasm_encoder::Function, global: u32, frame: u32) {
    for (global, amount) in [(global, 1), (global + 1, frame)] {
        f.instruction(&Instruction::GlobalGet(global));
        f.instruction(&Instruction::I32Const(amount as i32));
        f.instruction(&Instruction::I32Sub);
        f.instruction(&Instruction::GlobalSet(global));
    }
}

impl Reencode for DepthInstrumenter {
    type Error = InstrumentError;

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Re<()> {
        utils::parse_type_section(self, types, section)?;
        for (results, _) in self.plan.multi_results.clone() {
            let results = results
                .iter()
                .map(|r| self.val_type(*r))
                .collect::<Re<Vec<_>>>()?;
            types.ty().function([], results);
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Re<()> {
        utils::parse_global_section(self, globals, section)?;
        self.depth_global_decl(globals);
        self.global_emitted = true;
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Re<()> {
        let past_globals = match before {
            None => true,
            Some(id) => matches!(
                id,
                SectionId::Export
                    | SectionId::Start
                    | SectionId::Element
                    | SectionId::DataCount
                    | SectionId::Code
                    | SectionId::Data
            ),
        };
        if past_globals && !self.global_emitted && !self.plan.has_global_section {
            let mut globals = GlobalSection::new();
            self.depth_global_decl(&mut globals);
            module.section(&globals);
            self.global_emitted = true;
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Re<()> {
        let index = self.plan.imported_funcs + self.next_body;
        self.next_body += 1;
        let ty = self.plan.func_types[index as usize];
        let results = self.plan.types[ty as usize].results().to_vec();
        let block = self.block_type(&results)?;
        let global = self.plan.depth_global;
        let frame = self.frame_estimate(&func, ty)?;

        let mut f = self.new_function_with_parsed_locals(&func)?;
        // Prologue: depth += 1; stack += frame; trap deterministically past either limit.
        for (global, amount) in [(global, 1), (global + 1, frame)] {
            f.instruction(&Instruction::GlobalGet(global));
            f.instruction(&Instruction::I32Const(amount as i32));
            f.instruction(&Instruction::I32Add);
            f.instruction(&Instruction::GlobalSet(global));
        }
        f.instruction(&Instruction::GlobalGet(global));
        f.instruction(&Instruction::I32Const(self.max_depth as i32));
        f.instruction(&Instruction::I32GtU);
        f.instruction(&Instruction::GlobalGet(global + 1));
        f.instruction(&Instruction::I32Const(STACK_BUDGET_BYTES as i32));
        f.instruction(&Instruction::I32GtU);
        f.instruction(&Instruction::I32Or);
        f.instruction(&Instruction::If(BlockType::Empty));
        f.instruction(&Instruction::F32Const(Ieee32::new(f32::NAN.to_bits())));
        f.instruction(&Instruction::I32TruncF32U);
        f.instruction(&Instruction::Drop);
        f.instruction(&Instruction::End);
        // The original body inside a block of the function's result type.
        f.instruction(&Instruction::Block(block));
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            match op {
                wasmparser::Operator::Return => {
                    decrement(&mut f, global, frame);
                    f.instruction(&Instruction::Return);
                }
                wasmparser::Operator::End if reader.eof() => {
                    // The function's own `end`: close the wrapper block, then decrement.
                    f.instruction(&Instruction::End);
                    decrement(&mut f, global, frame);
                    f.instruction(&Instruction::End);
                }
                other => {
                    f.instruction(&self.instruction(other)?);
                }
            }
        }
        code.function(&f);
        Ok(())
    }
}

impl ReencodeComponent for DepthInstrumenter {
    fn parse_component_submodule(
        &mut self,
        component: &mut wasm_encoder::Component,
        parser: Parser,
        module: &[u8],
    ) -> Re<()> {
        self.plan = plan_module(module).map_err(ReencodeError::UserError)?;
        self.next_body = 0;
        self.global_emitted = false;
        let mut encoded = wasm_encoder::Module::new();
        utils::parse_core_module(self, &mut encoded, parser, module)?;
        component.section(&wasm_encoder::ModuleSection(&encoded));
        Ok(())
    }
}

/// Rewrites every core module of `component` with the depth guard for `max_depth`.
pub fn instrument_component(component: &[u8], max_depth: u32) -> Result<Vec<u8>, InstrumentError> {
    let mut instrumenter = DepthInstrumenter {
        max_depth,
        plan: ModulePlan::default(),
        next_body: 0,
        global_emitted: false,
    };
    let mut out = wasm_encoder::Component::new();
    instrumenter
        .parse_component(&mut out, Parser::new(0), component)
        .map_err(|e| InstrumentError(e.to_string()))?;
    Ok(out.finish())
}

/// Rewrites a single core module (used by tests of the guard itself).
pub fn instrument_module(module: &[u8], max_depth: u32) -> Result<Vec<u8>, InstrumentError> {
    let mut instrumenter = DepthInstrumenter {
        max_depth,
        plan: plan_module(module)?,
        next_body: 0,
        global_emitted: false,
    };
    let mut out = wasm_encoder::Module::new();
    utils::parse_core_module(&mut instrumenter, &mut out, Parser::new(0), module)
        .map_err(|e| InstrumentError(e.to_string()))?;
    Ok(out.finish())
}
