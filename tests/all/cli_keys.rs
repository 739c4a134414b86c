//! `trac keys …` run as a real process (the `trac-under-test` binary) in a temporary directory.
//!
//! Encrypted keystores made by the CLI use the default Argon2 costs (64 MiB), so the number of
//! runs that derive a key is kept small; most tests use unencrypted keystores.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use trac_host::crypto::{Keypair, decode_address};

use crate::support::{tempdir, trac};

const DEFAULT_KEYSTORE: &str = "stores/peer/keypair.json";

/// The address printed by `trac keys address` in `dir` (with extra arguments).
#[track_caller]
fn address(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["keys", "address"];
    args.extend_from_slice(extra);
    let out = trac(dir, &args).run();
    let address = out.success().trim().to_string();
    assert_eq!(address.len(), 63, "{address}");
    assert!(address.starts_with("trac1"), "{address}");
    decode_address(&address).expect("a valid address");
    address
}

/// `keys show --json` parsed.
#[track_caller]
fn show_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["keys", "show", "--json"];
    args.extend_from_slice(extra);
    let out = trac(dir, &args).run();
    serde_json::from_str(out.success()).expect("show --json prints JSON")
}

#[test]
fn new_show_address_export_with_a_passphrase() {
    let dir = tempdir();
    let d = dir.path();
    let created = trac(d, &["keys", "new", "--passphrase", "secret"]).run();
    let stdout = created.success().to_string();
    assert!(
        !created.stderr.contains("unencrypted"),
        "{}",
        created.stderr
    );
    let keystore = d.join(DEFAULT_KEYSTORE);
    assert!(keystore.is_file());
    assert_eq!(
        std::fs::metadata(&keystore).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let addr = address(d, &[]);
    assert!(stdout.contains(&addr), "{stdout}");

    let show = trac(d, &["keys", "show"]).run();
    let text = show.success();
    assert!(text.contains(&addr), "{text}");
    assert!(text.contains("encrypted:  yes"), "{text}");
    assert!(text.contains("keypair.json"), "{text}");

    let json = show_json(d, &[]);
    assert_eq!(json["address"], addr.as_str());
    assert_eq!(json["encrypted"], true);
    assert!(json["path"].as_str().unwrap().ends_with(DEFAULT_KEYSTORE));
    let public_key = json["public_key"].as_str().unwrap().to_string();
    assert_eq!(public_key.len(), 64);

    // Export with the right passphrase: a JSON document whose secret gives back the key.
    let export = trac(d, &["keys", "export", "--passphrase", "secret"]).run();
    let doc: Value = serde_json::from_str(export.success()).expect("export prints JSON");
    assert_eq!(doc["format"], "trac-secret-key");
    assert_eq!(doc["address"], addr.as_str());
    assert_eq!(doc["public_key"], public_key.as_str());
    let seed = hex::decode(doc["secret_key"].as_str().unwrap()).unwrap();
    let keypair = Keypair::from_seed(&seed.try_into().unwrap());
    assert_eq!(keypair.address(), addr);

    // The wrong passphrase: exit 1, a clear message, nothing on stdout.
    let wrong = trac(d, &["keys", "export", "--passphrase", "Secret"]).run();
    let stderr = wrong.failure(1);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(wrong.stdout.is_empty(), "{}", wrong.stdout);

    // The passphrase from TRAC_PASSPHRASE; a flag beats the variable.
    let from_env = trac(d, &["keys", "export"])
        .env("TRAC_PASSPHRASE", "secret")
        .run();
    assert_eq!(from_env.success(), export.stdout);
    let flag_wins = trac(d, &["keys", "export", "--passphrase", "secret"])
        .env("TRAC_PASSPHRASE", "wrong")
        .run();
    assert_eq!(flag_wins.success(), export.stdout);

    // Without any passphrase source and without a terminal: a clear error, no prompt.
    let none = trac(d, &["keys", "export"]).run();
    let stderr = none.failure(1);
    assert!(stderr.contains("a passphrase is needed"), "{stderr}");
    assert!(stderr.contains("--passphrase"), "{stderr}");

    // Import the export into another store (unencrypted): the same address.
    std::fs::write(d.join("export.json"), &export.stdout).unwrap();
    let imported = trac(
        d,
        &[
            "keys",
            "import",
            "--store",
            "copy",
            "--secret-file",
            "export.json",
            "--passphrase",
            "",
        ],
    )
    .run();
    imported.success();
    assert!(d.join("stores/copy/keypair.json").is_file());
    assert_eq!(address(d, &["--store", "copy"]), addr);
}

#[test]
fn new_refuses_to_overwrite_without_force() {
    let dir = tempdir();
    let d = dir.path();
    trac(d, &["keys", "new", "--passphrase", ""])
        .run()
        .success();
    let first = address(d, &[]);
    let before = std::fs::read(d.join(DEFAULT_KEYSTORE)).unwrap();

    let again = trac(d, &["keys", "new", "--passphrase", ""]).run();
    let stderr = again.failure(1);
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(d.join(DEFAULT_KEYSTORE)).unwrap(), before);
    assert_eq!(address(d, &[]), first);
    // Refused before asking for a passphrase.
    let no_pass = trac(d, &["keys", "new"]).run();
    assert!(no_pass.failure(1).contains("--force"));
    // import refuses too.
    std::fs::write(d.join("seed.hex"), hex::encode([1u8; 32])).unwrap();
    let import = trac(
        d,
        &[
            "keys",
            "import",
            "--secret-file",
            "seed.hex",
            "--passphrase",
            "",
        ],
    )
    .run();
    assert!(import.failure(1).contains("--force"));

    trac(d, &["keys", "new", "--passphrase", "", "--force"])
        .run()
        .success();
    assert_ne!(address(d, &[]), first);
}

