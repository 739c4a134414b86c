//! Consensus limits of contract execution and the fuel price table (docs/protocol.md,
//! "Contract runtime").
//!
//! [`Limits`] are consensus parameters held in subnet state (changed by `setParams`); they can
//! never exceed [`HARD_CAPS`], which are part of the runtime protocol version together with the
//! wasmtime version and the [`PriceTable`].

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash32, hash};

/// Exact wasmtime version the runtime is built with (pinned in Cargo.toml).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Version of the call-depth instrumentation (2: with the stack guard); part of the
/// compiled-artifact key.
pub const INSTRUMENTATION_VERSION: u32 = 2;

/// Consensus limits of one contract call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel available to one call (wasm instructions plus host-call charges).
    pub fuel_per_call: u64,
    /// Largest linear memory, in bytes.
    pub max_memory_bytes: u64,
    /// Largest table, in elements.
    pub max_table_elements: u32,
    /// Most core instances one component instantiation may create.
    pub max_instances: u32,
    /// Deepest wasm call stack (counted by the instrumentation, per core module).
    pub max_call_depth: u32,
    /// Longest state key in bytes.
    pub max_key_len: u32,
    /// Longest state value in bytes.
    pub max_value_len: u32,
    /// Most keys one call may write (puts and deletes).
    pub max_writes_per_call: u32,
    /// Most key and value bytes one call may write.
    pub max_write_bytes_per_call: u64,
    /// Most records one scan returns.
    pub max_scan_limit: u32,
    /// Most events one call may emit.
    pub max_events_per_call: u32,
    /// Most topic and data bytes of all events of one call.
    pub max_event_bytes_per_call: u32,
    /// Largest result (or error message) a call may return, in bytes.
    pub max_result_bytes: u32,
    /// Largest component, in bytes.
    pub max_component_bytes: u32,
}

/// Protocol hard caps: no `setParams` can go beyond these.
pub const HARD_CAPS: Limits = Limits {
    fuel_per_call: 10_000_000_000,
    max_memory_bytes: 256 << 20,
    max_table_elements: 100_000,
    max_instances: 64,
    max_call_depth: 1_024,
    max_key_len: 511,
    max_value_len: 1 << 20,
    max_writes_per_call: 16_384,
    max_write_bytes_per_call: 16 << 20,
    max_scan_limit: 10_000,
    max_events_per_call: 1_024,
    max_event_bytes_per_call: 1 << 20,
    max_result_bytes: 1 << 20,
    max_component_bytes: 16 << 20,
};

impl Default for Limits {
    /// The limits a new subnet starts with.
    fn default() -> Self {
        Limits {
            fuel_per_call: 200_000_000,
            max_memory_bytes: 64 << 20,
            max_table_elements: 20_000,
            max_instances: 32,
            max_call_depth: 256,
            max_key_len: 256,
            max_value_len: 64 << 10,
            max_writes_per_call: 1_024,
            max_write_bytes_per_call: 4 << 20,
            max_scan_limit: 1_000,
            max_events_per_call: 64,
            max_event_bytes_per_call: 64 << 10,
            max_result_bytes: 256 << 10,
            max_component_bytes: 8 << 20,
        }
    }
}

/// A limit above its hard cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {name} = {value} exceeds the protocol hard cap {cap}")]
pub struct LimitError {
    /// The limit's name.
    pub name: &'static str,
    /// The requested value.
    pub value: u64,
    /// The hard cap.
    pub cap: u64,
}

impl Limits {
    /// Checks every limit against [`HARD_CAPS`] (and that none is zero).
    pub fn check(&self) -> Result<(), LimitError> {
        let pairs: [(&'static str, u64, u64); 14] = [
            ("fuel_per_call", self.fuel_per_call, HARD_CAPS.fuel_per_call),
            (
                "max_memory_bytes",
                self.max_memory_bytes,
                HARD_CAPS.max_memory_bytes,
            ),
            (
                "max_table_elements",
                self.max_table_elements.into(),
                HARD_CAPS.max_table_elements.into(),
            ),
            (
                "max_instances",
                self.max_instances.into(),
                HARD_CAPS.max_instances.into(),
            ),
            (
                "max_call_depth",
                self.max_call_depth.into(),
                HARD_CAPS.max_call_depth.into(),
            ),
            (
                "max_key_len",
                self.max_key_len.into(),
                HARD_CAPS.max_key_len.into(),
            ),
            (
                "max_value_len",
                self.max_value_len.into(),
                HARD_CAPS.max_value_len.into(),
            ),
            (
                "max_writes_per_call",
                self.max_writes_per_call.into(),
                HARD_CAPS.max_writes_per_call.into(),
            ),
            (
                "max_write_bytes_per_call",
                self.max_write_bytes_per_call,
                HARD_CAPS.max_write_bytes_per_call,
            ),
            (
                "max_scan_limit",
                self.max_scan_limit.into(),
                HARD_CAPS.max_scan_limit.into(),
            ),
            (
                "max_events_per_call",
                self.max_events_per_call.into(),
                HARD_CAPS.max_events_per_call.into(),
            ),
            (
                "max_event_bytes_per_call",
                self.max_event_bytes_per_call.into(),
                HARD_CAPS.max_event_bytes_per_call.into(),
            ),
            (
                "max_result_bytes",
                self.max_result_bytes.into(),
                HARD_CAPS.max_result_bytes.into(),
            ),
            (
                "max_component_bytes",
                self.max_component_bytes.into(),
                HARD_CAPS.max_component_bytes.into(),
            ),
        ];
        for (name, value, cap) in pairs {
            if value > cap || value == 0 {
                return Err(LimitError { name, value, cap });
            }
        }
        Ok(())
    }
}

/// Fuel charged by host calls, on top of the wasm instructions the component executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceTable {
    /// Every host call.
    pub host_call: u64,
    /// Per byte of key or value read from state.
    pub read_byte: u64,
    /// Per byte of key or value written to state.
    pub write_byte: u64,
    /// Per record returned by a scan.
    pub scan_record: u64,
    /// Per byte of event topic and data, and of debug text.
    pub event_byte: u64,
    /// Per byte hashed by `blake3`.
    pub hash_byte: u64,
    /// Per `ed25519-verify` call (plus `hash_byte` per message byte).
    pub signature_verify: u64,
    /// Per byte of arguments passed in and results passed out.
    pub io_byte: u64,
}

/// The price table of runtime protocol version 1.
pub const PRICES_V1: PriceTable = PriceTable {
    host_call: 1_000,
    read_byte: 2,
    write_byte: 20,
    scan_record: 200,
    event_byte: 5,
    hash_byte: 1,
    signature_verify: 100_000,
    io_byte: 1,
};

/// The runtime protocol version: wasmtime version, instrumentation version, price table and
/// hard caps. Nodes that disagree on it must not share a subnet.
pub fn runtime_protocol_version() -> Hash32 {
    let encoded = crate::codec::encode(&(
        "trac-runtime/1",
        WASMTIME_VERSION,
        INSTRUMENTATION_VERSION,
        PRICES_V1,
        HARD_CAPS,
    ));
    hash(&encoded)
}
