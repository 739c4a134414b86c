//! Contract components written in WAT and assembled at test time: the host's kit
//! (`trac_host::runtime::testkit`) with panicking conveniences for tests.

use std::path::Path;

use trac_host::runtime::testkit;

/// Where the world's WIT lives.
pub const WORLD_WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");

/// The kit's builder; `build` and `core_module` panic with the error instead of returning it.
#[derive(Debug, Clone, Default)]
pub struct WatContract(testkit::WatContract);

impl WatContract {
    /// The template.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the body of export `name`.
    pub fn body(self, name: &str, body: &str) -> Self {
        WatContract(self.0.body(name, body))
    }

    /// Adds module fields.
    pub fn extra(self, fields: &str) -> Self {
        WatContract(self.0.extra(fields))
    }

    /// Places bytes in memory.
    pub fn data(self, offset: u32, bytes: &[u8]) -> Self {
        WatContract(self.0.data(offset, bytes))
    }

    /// The WAT text.
    pub fn wat(&self) -> String {
        self.0.wat()
    }

    /// The core module.
    pub fn core_module(&self) -> Vec<u8> {
        self.0
            .core_module()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.wat()))
    }

    /// The component.
    pub fn build(&self) -> Vec<u8> {
        self.0
            .build()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.wat()))
    }
}

/// Wraps a core module into a component of `world` from the WIT package in `wit_dir`.
pub fn componentize(module: Vec<u8>, wit_dir: &str, world: &str) -> Vec<u8> {
    testkit::componentize(module, Path::new(wit_dir), world).unwrap_or_else(|e| panic!("{e}"))
}