#[test]
fn an_empty_passphrase_stores_unencrypted_with_a_warning() {
    let dir = tempdir();
    let d = dir.path();
    let out = trac(d, &["keys", "new", "--passphrase", ""]).run();
    out.success();
    assert!(out.stderr.contains("warning"), "{}", out.stderr);
    assert!(out.stderr.contains("unencrypted"), "{}", out.stderr);
    assert_eq!(show_json(d, &[])["encrypted"], false);
    let show = trac(d, &["keys", "show"]).run();
    assert!(show.success().contains("encrypted:  no"));
    // Exporting an unencrypted keystore needs no passphrase.
    let export = trac(d, &["keys", "export"]).run();
    let doc: Value = serde_json::from_str(export.success()).unwrap();
    assert_eq!(doc["address"], address(d, &[]).as_str());
}

#[test]
fn passphrase_from_the_environment() {
    let dir = tempdir();
    let d = dir.path();
    trac(d, &["keys", "new"])
        .env("TRAC_PASSPHRASE", "from-env")
        .run()
        .success();
    assert_eq!(show_json(d, &[])["encrypted"], true);
    // The variable was the passphrase: a passphrase file with it unlocks.
    std::fs::write(d.join("pass.txt"), "from-env\n").unwrap();
    let export = trac(d, &["keys", "export", "--passphrase-file", "pass.txt"]).run();
    let doc: Value = serde_json::from_str(export.success()).unwrap();
    assert_eq!(doc["address"], address(d, &[]).as_str());
}

#[test]
fn passphrase_from_a_file() {
    let dir = tempdir();
    let d = dir.path();
    // Only the first line counts.
    std::fs::write(d.join("pass.txt"), "file secret\nsecond line\n").unwrap();
    trac(d, &["keys", "new", "--passphrase-file", "pass.txt"])
        .run()
        .success();
    assert_eq!(show_json(d, &[])["encrypted"], true);
    let export = trac(d, &["keys", "export", "--passphrase", "file secret"]).run();
    export.success();
    // A missing passphrase file is a clear error.
    let missing = trac(d, &["keys", "export", "--passphrase-file", "nope.txt"]).run();
    let stderr = missing.failure(1);
    assert!(stderr.contains("nope.txt"), "{stderr}");
}

