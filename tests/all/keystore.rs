//! The keystore file at library level (`trac_host::crypto::keystore`, docs/protocol.md §5).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trac_host::crypto::Keypair;
use trac_host::crypto::keystore::{self, KdfParams, KeystoreError};

use crate::support::tempdir;

/// Cheap Argon2 costs so tests stay fast.
const CHEAP: KdfParams = KdfParams {
    m_cost_kib: 256,
    t_cost: 1,
    p_cost: 1,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// A keystore at `<dir>/peer/keypair.json` for the seed `[seed; 32]`.
fn make(dir: &Path, seed: u8, passphrase: &str) -> (PathBuf, Keypair) {
    let path = dir.join("peer").join("keypair.json");
    let keypair = Keypair::from_seed(&[seed; 32]);
    keystore::create(&path, &keypair, passphrase, CHEAP, false).unwrap();
    (path, keypair)
}

/// Applies `edit` to the JSON of the keystore and expects `unlock` to report it as corrupt
/// with a reason containing `needle`.
#[track_caller]
fn assert_corrupt_after(passphrase: &str, needle: &str, edit: impl FnOnce(&mut Value)) {
    let dir = tempdir();
    let (path, _) = make(dir.path(), 1, passphrase);
    let mut json = read_json(&path);
    edit(&mut json);
    write_json(&path, &json);
    match keystore::unlock(&path, passphrase) {
        Err(KeystoreError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(
                reason.contains(needle),
                "reason {reason:?} does not mention {needle:?}"
            );
        }
        other => panic!("expected Corrupt mentioning {needle:?}, got {other:?}"),
    }
}

/// Applies `edit` and expects the unlock to fail as a wrong passphrase (decryption failure).
#[track_caller]
fn assert_wrong_passphrase_after(edit: impl FnOnce(&mut Value)) {
    let dir = tempdir();
    let (path, _) = make(dir.path(), 1, "secret");
    let mut json = read_json(&path);
    edit(&mut json);
    write_json(&path, &json);
    match keystore::unlock(&path, "secret") {
        Err(KeystoreError::WrongPassphrase(p)) => assert_eq!(p, path),
        other => panic!("expected WrongPassphrase, got {other:?}"),
    }
}

/// Flips the lowest bit of the hex digit at `index` of a hex string field.
fn flip_hex_digit(text: &str, index: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let digit = chars[index].to_digit(16).unwrap() ^ 1;
    chars[index] = std::char::from_digit(digit, 16).unwrap();
    chars.into_iter().collect()
}

#[test]
fn encrypted_round_trip() {
    let dir = tempdir();
    let (path, keypair) = make(dir.path(), 7, "correct horse battery staple");
    let info = keystore::info(&path).unwrap();
    assert!(info.encrypted);
    assert_eq!(info.path, path);
    assert_eq!(info.public_key, keypair.public());
    assert_eq!(info.address, keypair.address());
    let unlocked = keystore::unlock(&path, "correct horse battery staple").unwrap();
    assert_eq!(unlocked.public(), keypair.public());
    assert_eq!(*unlocked.seed(), *keypair.seed());

    // The document has the documented shape and does not contain the seed in the clear.
    let json = read_json(&path);
    assert_eq!(json["format"], "trac-keystore");
    assert_eq!(json["version"], 1);
    assert_eq!(json["public_key"], keypair.public().to_hex());
    assert_eq!(json["address"], keypair.address());
    let secret = &json["secret"];
    assert_eq!(secret["scheme"], "argon2id-xchacha20poly1305");
    assert_eq!(secret["kdf"]["m_cost_kib"], 256);
    assert_eq!(secret["kdf"]["t_cost"], 1);
    assert_eq!(secret["kdf"]["p_cost"], 1);
    assert_eq!(secret["salt"].as_str().unwrap().len(), 32);
    assert_eq!(secret["nonce"].as_str().unwrap().len(), 48);
    assert_eq!(secret["ciphertext"].as_str().unwrap().len(), 96);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&hex::encode([7u8; 32])));
}

#[test]
fn unencrypted_round_trip() {
    let dir = tempdir();
    let (path, keypair) = make(dir.path(), 9, "");
    let info = keystore::info(&path).unwrap();
    assert!(!info.encrypted);
    assert_eq!(info.public_key, keypair.public());
    // The passphrase does not matter for an unencrypted keystore.
    for passphrase in ["", "anything"] {
        let unlocked = keystore::unlock(&path, passphrase).unwrap();
        assert_eq!(*unlocked.seed(), *keypair.seed());
    }
    let json = read_json(&path);
    assert_eq!(json["secret"]["scheme"], "plain");
    assert_eq!(json["secret"]["seed"], hex::encode([9u8; 32]));
}

