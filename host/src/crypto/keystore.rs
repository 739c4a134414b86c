//! The keystore file (`stores/<name>/keypair.json`, docs/protocol.md "Keystore").
//!
//! A JSON document holding the public key and address in the clear and the 32-byte secret seed
//! either encrypted (Argon2id key derivation + XChaCha20-Poly1305, the public key bound as
//! associated data) or, for an empty passphrase, in plain hex. The file is always written with
//! mode 0600 and replaced atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::domain::{Domain, DomainKind};
use super::hash::parse_fixed_hex;
use super::keys::{Keypair, PublicKey};

/// Format name written into every keystore.
pub const KEYSTORE_FORMAT: &str = "trac-keystore";
/// Current keystore version.
pub const KEYSTORE_VERSION: u32 = 1;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The parameters new keystores use: 64 MiB, 3 passes, 1 lane (about a tenth of a second
    /// on the project's machines).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Upper bounds accepted when reading a keystore, so a hostile file cannot make unlocking
    /// allocate or spin without limit.
    pub const MAX: KdfParams = KdfParams {
        m_cost_kib: 4 * 1024 * 1024,
        t_cost: 64,
        p_cost: 16,
    };

    fn within_bounds(&self) -> bool {
        self.m_cost_kib <= Self::MAX.m_cost_kib
            && self.t_cost <= Self::MAX.t_cost
            && self.p_cost <= Self::MAX.p_cost
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The JSON document on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreFile {
    /// Always [`KEYSTORE_FORMAT`].
    pub format: String,
    /// Always [`KEYSTORE_VERSION`].
    pub version: u32,
    /// Public key, 64 hex digits.
    pub public_key: String,
    /// The `trac1…` address of the public key.
    pub address: String,
    /// How the secret is stored.
    pub secret: SecretBox,
}

/// The stored secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SecretBox {
    /// Encrypted with a passphrase.
    Argon2idXchacha20poly1305 {
        /// Argon2id costs.
        kdf: KdfParams,
        /// 16-byte salt, hex.
        salt: String,
        /// 24-byte nonce, hex.
        nonce: String,
        /// Encrypted 32-byte seed plus 16-byte tag, hex.
        ciphertext: String,
    },
    /// Stored in the clear (empty passphrase).
    Plain {
        /// 32-byte seed, hex.
        seed: String,
    },
}

/// What can be read from a keystore without unlocking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreInfo {
    /// The file.
    pub path: PathBuf,
    /// The public key.
    pub public_key: PublicKey,
    /// Its address.
    pub address: String,
    /// Whether the secret is encrypted.
    pub encrypted: bool,
}

/// Why a keystore could not be created, read or unlocked.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// No file at the path.
    #[error(
        "no keystore at {0}: create one with `trac keys new` or import one with `trac keys import`"
    )]
    Missing(PathBuf),
    /// Refusing to overwrite.
    #[error("a keystore already exists at {0}; pass --force to replace it")]
    Exists(PathBuf),
    /// The file is not a valid keystore.
    #[error("keystore {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Key-derivation parameters that Argon2 refuses or that exceed [`KdfParams::MAX`].
    #[error("invalid key-derivation parameters: {0}")]
    InvalidKdf(String),
    /// Decryption failed.
    #[error("wrong passphrase for keystore {0} (or the file was modified)")]
    WrongPassphrase(PathBuf),
    /// Reading or writing failed.
    #[error("keystore {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn corrupt(path: &Path, reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn associated_data(public_key: &PublicKey) -> Vec<u8> {
    let mut aad = Domain::global(DomainKind::Keystore).prefix();
    aad.extend_from_slice(public_key.as_bytes());
    aad
}

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    kdf: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| format!("invalid KDF parameters: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(key)
}

/// Builds the keystore document for `keypair` with a fresh random salt and nonce. An empty
/// passphrase stores the seed in the clear.
pub fn seal(
    keypair: &Keypair,
    passphrase: &str,
    kdf: KdfParams,
) -> Result<KeystoreFile, KeystoreError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_with(keypair, passphrase, kdf, &salt, &nonce)
}

