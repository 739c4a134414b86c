//! Building contract crates into validated components (`trac contract build`).
//!
//! Two toolchain routes produce `wasm32-unknown-unknown` code:
//!
//! - **rustup**: the active toolchain has the `wasm32-unknown-unknown` target installed
//!   (`rustup target add wasm32-unknown-unknown`);
//! - **debian**: Debian's `rustc-web`, `cargo-web` and `rust-web-src` packages (a compiler and
//!   the standard library's source), building `std` with `-Z build-std` and linking with the
//!   rustup toolchain's `rust-lld`. This is the route of the committed artifacts, because a
//!   pinned package version gives the same bytes on every machine.
//!
//! The core module is wrapped into a component (wit-component reads the world embedded by
//! wit-bindgen) and validated with the runtime's acceptance rules. No machine path reaches the
//! bytes: the Debian route uses cargo's `trim-paths` and a fixed build path, the rustup route
//! remaps path prefixes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::crypto::Hash32;
use crate::runtime::{ComponentReport, Limits, ValidationError, validate_component};

const TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SOURCE: &str = "/usr/lib/rustlib/src/rust/library";
/// The fixed path the Debian route builds through (a symbolic link to the repository).
const BUILD_ROOT: &str = "/tmp/trac-build-root";
const BUILD_ROOT_LOCK: &str = "/tmp/trac-build-root.lock";
/// Stack size of a contract, in bytes of its linear memory.
const GUEST_STACK_BYTES: u32 = 256 << 10;
/// Heap a contract's linear memory starts with, in bytes (a multiple of 64 KiB), after its stack
/// and data: the guest SDK's allocator serves it before it grows the memory. The linker rounds
/// the initial memory up to whole pages: 512 KiB for the bundled contracts (a 256 KiB stack,
/// about 30 KiB of data, a heap of about 220 KiB). That covers an Intercom transaction, 1,000
/// state writes or a query decoding and returning 300 small objects; a larger initial memory
/// makes the reset after each call dearer where the kernel lacks PAGEMAP_SCAN (wasmtime then
/// memsets the whole memory).
const GUEST_INITIAL_HEAP_BYTES: u32 = 192 << 10;

/// The linker arguments of every contract build.
///
/// A contract's stack lives in its linear memory, which is reset after every call: 256 KiB
/// instead of the default 1 MiB keeps that reset cheap (deep recursion is stopped by the
/// runtime's call-depth limit long before). The initial heap covers a typical call, so a call
/// does not grow its memory: growing costs the pooling allocator an `mprotect` to grow and
/// another one to reset the slot, about half of a small call. (The guest SDK's allocator is
/// what uses it: Rust's default allocator grows the memory on its first allocation anyway.)
/// `--initial-heap` rather than `--initial-memory`: the heap keeps its size whatever the size
/// of a contract's data, and a contract with much data still links.
fn link_args() -> [String; 2] {
    [
        format!("-zstack-size={GUEST_STACK_BYTES}"),
        format!("--initial-heap={GUEST_INITIAL_HEAP_BYTES}"),
    ]
}

/// Which route to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Route {
    /// The rustup route if the target is installed, else the Debian route.
    Auto,
    /// `rustup target add wasm32-unknown-unknown`.
    Rustup,
    /// Debian's rustc-web with `-Z build-std` (the route of the committed artifacts).
    Debian,
}

/// A toolchain that can build for wasm32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// The active rustup toolchain with the wasm32 target.
    Rustup {
        /// `cargo`.
        cargo: PathBuf,
    },
    /// Debian's packages plus rustup's linker.
    Debian {
        /// `/usr/bin/rustc`.
        rustc: PathBuf,
        /// `/usr/bin/cargo`.
        cargo: PathBuf,
        /// `rust-lld`.
        lld: PathBuf,
    },
}

