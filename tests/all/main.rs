//! Integration tests: one binary, one module per area.
mod cli_contract;
mod cli_keys;
mod codec;
mod crypto;
mod golden;
mod keystore;
mod runtime;
mod store;
mod support;
mod wat_contract;