#[test]
fn either_passphrase_flag_beats_either_variable() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(d.join("right.txt"), "right\n").unwrap();
    std::fs::write(d.join("wrong.txt"), "wrong\n").unwrap();
    // Created with --passphrase-file although TRAC_PASSPHRASE is set.
    trac(d, &["keys", "new", "--passphrase-file", "right.txt"])
        .env("TRAC_PASSPHRASE", "wrong")
        .run()
        .success();
    // Unlocked with --passphrase although TRAC_PASSPHRASE_FILE is set.
    trac(d, &["keys", "export", "--passphrase", "right"])
        .env("TRAC_PASSPHRASE_FILE", "wrong.txt")
        .run()
        .success();
    // Unlocked by TRAC_PASSPHRASE_FILE alone: it really was "right".
    trac(d, &["keys", "export"])
        .env("TRAC_PASSPHRASE_FILE", "right.txt")
        .run()
        .success();
    // Both flags at once are still a usage error.
    let both = trac(
        d,
        &[
            "keys",
            "export",
            "--passphrase",
            "right",
            "--passphrase-file",
            "right.txt",
        ],
    )
    .run();
    both.failure(2);
}

#[test]
fn no_passphrase_without_a_terminal_is_a_clear_error() {
    let dir = tempdir();
    let d = dir.path();
    let out = trac(d, &["keys", "new"]).run();
    let stderr = out.failure(1);
    assert!(stderr.contains("a passphrase is needed"), "{stderr}");
    assert!(stderr.contains("TRAC_PASSPHRASE"), "{stderr}");
    assert!(!d.join(DEFAULT_KEYSTORE).exists());
    // Also when standard input is a pipe with content: it is not read as the passphrase.
    let piped = trac(d, &["keys", "new"]).stdin(b"secret\n").run();
    assert!(piped.failure(1).contains("a passphrase is needed"));
    assert!(!d.join(DEFAULT_KEYSTORE).exists());
}

#[test]
fn import_hex_forms() {
    let dir = tempdir();
    let d = dir.path();
    let seed = [0x2au8; 32];
    let keypair = Keypair::from_seed(&seed);
    let seed_hex = hex::encode(seed);
    let full_hex = format!("{seed_hex}{}", keypair.public().to_hex());

    // 64 hex digits (the seed), from a file, with surrounding whitespace.
    std::fs::write(d.join("seed.hex"), format!("  {seed_hex}\n")).unwrap();
    trac(
        d,
        &[
            "keys",
            "import",
            "--store",
            "a",
            "--secret-file",
            "seed.hex",
            "--passphrase",
            "",
        ],
    )
    .run()
    .success();
    assert_eq!(address(d, &["--store", "a"]), keypair.address());

    // 128 hex digits (seed ‖ public key), from standard input.
    trac(
        d,
        &[
            "keys",
            "import",
            "--store",
            "b",
            "--secret-file",
            "-",
            "--passphrase",
            "",
        ],
    )
    .stdin(full_hex.as_bytes())
    .run()
    .success();
    assert_eq!(address(d, &["--store", "b"]), keypair.address());

    // 128 hex digits whose halves do not belong together.
    let other = Keypair::from_seed(&[0x2b; 32]).public().to_hex();
    let inconsistent = format!("{seed_hex}{other}");
    let out = trac(d, &["keys", "import", "--store", "c", "--passphrase", ""])
        .stdin(inconsistent.as_bytes())
        .run();
    let stderr = out.failure(1);
    assert!(stderr.contains("inconsistent"), "{stderr}");
    assert!(!d.join("stores/c/keypair.json").exists());

    // Neither form.
    for bad in ["abc", &seed_hex[..63], &format!("{}zz", &seed_hex[..62])] {
        let out = trac(d, &["keys", "import", "--store", "c", "--passphrase", ""])
            .stdin(bad.as_bytes())
            .run();
        out.failure(1);
        assert!(!d.join("stores/c/keypair.json").exists());
    }
    // An export document that was edited is refused.
    let doc = serde_json::json!({
        "format": "trac-secret-key",
        "public_key": keypair.public().to_hex(),
        "address": Keypair::from_seed(&[0x2b; 32]).address(),
        "secret_key": seed_hex,
    });
    let out = trac(d, &["keys", "import", "--store", "c", "--passphrase", ""])
        .stdin(doc.to_string().as_bytes())
        .run();
    assert!(out.failure(1).contains("inconsistent"), "{}", out.stderr);
}

#[test]
fn export_to_a_private_file() {
    let dir = tempdir();
    let d = dir.path();
    trac(d, &["keys", "new", "--passphrase", ""])
        .run()
        .success();
    let out = trac(d, &["keys", "export", "--out", "secret.json"]).run();
    assert!(out.success().is_empty(), "the secret is not printed");
    let path = d.join("secret.json");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["address"], address(d, &[]).as_str());
}

