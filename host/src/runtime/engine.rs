//! The wasmtime engine with the deterministic profile.

use std::hash::{Hash, Hasher};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use super::limits::{HARD_CAPS, runtime_protocol_version};
use crate::crypto::Hash32;

/// Native stack wasm may use. The instrumentation's stack guard keeps the estimated frames of a
/// call within half of it (`instrument::STACK_BUDGET_BYTES`); reaching it is a node error.
pub const NATIVE_WASM_STACK: usize = 16 << 20;

/// Stack for a thread that calls contracts: with it a call runs on the thread's own stack;
/// on a smaller one each call maps (and unmaps) a fresh stack of twice [`NATIVE_WASM_STACK`].
/// Only the pages a call touches become resident.
pub const CALL_THREAD_STACK: usize = 2 * NATIVE_WASM_STACK + (2 << 20);

/// Concurrent instances the pooling allocator keeps slots for.
const POOL_INSTANCES: u32 = 32;

/// Builds the engine: component model, fuel, NaN canonicalisation, no relaxed SIMD, tail calls,
/// memory64 or multi-memory, and the pooling allocator sized for the protocol's hard caps.
/// Threads, GC, exceptions and component-model async are compiled out of wasmtime (their cargo
/// features are off), so no configuration can turn them on.
pub fn build_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 8)
        .max_core_instances_per_component(HARD_CAPS.max_instances)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_tables_per_module(4)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 8)
        .max_memory_size(HARD_CAPS.max_memory_bytes as usize)
        .table_elements(HARD_CAPS.max_table_elements as usize)
        // Reset a memory after a call by rewriting only the pages the call wrote (Linux's
        // PAGEMAP_SCAN, kernel 6.7+) and keep up to 2 MiB of them mapped, instead of madvise plus
        // page faults on every call. A contract's initial memory (512 KiB from `trac contract
        // build`: stack, data and heap) is then as cheap to reset as the pages it touched. Without
        // PAGEMAP_SCAN, wasmtime resets the first `keep_resident` bytes of the memory with memset.
        .linear_memory_keep_resident(2 << 20)
        .pagemap_scan(Enabled::Auto)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(16);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_relaxed_simd(false)
        .relaxed_simd_deterministic(true)
        .wasm_simd(true)
        .wasm_tail_call(false)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .wasm_gc(false)
        .wasm_stack_switching(false)
        .wasm_wide_arithmetic(false)
        .wasm_custom_page_sizes(false)
        .wasm_extended_const(true)
        .max_wasm_stack(NATIVE_WASM_STACK)
        // Unused (no async calls), but wasmtime requires it to be at least the wasm stack.
        .async_stack_size(NATIVE_WASM_STACK + (2 << 20))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// A `Hasher` that feeds everything into BLAKE3, so a `Hash` value becomes stable bytes.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let h = self.0.finalize();
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hash of everything a compiled artifact depends on besides the component: the engine's
/// compatibility hash (wasmtime version, target, compiler settings) and the runtime protocol
/// version.
pub fn engine_compatibility_hash(engine: &Engine) -> Hash32 {
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(runtime_protocol_version().as_bytes());
    hasher.0.finalize().into()
}