impl Toolchain {
    /// A short description for people.
    pub fn describe(&self) -> String {
        match self {
            Toolchain::Rustup { .. } => "rustup (wasm32-unknown-unknown target)".to_string(),
            Toolchain::Debian { rustc, .. } => {
                format!(
                    "debian rustc-web ({}) with -Z build-std",
                    tool_version(rustc)
                )
            }
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No usable toolchain; the message says what to install.
    #[error("{0}")]
    NoToolchain(String),
    /// The crate directory has no Cargo.toml.
    #[error("{0} is not a contract crate (no Cargo.toml)")]
    NotACrate(PathBuf),
    /// cargo failed.
    #[error("cargo build failed (exit status {status}); its output is above")]
    Cargo {
        /// cargo's exit status.
        status: String,
    },
    /// cargo produced no `.wasm`.
    #[error("cargo produced no .wasm artifact: is the crate a `cdylib`?")]
    NoArtifact,
    /// wit-component refused the module.
    #[error("cannot make a component of {module}: {reason}")]
    Componentize {
        /// The core module.
        module: PathBuf,
        /// Why.
        reason: String,
    },
    /// The component fails the runtime's acceptance rules.
    #[error("the component would be refused: {0}")]
    Refused(#[from] ValidationError),
    /// Reading or writing files, or starting cargo.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

fn tool_version(tool: &Path) -> String {
    Command::new(tool)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown version".to_string())
}

/// The sysroot of the active (rustup) toolchain.
fn rustup_sysroot() -> Option<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn host_triple() -> Option<String> {
    let out = Command::new("rustc").arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
}

fn detect_rustup() -> Option<Toolchain> {
    let sysroot = rustup_sysroot()?;
    sysroot
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
        .then(|| Toolchain::Rustup {
            cargo: PathBuf::from("cargo"),
        })
}

fn detect_debian() -> Result<Toolchain, String> {
    let mut missing = Vec::new();
    if !Path::new(DEBIAN_RUSTC).exists() {
        missing.push("rustc-web");
    }
    if !Path::new(DEBIAN_CARGO).exists() {
        missing.push("cargo-web");
    }
    if !Path::new(DEBIAN_STD_SOURCE).is_dir() {
        missing.push("rust-web-src");
    }
    let lld = rustup_sysroot()
        .zip(host_triple())
        .map(|(sysroot, host)| sysroot.join("lib/rustlib").join(host).join("bin/rust-lld"))
        .filter(|p| p.exists());
    match (missing.is_empty(), lld) {
        (true, Some(lld)) => Ok(Toolchain::Debian {
            rustc: PathBuf::from(DEBIAN_RUSTC),
            cargo: PathBuf::from(DEBIAN_CARGO),
            lld,
        }),
        (true, None) => Err(
            "the Debian route needs rust-lld from a rustup toolchain (`rustc --print sysroot`/lib/rustlib/<host>/bin/rust-lld); install Rust with rustup".to_string(),
        ),
        (false, _) => Err(format!(
            "the Debian route is missing packages: apt-get install {}",
            missing.join(" ")
        )),
    }
}

/// Finds a toolchain for `route`, or says exactly what to install.
pub fn detect(route: Route) -> Result<Toolchain, BuildError> {
    let rustup_hint = "rustup target add wasm32-unknown-unknown";
    match route {
        Route::Rustup => detect_rustup().ok_or_else(|| {
            BuildError::NoToolchain(format!(
                "the active rustup toolchain has no wasm32-unknown-unknown target: run `{rustup_hint}`"
            ))
        }),
        Route::Debian => detect_debian().map_err(BuildError::NoToolchain),
        Route::Auto => {
            if let Some(t) = detect_rustup() {
                return Ok(t);
            }
            detect_debian().map_err(|debian| {
                BuildError::NoToolchain(format!(
                    "no toolchain can build for wasm32-unknown-unknown. Install one of:\n  - `{rustup_hint}` (needs the rustup download server), or\n  - on Debian 12: `apt-get install rustc-web cargo-web rust-web-src` (with rustup's rust-lld)\n({debian})"
                ))
            })
        }
    }
}

/// A built component.
#[derive(Debug, Clone)]
pub struct Built {
    /// Where it was written.
    pub path: PathBuf,
    /// What validation found (size, code hash, imports, exports).
    pub report: ComponentReport,
    /// The toolchain used.
    pub toolchain: String,
}

impl Built {
    /// BLAKE3 of the component.
    pub fn code_hash(&self) -> Hash32 {
        self.report.code_hash
    }
}

fn git_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Builds the contract crate in `crate_dir` with `toolchain` and writes the component to `out`
/// (default: `<crate>/target/<name>.component.wasm`).
pub fn build(
    crate_dir: &Path,
    toolchain: &Toolchain,
    out: Option<&Path>,
) -> Result<Built, BuildError> {
    if !crate_dir.join("Cargo.toml").exists() {
        return Err(BuildError::NotACrate(crate_dir.to_path_buf()));
    }
    let crate_dir = crate_dir
        .canonicalize()
        .map_err(io(format!("cannot resolve {}", crate_dir.display())))?;

    let mut cmd;
    // Held until the artifact is read: the Debian route builds through a fixed path.
    let mut _build_root_lock = None;
    match toolchain {
        Toolchain::Rustup { cargo } => {
            // Map machine paths to fixed ones (the last matching rule wins). Stable cargo
            // hashes these flags, and the crate's own path, into symbol names, so this route
            // gives readable but not byte-reproducible output.
            let mut flags = Vec::new();
            if let Some(home) = cargo_home().and_then(|h| h.canonicalize().ok()) {
                flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
            }
            if let Some(root) = git_root(&crate_dir) {
                flags.push(format!("--remap-path-prefix={}=/src", root.display()));
            }
            flags.extend(link_args().map(|arg| format!("-Clink-arg={arg}")));
            cmd = Command::new(cargo);
            cmd.args(["build", "--release", "--target", TARGET])
                .arg("--manifest-path")
                .arg(crate_dir.join("Cargo.toml"))
                .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        }
        Toolchain::Debian { rustc, cargo, lld } => {
            // Byte-reproducible: cargo sees the sources under one fixed path on every machine
            // (a symbolic link to the repository), since it hashes the absolute paths of path
            // dependencies outside the crate's workspace into symbol names; `trim-paths`
            // removes every path from the output without flags that would vary.
            let root = git_root(&crate_dir).unwrap_or_else(|| crate_dir.clone());
            let lock = std::fs::File::create(BUILD_ROOT_LOCK)
                .map_err(io(format!("cannot create {BUILD_ROOT_LOCK}")))?;
            lock.lock()
                .map_err(io(format!("cannot lock {BUILD_ROOT_LOCK}")))?;
            _build_root_lock = Some(lock);
            let link = Path::new(BUILD_ROOT);
            if link.symlink_metadata().is_ok() {
                std::fs::remove_file(link).map_err(io(format!("cannot replace {BUILD_ROOT}")))?;
            }
            std::os::unix::fs::symlink(&root, link).map_err(io(format!(
                "cannot link {BUILD_ROOT} to {}",
                root.display()
            )))?;
            let relative = crate_dir.strip_prefix(&root).unwrap_or(Path::new(""));
            cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--release",
                "--target",
                TARGET,
                "-Z",
                "build-std=std,panic_abort",
                "-Z",
                "trim-paths",
                "--config",
                "profile.release.trim-paths=\"all\"",
            ])
            .arg("--manifest-path")
            .arg(link.join(relative).join("Cargo.toml"))
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", rustc)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", lld)
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        }
    }
    // The rustup route passes the linker arguments with its flags (which take precedence).
    let rustflags: Vec<String> = link_args()
        .iter()
        .flat_map(|arg| ["\"-C\"".to_string(), format!("\"link-arg={arg}\"")])
        .collect();
    cmd.args([
        "--config",
        &format!("target.{TARGET}.rustflags=[{}]", rustflags.join(", ")),
    ]);
    cmd.arg("--message-format=json-render-diagnostics")
        .current_dir(&crate_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = cmd
        .output()
        .map_err(io("cannot start cargo for the wasm32 build"))?;
    if !output.status.success() {
        return Err(BuildError::Cargo {
            status: output.status.to_string(),
        });
    }
    let module_path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or(BuildError::NoArtifact)?;
    let module = std::fs::read(&module_path)
        .map_err(io(format!("cannot read {}", module_path.display())))?;
    let component = componentize(&module).map_err(|reason| BuildError::Componentize {
        module: module_path.clone(),
        reason,
    })?;
    let report = validate_component(&component, &Limits::default())?;
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => module_path.with_extension("component.wasm"),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io(format!("cannot create {}", parent.display())))?;
    }
    std::fs::write(&path, &component).map_err(io(format!("cannot write {}", path.display())))?;
    Ok(Built {
        path,
        report,
        toolchain: toolchain.describe(),
    })
}

/// Wraps a core module built with wit-bindgen (which embeds the world) into a component.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .map_err(|e| format!("{e:#}"))?
        .encode()
        .map_err(|e| format!("{e:#}"))
}
