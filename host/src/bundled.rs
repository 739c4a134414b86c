//! The contract components bundled with the node, built reproducibly from `contracts/` (see
//! `contracts/rebuild.sh`): Intercom, the reference app a new subnet runs by default, and the
//! name-registry example.

/// The Intercom component.
pub const INTERCOM: &[u8] = include_bytes!("../../contracts/artifacts/intercom.wasm");

/// The name-registry example component.
pub const REGISTRY: &[u8] = include_bytes!("../../contracts/artifacts/registry.wasm");
