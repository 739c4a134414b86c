//! Shared helpers: temporary directories and running the `trac` binary as a real process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Deterministic pseudo-random bytes (BLAKE3 XOF of `seed`), for fixtures that need "random"
/// content without a random source.
pub fn pseudo_random_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Outcome {
    /// Panics with the full outcome unless the run succeeded; returns standard output.
    #[track_caller]
    pub fn success(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success, got {self:#?}");
        &self.stdout
    }

    /// Panics with the full outcome unless the run exited with `code`; returns standard error.
    #[track_caller]
    pub fn failure(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}, got {self:#?}"
        );
        &self.stderr
    }
}

/// A run of `trac` (the `trac-under-test` binary) in an isolated environment: no inherited
/// variables (so no stray `TRAC_*`), the given working directory and standard input from
/// `/dev/null` unless set.
pub struct Trac {
    cwd: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

/// Starts a run of `trac args…` in directory `cwd`.
pub fn trac(cwd: &Path, args: &[&str]) -> Trac {
    Trac {
        cwd: cwd.to_path_buf(),
        args: args.iter().map(|a| a.to_string()).collect(),
        envs: Vec::new(),
        stdin: None,
    }
}

impl Trac {
    /// Sets an environment variable for the run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Feeds `bytes` on standard input.
    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Runs the binary to completion.
    pub fn run(self) -> Outcome {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trac-under-test"));
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().expect("spawn trac-under-test");
        if let Some(bytes) = &self.stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            // A process that exits without reading its input closes the pipe: that is its
            // answer to check, not a failure of the harness.
            if let Err(e) = pipe.write_all(bytes)
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                panic!("write to stdin: {e}");
            }
        }
        let output = child.wait_with_output().expect("wait for trac-under-test");
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}
