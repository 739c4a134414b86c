//! Integration tests: one binary, one module per area.
mod cli_contract;
mod cli_keys;
mod cli_replay;
mod codec;
mod contracts;
mod crypto;
mod golden;
mod keystore;
mod ledger;
mod ledger_support;
mod runtime;
mod store;
mod subnet;
mod subnet_support;
mod support;
mod wat_contract;
