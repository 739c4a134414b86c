//! What the suites that run a second process share: a guard that never leaves the child
//! running, and reading a process's memory.

use std::process::Child;

use anyhow::{Context, anyhow};

/// A child process killed (and reaped) if the suite gives up on it.
pub(crate) struct ChildGuard(pub(crate) Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmRSS` and `VmHWM` of process `pid` (`"self"` for this process), in KiB.
pub(crate) fn memory_kib(pid: &str) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("{path} has no {name}"))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("cannot parse {line:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