#[test]
fn two_keystores_of_one_key_differ_but_both_unlock() {
    let dir = tempdir();
    let keypair = Keypair::from_seed(&[4u8; 32]);
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    keystore::create(&a, &keypair, "pw", CHEAP, false).unwrap();
    keystore::create(&b, &keypair, "pw", CHEAP, false).unwrap();
    let (ja, jb) = (read_json(&a), read_json(&b));
    // Fresh salt and nonce each time.
    assert_ne!(ja["secret"]["salt"], jb["secret"]["salt"]);
    assert_ne!(ja["secret"]["nonce"], jb["secret"]["nonce"]);
    assert_eq!(
        keystore::unlock(&a, "pw").unwrap().public(),
        keypair.public()
    );
    assert_eq!(
        keystore::unlock(&b, "pw").unwrap().public(),
        keypair.public()
    );
}

#[test]
fn non_ascii_passphrase() {
    let dir = tempdir();
    let (path, keypair) = make(dir.path(), 3, "pässwörd 🔑");
    assert_eq!(
        keystore::unlock(&path, "pässwörd 🔑").unwrap().public(),
        keypair.public()
    );
    assert!(matches!(
        keystore::unlock(&path, "passwort 🔑"),
        Err(KeystoreError::WrongPassphrase(_))
    ));
}

#[test]
fn files_are_private_encrypted_or_not() {
    let dir = tempdir();
    for (name, passphrase) in [("enc", "secret"), ("plain", "")] {
        let path = dir.path().join(name).join("keypair.json");
        keystore::create(
            &path,
            &Keypair::from_seed(&[1; 32]),
            passphrase,
            CHEAP,
            false,
        )
        .unwrap();
        assert_eq!(mode(&path), 0o600, "{name}");
        // No temporary file is left behind.
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("keypair.json")]);
    }
    // Replacing a world-readable file makes it private too.
    let path = dir.path().join("loose.json");
    std::fs::write(&path, "{}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    keystore::create(&path, &Keypair::from_seed(&[2; 32]), "", CHEAP, true).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn wrong_passphrase() {
    let dir = tempdir();
    let (path, _) = make(dir.path(), 5, "secret");
    for wrong in ["Secret", "secret ", ""] {
        match keystore::unlock(&path, wrong) {
            Err(KeystoreError::WrongPassphrase(p)) => assert_eq!(p, path),
            other => panic!("{wrong:?}: expected WrongPassphrase, got {other:?}"),
        }
    }
    let message = keystore::unlock(&path, "nope").unwrap_err().to_string();
    assert!(message.contains("wrong passphrase"), "{message}");
}

#[test]
fn missing_file() {
    let dir = tempdir();
    let path = dir.path().join("nothing").join("keypair.json");
    for result in [
        keystore::unlock(&path, "x").map(|_| ()),
        keystore::info(&path).map(|_| ()),
    ] {
        match result {
            Err(KeystoreError::Missing(p)) => assert_eq!(p, path),
            other => panic!("expected Missing, got {other:?}"),
        }
    }
    let message = keystore::info(&path).unwrap_err().to_string();
    assert!(message.contains("no keystore"), "{message}");
    assert!(message.contains("keys new"), "{message}");
}

#[test]
fn exists_without_overwrite() {
    let dir = tempdir();
    let (path, first) = make(dir.path(), 1, "");
    let before = std::fs::read(&path).unwrap();
    let second = Keypair::from_seed(&[2; 32]);
    match keystore::create(&path, &second, "", CHEAP, false) {
        Err(KeystoreError::Exists(p)) => assert_eq!(p, path),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "file untouched");
    assert_eq!(keystore::info(&path).unwrap().public_key, first.public());
    let message = keystore::create(&path, &second, "", CHEAP, false)
        .unwrap_err()
        .to_string();
    assert!(message.contains("--force"), "{message}");
    // With overwrite the new key replaces the old one.
    keystore::create(&path, &second, "", CHEAP, true).unwrap();
    assert_eq!(keystore::info(&path).unwrap().public_key, second.public());
}

