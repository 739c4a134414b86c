//! `trac keys new|show|address|import|export`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::passphrase::{PassphraseArgs, Purpose};
use crate::crypto::keystore::{self, KdfParams, KeystoreInfo};
use crate::crypto::{Keypair, PublicKey, parse_fixed_hex};

/// Format name of an exported secret key document.
pub const EXPORT_FORMAT: &str = "trac-secret-key";

/// `trac keys` arguments.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    location: KeystoreLocation,
    #[command(subcommand)]
    command: KeysCommand,
}

/// Which keystore file a command works on.
#[derive(Debug, Clone, Args)]
pub struct KeystoreLocation {
    /// Store label: the keystore is `<stores-dir>/<store>/keypair.json`.
    #[arg(long, env = "TRAC_STORE", default_value = "peer", global = true)]
    pub store: String,
    /// Directory holding the stores.
    #[arg(long, env = "TRAC_STORES_DIR", default_value = "stores", global = true)]
    pub stores_dir: PathBuf,
    /// Keystore file, overriding --store and --stores-dir.
    #[arg(long, env = "TRAC_KEYSTORE", global = true)]
    pub keystore: Option<PathBuf>,
}

impl KeystoreLocation {
    /// The keystore file.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.keystore {
            return Ok(path.clone());
        }
        if self.store.is_empty()
            || self.store.contains(['/', '\\'])
            || self.store == "."
            || self.store == ".."
        {
            bail!(
                "invalid --store {:?}: a store label is a folder name (no slashes)",
                self.store
            );
        }
        Ok(self.stores_dir.join(&self.store).join("keypair.json"))
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new key pair and keystore.
    New {
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Replace an existing keystore (its key is lost unless exported).
        #[arg(long)]
        force: bool,
    },
    /// Show the keystore's address, public key and whether it is encrypted.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the address only.
    Address,
    /// Create a keystore from an exported secret key.
    Import {
        /// File with the secret: an export document, 64 hex digits (seed) or 128 hex digits
        /// (seed and public key). `-` or no value reads standard input.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Replace an existing keystore.
        #[arg(long)]
        force: bool,
    },
    /// Print the secret key (unlocking the keystore). Keep the output private.
    Export {
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// An exported secret key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportDocument {
    format: String,
    public_key: String,
    address: String,
    secret_key: String,
}

/// Runs a `trac keys` command.
pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let path = args.location.path()?;
    match args.command {
        KeysCommand::New { passphrase, force } => {
            if path.exists() && !force {
                return Err(keystore::KeystoreError::Exists(path).into());
            }
            let pass = passphrase.resolve(Purpose::Create)?;
            let info = keystore::create(
                &path,
                &Keypair::generate(),
                &pass,
                KdfParams::DEFAULT,
                force,
            )?;
            print_created(&info);
        }
        KeysCommand::Show { json } => {
            let info = keystore::info(&path)?;
            if json {
                let doc = serde_json::json!({
                    "path": info.path.display().to_string(),
                    "address": info.address,
                    "public_key": info.public_key.to_hex(),
                    "encrypted": info.encrypted,
                });
                println!("{doc}");
            } else {
                println!("keystore:   {}", info.path.display());
                println!("address:    {}", info.address);
                println!("public key: {}", info.public_key.to_hex());
                println!(
                    "encrypted:  {}",
                    if info.encrypted {
                        "yes (argon2id + xchacha20-poly1305)"
                    } else {
                        "no"
                    }
                );
            }
        }
        KeysCommand::Address => println!("{}", keystore::info(&path)?.address),
        KeysCommand::Import {
            secret_file,
            passphrase,
            force,
        } => {
            if path.exists() && !force {
                return Err(keystore::KeystoreError::Exists(path).into());
            }
            let text = read_secret_input(secret_file.as_ref())?;
            let keypair = parse_secret(&text)?;
            let pass = passphrase.resolve(Purpose::Create)?;
            let info = keystore::create(&path, &keypair, &pass, KdfParams::DEFAULT, force)?;
            print_created(&info);
        }
        KeysCommand::Export { passphrase, out } => {
            let info = keystore::info(&path)?;
            let pass = if info.encrypted {
                passphrase.resolve(Purpose::Unlock)?
            } else {
                Zeroizing::new(String::new())
            };
            let keypair = keystore::unlock(&path, &pass)?;
            let doc = ExportDocument {
                format: EXPORT_FORMAT.to_string(),
                public_key: keypair.public().to_hex(),
                address: keypair.address(),
                secret_key: hex::encode(keypair.seed().as_ref()),
            };
            let json = Zeroizing::new(serde_json::to_string_pretty(&doc)? + "\n");
            match out {
                Some(out) => {
                    keystore::write_private(&out, json.as_bytes())
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    eprintln!("secret key of {} written to {}", doc.address, out.display());
                }
                None => print!("{}", *json),
            }
        }
    }
    Ok(())
}

fn print_created(info: &KeystoreInfo) {
    println!("keystore:   {}", info.path.display());
    println!("address:    {}", info.address);
    println!("public key: {}", info.public_key.to_hex());
    if !info.encrypted {
        eprintln!(
            "warning: the key is stored unencrypted (empty passphrase); the file is readable by its owner only (0600)"
        );
    }
}

fn read_secret_input(file: Option<&PathBuf>) -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(path) if path.as_os_str() != "-" => {
            *text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read secret file {}", path.display()))?;
        }
        _ => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the secret from standard input")?;
        }
    }
    Ok(text)
}

/// Parses an export document, a 64-hex seed or a 128-hex `seed ‖ public key`.
fn parse_secret(text: &str) -> anyhow::Result<Keypair> {
    let text = text.trim();
    if text.starts_with('{') {
        let doc: ExportDocument =
            serde_json::from_str(text).context("the secret is not a valid export document")?;
        if doc.format != EXPORT_FORMAT {
            bail!(
                "unknown secret format {:?} (expected {EXPORT_FORMAT:?})",
                doc.format
            );
        }
        let keypair = seed_keypair(&doc.secret_key)?;
        let public = PublicKey::from_hex(&doc.public_key).context("export document: public_key")?;
        if keypair.public() != public || keypair.address() != doc.address {
            bail!(
                "export document is inconsistent: the secret key does not match its public key or address"
            );
        }
        return Ok(keypair);
    }
    match text.len() {
        64 => seed_keypair(text),
        128 => {
            let keypair = seed_keypair(&text[..64])?;
            let public = PublicKey::from_hex(&text[64..]).context("secret key: public half")?;
            if keypair.public() != public {
                bail!(
                    "secret key is inconsistent: its second half is not the public key of its first half"
                );
            }
            Ok(keypair)
        }
        n => bail!(
            "cannot read the secret: expected an export document, 64 hex digits (seed) or 128 hex digits (seed and public key), got {n} characters"
        ),
    }
}

fn seed_keypair(hex_seed: &str) -> anyhow::Result<Keypair> {
    let seed = Zeroizing::new(parse_fixed_hex::<32>(hex_seed).context("secret key seed")?);
    Ok(Keypair::from_seed(&seed))
}
