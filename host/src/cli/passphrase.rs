//! Where a keystore passphrase comes from: `--passphrase`, then `--passphrase-file`, then the
//! variables `TRAC_PASSPHRASE` and `TRAC_PASSPHRASE_FILE`, then a prompt on the terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

/// Variable read when neither passphrase flag is given.
const PASSPHRASE_ENV: &str = "TRAC_PASSPHRASE";
/// Variable read when neither passphrase flag nor `TRAC_PASSPHRASE` is given.
const PASSPHRASE_FILE_ENV: &str = "TRAC_PASSPHRASE_FILE";

/// Passphrase flags shared by the commands that create or unlock a keystore.
///
/// The variables are read in [`PassphraseArgs::resolve`], not by clap, so that either flag
/// wins over either variable (clap would treat `TRAC_PASSPHRASE` plus `--passphrase-file` as
/// a conflict, and could not tell a flag from a variable).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Keystore")]
pub struct PassphraseArgs {
    /// Keystore passphrase (default: $TRAC_PASSPHRASE). An empty value stores the key
    /// unencrypted (with a warning).
    #[arg(long)]
    pub passphrase: Option<String>,

    /// Read the passphrase from this file, its first line (default: $TRAC_PASSPHRASE_FILE).
    #[arg(long, conflicts_with = "passphrase")]
    pub passphrase_file: Option<PathBuf>,
}

fn read_passphrase_file(path: &std::path::Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read passphrase file {}", path.display()))?,
    );
    let first = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(first.to_string()))
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
            return read_passphrase_file(path);
        }
        if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
            let p = p
                .into_string()
                .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?;
            return Ok(Zeroizing::new(p));
        }
        if let Some(path) = std::env::var_os(PASSPHRASE_FILE_ENV) {
            return read_passphrase_file(std::path::Path::new(&path));
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