#[test]
fn corrupt_documents() {
    // Not JSON at all, and JSON of another shape.
    let dir = tempdir();
    let path = dir.path().join("keypair.json");
    for (content, needle) in [
        (&b"\x00\x01 not json"[..], "not a keystore document"),
        (b"{\"format\": \"trac-keystore\"", "not a keystore document"),
        (b"[]", "not a keystore document"),
        (b"", "not a keystore document"),
    ] {
        std::fs::write(&path, content).unwrap();
        for result in [
            keystore::unlock(&path, "x").map(|_| ()),
            keystore::info(&path).map(|_| ()),
        ] {
            match result {
                Err(KeystoreError::Corrupt { reason, .. }) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }
    let message = keystore::info(&path).unwrap_err().to_string();
    assert!(message.contains("corrupt"), "{message}");

    assert_corrupt_after("secret", "unknown format", |j| j["format"] = "other".into());
    assert_corrupt_after("secret", "unsupported version", |j| j["version"] = 2.into());
    assert_corrupt_after("secret", "not a keystore document", |j| {
        j["extra"] = "field".into();
    });
    assert_corrupt_after("secret", "not a keystore document", |j| {
        j["secret"]["scheme"] = "rot13".into();
    });
    assert_corrupt_after("secret", "public_key", |j| j["public_key"] = "zz".into());
    // The address of another key.
    let other = Keypair::from_seed(&[0xee; 32]).address();
    assert_corrupt_after("secret", "address does not match", |j| {
        j["address"] = other.clone().into();
    });
    assert_corrupt_after("", "address does not match", |j| {
        j["address"] = other.clone().into();
    });
    // Malformed parameters of the encrypted secret.
    assert_corrupt_after("secret", "salt", |j| j["secret"]["salt"] = "0011".into());
    assert_corrupt_after("secret", "salt", |j| j["secret"]["salt"] = "xyz".into());
    assert_corrupt_after("secret", "nonce", |j| j["secret"]["nonce"] = "00".into());
    assert_corrupt_after("secret", "ciphertext", |j| {
        let c = j["secret"]["ciphertext"].as_str().unwrap().to_string();
        j["secret"]["ciphertext"] = c[..94].into();
    });
    assert_corrupt_after("", "seed", |j| j["secret"]["seed"] = "abc".into());
    // An unencrypted seed that belongs to another key.
    assert_corrupt_after("", "does not belong", |j| {
        j["secret"]["seed"] = hex::encode([0x42u8; 32]).into();
    });
}

#[test]
fn absurd_kdf_parameters_are_refused_before_deriving() {
    let started = std::time::Instant::now();
    let over = KdfParams::MAX.m_cost_kib + 1;
    assert_corrupt_after("secret", "KDF", |j| {
        j["secret"]["kdf"]["m_cost_kib"] = over.into();
    });
    assert_corrupt_after("secret", "KDF", |j| {
        j["secret"]["kdf"]["m_cost_kib"] = u32::MAX.into();
    });
    assert_corrupt_after("secret", "KDF", |j| {
        j["secret"]["kdf"]["t_cost"] = (KdfParams::MAX.t_cost + 1).into();
    });
    assert_corrupt_after("secret", "KDF", |j| {
        j["secret"]["kdf"]["p_cost"] = (KdfParams::MAX.p_cost + 1).into();
    });
    // Parameters Argon2 itself refuses (zero passes) are corrupt too, not a panic.
    assert_corrupt_after("secret", "KDF", |j| j["secret"]["kdf"]["t_cost"] = 0.into());
    // Refusing them must not have run Argon2 with 4 GiB.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn tampered_encrypted_secret_is_a_wrong_passphrase() {
    for index in [0usize, 31, 63, 64, 95] {
        assert_wrong_passphrase_after(|j| {
            let c = j["secret"]["ciphertext"].as_str().unwrap().to_string();
            j["secret"]["ciphertext"] = flip_hex_digit(&c, index).into();
        });
    }
    assert_wrong_passphrase_after(|j| {
        let n = j["secret"]["nonce"].as_str().unwrap().to_string();
        j["secret"]["nonce"] = flip_hex_digit(&n, 0).into();
    });
    assert_wrong_passphrase_after(|j| {
        let s = j["secret"]["salt"].as_str().unwrap().to_string();
        j["secret"]["salt"] = flip_hex_digit(&s, 5).into();
    });
    // Other (valid) KDF costs derive another key.
    assert_wrong_passphrase_after(|j| j["secret"]["kdf"]["t_cost"] = 2.into());
    // The public key in the clear is bound to the ciphertext: swapping in another key (with its
    // matching address, so the document is self-consistent) fails decryption.
    let other = Keypair::from_seed(&[0xee; 32]);
    assert_wrong_passphrase_after(|j| {
        j["public_key"] = other.public().to_hex().into();
        j["address"] = other.address().into();
    });
}