#[test]
fn missing_and_corrupt_keystores() {
    let dir = tempdir();
    let d = dir.path();
    for command in [
        &["keys", "show"][..],
        &["keys", "address"],
        &["keys", "export", "--passphrase", "x"],
    ] {
        let out = trac(d, command).run();
        let stderr = out.failure(1);
        assert!(stderr.contains("no keystore"), "{command:?}: {stderr}");
        assert!(stderr.contains("keypair.json"), "{command:?}: {stderr}");
    }

    trac(d, &["keys", "new", "--passphrase", ""])
        .run()
        .success();
    std::fs::write(d.join(DEFAULT_KEYSTORE), "{ this is not json").unwrap();
    for command in [
        &["keys", "show"][..],
        &["keys", "address"],
        &["keys", "export"],
    ] {
        let out = trac(d, command).run();
        let stderr = out.failure(1);
        assert!(stderr.contains("corrupt"), "{command:?}: {stderr}");
    }
}

#[test]
fn usage_errors_exit_with_2() {
    let dir = tempdir();
    let d = dir.path();
    for args in [
        &["keys", "show", "--no-such-flag"][..],
        &["keys", "frobnicate"],
        &["keys"],
        &["--bogus"],
        // --passphrase and --passphrase-file conflict.
        &["keys", "new", "--passphrase", "a", "--passphrase-file", "f"],
    ] {
        let out = trac(d, args).run();
        let stderr = out.failure(2);
        assert!(!stderr.is_empty(), "{args:?}");
    }
    assert!(!d.join("stores").exists());
    // Help is not an error.
    let help = trac(d, &["keys", "--help"]).run();
    assert!(help.success().contains("new"));
}

#[test]
fn store_flags_select_the_keystore_file() {
    let dir = tempdir();
    let d = dir.path();
    let new = |extra: &[&str]| {
        let mut args = vec!["keys", "new", "--passphrase", ""];
        args.extend_from_slice(extra);
        trac(d, &args).run().success().to_string()
    };
    new(&["--store", "alice"]);
    assert!(d.join("stores/alice/keypair.json").is_file());
    new(&["--stores-dir", "elsewhere"]);
    assert!(d.join("elsewhere/peer/keypair.json").is_file());
    new(&["--stores-dir", "elsewhere", "--store", "bob"]);
    assert!(d.join("elsewhere/bob/keypair.json").is_file());
    new(&["--keystore", "keys/explicit.json", "--store", "ignored"]);
    assert!(d.join("keys/explicit.json").is_file());
    assert!(!d.join("stores/ignored").exists());
    assert!(!d.join(DEFAULT_KEYSTORE).exists());

    // Each location holds its own key.
    let alice = address(d, &["--store", "alice"]);
    let peer_elsewhere = address(d, &["--stores-dir", "elsewhere"]);
    let bob = address(d, &["--stores-dir", "elsewhere", "--store", "bob"]);
    let explicit = address(d, &["--keystore", "keys/explicit.json"]);
    let all = [&alice, &peer_elsewhere, &bob, &explicit];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // The flags also come from the environment, and a flag beats its variable.
    let out = trac(d, &["keys", "address"])
        .env("TRAC_STORE", "alice")
        .run();
    assert_eq!(out.success().trim(), alice);
    let out = trac(d, &["keys", "address"])
        .env("TRAC_STORES_DIR", "elsewhere")
        .env("TRAC_STORE", "bob")
        .run();
    assert_eq!(out.success().trim(), bob);
    let out = trac(d, &["keys", "address", "--store", "alice"])
        .env("TRAC_STORE", "bob")
        .run();
    assert_eq!(out.success().trim(), alice);
    let out = trac(d, &["keys", "address"])
        .env("TRAC_KEYSTORE", "keys/explicit.json")
        .run();
    assert_eq!(out.success().trim(), explicit);
    // The global flags may also come before the subcommand.
    let out = trac(d, &["keys", "--store", "alice", "address"]).run();
    assert_eq!(out.success().trim(), alice);

    // A store label is a folder name, not a path.
    for bad in ["a/b", "..", "", "."] {
        let out = trac(d, &["keys", "show", "--store", bad]).run();
        let stderr = out.failure(1);
        assert!(stderr.contains("invalid --store"), "{bad:?}: {stderr}");
    }
}