/// [`seal`] with a given salt and nonce (deterministic; used for the golden vectors of
/// docs/protocol.md). Never reuse a salt and nonce for real keystores.
pub fn seal_with(
    keypair: &Keypair,
    passphrase: &str,
    kdf: KdfParams,
    salt: &[u8; 16],
    nonce: &[u8; 24],
) -> Result<KeystoreFile, KeystoreError> {
    let public_key = keypair.public();
    let seed = keypair.seed();
    let secret = if passphrase.is_empty() {
        SecretBox::Plain {
            seed: hex::encode(seed.as_ref()),
        }
    } else {
        if !kdf.within_bounds() {
            return Err(KeystoreError::InvalidKdf(format!(
                "{kdf:?} exceeds the maximum {:?}",
                KdfParams::MAX
            )));
        }
        let key = derive_key(passphrase, salt, &kdf).map_err(KeystoreError::InvalidKdf)?;
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let aad = associated_data(&public_key);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: seed.as_ref(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of 32 bytes cannot fail");
        SecretBox::Argon2idXchacha20poly1305 {
            kdf,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }
    };
    Ok(KeystoreFile {
        format: KEYSTORE_FORMAT.to_string(),
        version: KEYSTORE_VERSION,
        public_key: public_key.to_hex(),
        address: public_key.address(),
        secret,
    })
}

/// Writes a new keystore for `keypair` at `path` (mode 0600, atomic replace). Refuses to replace
/// an existing file unless `overwrite`. An empty passphrase stores the key unencrypted (logged
/// at info level: the command line warns the user itself).
pub fn create(
    path: &Path,
    keypair: &Keypair,
    passphrase: &str,
    kdf: KdfParams,
    overwrite: bool,
) -> Result<KeystoreInfo, KeystoreError> {
    if path.exists() && !overwrite {
        return Err(KeystoreError::Exists(path.to_path_buf()));
    }
    if passphrase.is_empty() {
        tracing::info!(path = %path.display(), "keystore is stored unencrypted (empty passphrase)");
    }
    let file = seal(keypair, passphrase, kdf)?;
    let json = serde_json::to_vec_pretty(&file).expect("keystore serialises");
    write_private(path, &json).map_err(|source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(KeystoreInfo {
        path: path.to_path_buf(),
        public_key: keypair.public(),
        address: keypair.address(),
        encrypted: !passphrase.is_empty(),
    })
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file and a rename.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Reads and checks the document (format, version, key and address agree).
pub fn read(path: &Path) -> Result<(KeystoreFile, KeystoreInfo), KeystoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeystoreError::Missing(path.to_path_buf()));
        }
        Err(source) => {
            return Err(KeystoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let file: KeystoreFile = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(path, format!("not a keystore document: {e}")))?;
    if file.format != KEYSTORE_FORMAT {
        return Err(corrupt(path, format!("unknown format {:?}", file.format)));
    }
    if file.version != KEYSTORE_VERSION {
        return Err(corrupt(
            path,
            format!(
                "unsupported version {} (this build reads version {KEYSTORE_VERSION})",
                file.version
            ),
        ));
    }
    let public_key = PublicKey::from_hex(&file.public_key)
        .map_err(|e| corrupt(path, format!("public_key: {e}")))?;
    if file.address != public_key.address() {
        return Err(corrupt(path, "address does not match public_key"));
    }
    let info = KeystoreInfo {
        path: path.to_path_buf(),
        public_key,
        address: file.address.clone(),
        encrypted: matches!(file.secret, SecretBox::Argon2idXchacha20poly1305 { .. }),
    };
    Ok((file, info))
}

/// Reads what is public in a keystore without unlocking it.
pub fn info(path: &Path) -> Result<KeystoreInfo, KeystoreError> {
    read(path).map(|(_, info)| info)
}

/// Unlocks the keystore at `path`. The passphrase is ignored for an unencrypted keystore.
pub fn unlock(path: &Path, passphrase: &str) -> Result<Keypair, KeystoreError> {
    let (file, info) = read(path)?;
    let seed: Zeroizing<[u8; 32]> = match &file.secret {
        SecretBox::Plain { seed } => Zeroizing::new(
            parse_fixed_hex::<32>(seed).map_err(|e| corrupt(path, format!("seed: {e}")))?,
        ),
        SecretBox::Argon2idXchacha20poly1305 {
            kdf,
            salt,
            nonce,
            ciphertext,
        } => {
            if !kdf.within_bounds() {
                return Err(corrupt(
                    path,
                    format!(
                        "KDF parameters {kdf:?} exceed the accepted maximum {:?}",
                        KdfParams::MAX
                    ),
                ));
            }
            let salt = hex::decode(salt).map_err(|e| corrupt(path, format!("salt: {e}")))?;
            if !(8..=64).contains(&salt.len()) {
                return Err(corrupt(path, "salt must be 8 to 64 bytes"));
            }
            let nonce =
                parse_fixed_hex::<24>(nonce).map_err(|e| corrupt(path, format!("nonce: {e}")))?;
            let ciphertext = parse_fixed_hex::<48>(ciphertext)
                .map_err(|e| corrupt(path, format!("ciphertext: {e}")))?;
            let key = derive_key(passphrase, &salt, kdf).map_err(|e| corrupt(path, e))?;
            let cipher = XChaCha20Poly1305::new(key.as_ref().into());
            let plain = Zeroizing::new(
                cipher
                    .decrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: &ciphertext,
                            aad: &associated_data(&info.public_key),
                        },
                    )
                    .map_err(|_| KeystoreError::WrongPassphrase(path.to_path_buf()))?,
            );
            let seed: [u8; 32] = plain
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(path, "decrypted secret is not 32 bytes"))?;
            Zeroizing::new(seed)
        }
    };
    let keypair = Keypair::from_seed(&seed);
    if keypair.public() != info.public_key {
        return Err(corrupt(path, "secret key does not belong to public_key"));
    }
    Ok(keypair)
}
