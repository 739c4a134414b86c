//! Where a keystore passphrase comes from: `--passphrase` (or `TRAC_PASSPHRASE`), then
//! `--passphrase-file` (or `TRAC_PASSPHRASE_FILE`), then a prompt on the terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

/// Passphrase flags shared by the commands that create or unlock a keystore.
#[derive(Debug, Clone, Args)]
pub struct PassphraseArgs {
    /// Keystore passphrase. An empty value stores the key unencrypted (with a warning).
    #[arg(long, env = "TRAC_PASSPHRASE", hide_env_values = true)]
    pub passphrase: Option<String>,

    /// Read the passphrase from this file (its first line).
    #[arg(long, env = "TRAC_PASSPHRASE_FILE", conflicts_with = "passphrase")]
    pub passphrase_file: Option<PathBuf>,
}

/// Why the passphrase is needed, which decides the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A new keystore: the prompt asks twice.
    Create,
    /// Unlocking an existing keystore.
    Unlock,
}

impl PassphraseArgs {
    /// Resolves the passphrase, prompting on a terminal when no flag, variable or file gives it.
    pub fn resolve(&self, purpose: Purpose) -> anyhow::Result<Zeroizing<String>> {
        if let Some(p) = &self.passphrase {
            return Ok(Zeroizing::new(p.clone()));
        }
        if let Some(path) = &self.passphrase_file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read passphrase file {}", path.display()))?,
            );
            let first = text.lines().next().unwrap_or("");
            return Ok(Zeroizing::new(first.to_string()));
        }
        if !std::io::stdin().is_terminal() {
            bail!(
                "a passphrase is needed: pass --passphrase or --passphrase-file, set TRAC_PASSPHRASE, or run in a terminal (an empty --passphrase \"\" stores the key unencrypted)"
            );
        }
        let first = Zeroizing::new(
            rpassword::prompt_password("Keystore passphrase (empty for none): ")
                .context("cannot read the passphrase from the terminal")?,
        );
        if purpose == Purpose::Create && !first.is_empty() {
            let again = Zeroizing::new(
                rpassword::prompt_password("Repeat the passphrase: ")
                    .context("cannot read the passphrase from the terminal")?,
            );
            if *again != *first {
                bail!("the two passphrases differ; nothing was written");
            }
        }
        Ok(first)
    }
}
