//! Native host of the Trac peer-to-peer app platform.
//!
//! One process runs the settlement layer (MSB), an app's subnet (a replicated multi-writer log
//! applied to key/value state by system rules and a WebAssembly contract), sidechannels and the
//! user interfaces. Modules, one per concern, with data flowing one way (interfaces → node →
//! ledger/runtime → store):
//!
//! - [`crypto`]: keys, addresses, domain-separated signatures, keystore;
//! - [`codec`]: the canonical binary encoding of consensus values;
//! - [`store`]: LMDB storage with the lattice-hash state root;
//! - [`ledger`]: the replicated multi-writer ledger engine (logs, checkpoints, views);
//! - [`runtime`]: the deterministic WebAssembly contract runtime;
//! - [`net`]: the libp2p swarm (discovery, versioned protocols, ledger replication transport);
//! - [`node`]: what drives the ledgers, the runtime and MSB for one peer (the `/tx` lifecycle);
//! - [`bundled`]: the bundled contract components (Intercom, the registry example);
//! - [`builder`]: building contract crates into components (`trac contract build`);
//! - [`bench`](mod@bench): the `trac bench` suites;
//! - [`terminal`]: the interactive terminal's commands, help, output sanitising and line editor;
//! - [`cli`]: the `trac` command line.

pub mod bench;
pub mod bridge;
pub mod builder;
pub mod bundled;
pub mod cli;
pub mod codec;
pub mod crypto;
pub mod ledger;
pub mod msb;
pub mod net;
pub mod node;
pub mod rpc;
pub mod runtime;
pub mod sidechannel;
pub mod store;
pub mod subnet;
pub mod terminal;
