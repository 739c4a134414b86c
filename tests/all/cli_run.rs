//! `trac run` configuration: the real binary (`--dry-run`) in temporary directories, and the
//! pure parts of `trac_host::node::config` (precedence, banner) called directly.
//!
//! Keystores are unencrypted except in one test, so each run is quick.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use trac_host::crypto::{Hash32, Keypair, PublicKey};
use trac_host::node::config::{
    BANNER_TITLE, BannerInfo, ConfigError, ContractSource, Origin, Persisted, RunConfig, RunFlags,
    StoreLayout, render_banner,
};

use crate::support::{Outcome, tempdir, trac};

const SUBNET_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MSB_HEX: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// `trac run …` in `dir` with the given environment.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let mut cmd = trac(dir, &full);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.run()
}

/// `trac run --dry-run …`, which must succeed; returns standard output.
#[track_caller]
fn dry(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut full = vec!["--dry-run"];
    full.extend_from_slice(args);
    run(dir, &full, env).success().to_string()
}

/// The line of the resolved configuration for `flag` (`"  --mdns   on  (default)"`).
#[track_caller]
fn setting<'a>(stdout: &'a str, flag: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{flag} ")))
        .unwrap_or_else(|| panic!("no {flag} line in {stdout}"))
        .trim()
}

/// The value after `label: ` on the banner line starting with `label`.
#[track_caller]
fn banner<'a>(stdout: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} banner line in {stdout}"))
}

fn keystore_public(path: &Path) -> String {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["public_key"].as_str().unwrap().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn defaults_create_the_layout_keystores_and_banner() {
    let dir = tempdir();
    let d = dir.path();
    let out = run(d, &["--dry-run"], &[]);
    let stdout = out.success().to_string();
    assert!(
        out.stderr.contains("stored unencrypted"),
        "keystore warning: {}",
        out.stderr
    );

    // Resolved configuration with origins.
    assert_eq!(
        setting(&stdout, "--peer-store-name"),
        "--peer-store-name        peer  (default)"
    );
    assert!(setting(&stdout, "--msb-store-name").contains("peer-msb  (derived)"));
    assert!(setting(&stdout, "--subnet-channel").contains("trac-peer-subnet  (default)"));
    assert!(setting(&stdout, "--mdns").contains("on  (default)"));
    assert!(setting(&stdout, "--timer").contains("off  (default)"));
    assert!(setting(&stdout, "--contract").contains("bundled Intercom  (default)"));
    assert!(setting(&stdout, "--msb-faucet").contains("none"));

    // Layout and keystores (0600, two different keys).
    let peer_ks = d.join("stores/peer/keypair.json");
    let msb_ks = d.join("stores/peer-msb/keypair.json");
    assert_eq!(mode(&peer_ks), 0o600);
    assert_eq!(mode(&msb_ks), 0o600);
    let peer_pub = keystore_public(&peer_ks);
    let msb_pub = keystore_public(&msb_ks);
    assert_ne!(peer_pub, msb_pub);
    assert!(stdout.contains("created the peer keystore"), "{stdout}");
    // Nothing to persist yet: a new subnet and a new dev network.
    assert!(!d.join("stores/peer/subnet-bootstrap.hex").exists());
    assert!(!d.join("stores/peer-msb/msb-bootstrap.hex").exists());

    // The banner.
    assert!(stdout.contains(&format!("\n{BANNER_TITLE}\n")), "{stdout}");
    assert!(stdout.contains(&format!("\n{}\n", "=".repeat(BANNER_TITLE.len()))));
    assert!(banner(&stdout, "MSB network bootstrap").starts_with("new dev network"));
    assert_eq!(banner(&stdout, "MSB channel"), "trac-msb");
    assert_eq!(banner(&stdout, "MSB store"), "stores/peer-msb");
    assert_eq!(banner(&stdout, "Peer store"), "stores/peer");
    assert!(banner(&stdout, "Peer subnet bootstrap").starts_with("new subnet"));
    assert_eq!(banner(&stdout, "Peer subnet channel"), "trac-peer-subnet");
    assert_eq!(banner(&stdout, "Peer pubkey (hex)"), peer_pub);
    assert_eq!(banner(&stdout, "Peer writer key (hex)"), peer_pub);
    let public = PublicKey::from_hex(&peer_pub).unwrap();
    assert_eq!(
        banner(&stdout, "Peer trac address (bech32m)"),
        public.address()
    );
    assert_eq!(
        banner(&stdout, "MSB wallet address"),
        PublicKey::from_hex(&msb_pub).unwrap().address()
    );
    assert_eq!(banner(&stdout, "Subnet writable"), "yes");
    assert_eq!(banner(&stdout, "Listen addresses"), "/ip4/0.0.0.0/tcp/0");
    assert!(!stdout.contains("DHT bootstrap nodes"), "{stdout}");

    // A second start keeps the keys.
    let again = run(d, &["--dry-run"], &[]);
    let stdout = again.success();
    assert!(!stdout.contains("created the"), "{stdout}");
    assert!(!again.stderr.contains("unencrypted"), "{}", again.stderr);
    assert_eq!(banner(stdout, "Peer pubkey (hex)"), peer_pub);
    assert_eq!(keystore_public(&msb_ks), msb_pub);
}

#[test]
fn without_dry_run_a_bad_value_fails_before_writing_anything() {
    // Without --dry-run the node starts (tests/all/node.rs); a bad value is reported first.
    let dir = tempdir();
    let stderr = run(dir.path(), &["--mdns=maybe"], &[])
        .failure(1)
        .to_string();
    assert!(stderr.contains("--mdns"), "{stderr}");
    assert!(!dir.path().join("stores").exists());
}

#[test]
fn flag_beats_env_beats_default_in_both_flag_forms() {
    let dir = tempdir();
    let d = dir.path();
    let env = [
        ("SUBNET_CHANNEL", "env-channel"),
        ("PEER_MDNS", "off"),
        ("PEER_STORES_DIRECTORY", "env-stores"),
        ("INTERCOM_TIMER", "yes"),
        ("PEER_LISTEN", "127.0.0.1:7000"),
    ];
    // Environment only.
    let out = dry(d, &[], &env);
    assert!(setting(&out, "--subnet-channel").contains("env-channel  (env SUBNET_CHANNEL)"));
    assert!(setting(&out, "--mdns").contains("off  (env PEER_MDNS)"));
    assert!(setting(&out, "--timer").contains("on  (env INTERCOM_TIMER)"));
    assert_eq!(banner(&out, "Peer store"), "env-stores/peer");
    assert_eq!(banner(&out, "MSB store"), "stores/peer-msb");
    assert_eq!(banner(&out, "Listen addresses"), "/ip4/127.0.0.1/tcp/7000");
    assert!(d.join("env-stores/peer/keypair.json").is_file());

    // Flags win: `--k=v`, `--k v` and a bare boolean.
    let out = dry(
        d,
        &[
            "--subnet-channel=flag-channel",
            "--peer-stores-directory",
            "flag-stores",
            "--mdns",
            "--timer",
            "off",
            "--listen",
            "/ip4/127.0.0.1/tcp/7001,[::1]:7002",
        ],
        &env,
    );
    assert!(setting(&out, "--subnet-channel").contains("flag-channel  (flag --subnet-channel)"));
    assert!(setting(&out, "--mdns").contains("on  (flag --mdns)"));
    assert!(setting(&out, "--timer").contains("off  (flag --timer)"));
    assert_eq!(banner(&out, "Peer subnet channel"), "flag-channel");
    assert_eq!(banner(&out, "Peer store"), "flag-stores/peer");
    assert_eq!(
        banner(&out, "Listen addresses"),
        "/ip4/127.0.0.1/tcp/7001, /ip6/::1/tcp/7002"
    );

    // An empty flag value falls through to the variable.
    let out = dry(d, &["--subnet-channel=", "--mdns="], &env);
    assert!(setting(&out, "--subnet-channel").contains("env-channel  (env SUBNET_CHANNEL)"));
    assert!(setting(&out, "--mdns").contains("off  (env PEER_MDNS)"));
}

#[test]
fn the_store_label_is_positional_only() {
    let dir = tempdir();
    let d = dir.path();
    // A flag's value is never the store label (reference weakness 11.4 #24).
    let out = dry(d, &["--msb-bootstrap", MSB_HEX], &[]);
    assert_eq!(banner(&out, "Peer store"), "stores/peer");
    assert_eq!(banner(&out, "MSB network bootstrap"), MSB_HEX);
    assert!(!d.join(format!("stores/{MSB_HEX}")).exists());

    // A positional label, before or after flags.
    let out = dry(d, &["alice", "--subnet-channel", "c"], &[]);
    assert_eq!(banner(&out, "Peer store"), "stores/alice");
    assert_eq!(banner(&out, "MSB store"), "stores/alice-msb");
    assert!(setting(&out, "--peer-store-name").contains("alice  (store label)"));
    let out = dry(d, &["--msb-channel", "x", "bob"], &[]);
    assert_eq!(banner(&out, "Peer store"), "stores/bob");

    // The command line beats PEER_STORE_NAME; the variable beats the default.
    let out = dry(d, &["carol"], &[("PEER_STORE_NAME", "dave")]);
    assert_eq!(banner(&out, "Peer store"), "stores/carol");
    let out = dry(d, &[], &[("PEER_STORE_NAME", "dave")]);
    assert_eq!(banner(&out, "Peer store"), "stores/dave");
    let out = dry(d, &["--peer-store-name=erin", "--msb-store-name", "m"], &[]);
    assert_eq!(banner(&out, "Peer store"), "stores/erin");
    assert_eq!(banner(&out, "MSB store"), "stores/m");

    // A label and a different --peer-store-name conflict.
    let stderr = run(d, &["--dry-run", "x", "--peer-store-name", "y"], &[])
        .failure(1)
        .to_string();
    assert!(stderr.contains("disagree"), "{stderr}");
}

/// Arguments, environment, and what the error message must contain.
type InvalidCase = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn invalid_values_fail_at_start_with_a_clear_message() {
    let dir = tempdir();
    let d = dir.path();
    let cases: &[InvalidCase] = &[
        (
            &["--subnet-bootstrap", "abc"],
            &[],
            &["--subnet-bootstrap", "\"abc\"", "64 hex digits", "got 3"],
        ),
        (
            &["--msb-bootstrap=zz11111111111111111111111111111111111111111111111111111111111111"],
            &[],
            &["--msb-bootstrap", "hex digits"],
        ),
        (
            &[],
            &[("SUBNET_BOOTSTRAP", "1234")],
            &["SUBNET_BOOTSTRAP (for --subnet-bootstrap)", "\"1234\""],
        ),
        (&["--mdns=maybe"], &[], &["--mdns", "\"maybe\"", "boolean"]),
        (
            &["--rpc-port", "70000"],
            &[],
            &["--rpc-port", "\"70000\"", "0 to 65535"],
        ),
        (
            &["--rpc-host", "localhost"],
            &[],
            &["--rpc-host", "IP address"],
        ),
        (
            &["--rpc-max-body-bytes=0"],
            &[],
            &["--rpc-max-body-bytes", "\"0\"", "whole number of bytes"],
        ),
        (
            &[],
            &[("PEER_RPC", "sometimes")],
            &["PEER_RPC (for --rpc)", "\"sometimes\""],
        ),
        (
            &["--rpc-allow-origin", "bad\norigin"],
            &[],
            &["--rpc-allow-origin", "origin like"],
        ),
        (&["--timer", "2"], &[], &["--timer", "\"2\"", "boolean"]),
        (
            &["--timer", "bob"],
            &[],
            &["--timer", "\"bob\"", "store label goes before"],
        ),
        (
            &[],
            &[("INTERCOM_TIMER", "enabled")],
            &["INTERCOM_TIMER (for --timer)", "\"enabled\""],
        ),
        (
            &["--msb-faucet", "ten"],
            &[],
            &["--msb-faucet", "\"ten\"", "amount"],
        ),
        (
            &["--msb-faucet=0.1234567890123456789"],
            &[],
            &["--msb-faucet", "18 decimals"],
        ),
        (&["--msb-faucet=0"], &[], &["--msb-faucet", "more than 0"]),
        (
            &["--listen", "localhost:80"],
            &[],
            &["--listen", "\"localhost:80\"", "IP"],
        ),
        (
            &["--listen=/ip4/1.2.3.4/udp/5"],
            &[],
            &["--listen", "/ip4/1.2.3.4/udp/5"],
        ),
        (
            &["--listen=1.2.3.4:99999"],
            &[],
            &["--listen", "1.2.3.4:99999"],
        ),
        (
            &["--dht-bootstrap", "a:b"],
            &[],
            &["--peer-dht-bootstrap", "\"a:b\"", "host:port"],
        ),
        (
            &["--msb-dht-bootstrap=/ip4/1.2.3.4"],
            &[],
            &["--msb-dht-bootstrap", "/tcp/"],
        ),
        (
            &["--contract", "missing.wasm"],
            &[],
            &["contract file", "missing.wasm"],
        ),
        (
            &["--peer-store-name", "a/b"],
            &[],
            &["--peer-store-name", "folder name"],
        ),
        (
            &["--subnet-channel", "a\tb"],
            &[],
            &["--subnet-channel", "control characters"],
        ),
        (
            &[
                "--subnet-bootstrap",
                SUBNET_HEX,
                "--msb-bootstrap",
                SUBNET_HEX,
            ],
            &[],
            &["cannot equal the MSB bootstrap"],
        ),
        (
            &["--msb-bootstrap", MSB_HEX, "--msb-faucet", "5"],
            &[],
            &["--msb-faucet", "cannot be combined with --msb-bootstrap"],
        ),
        (&["--msb-store-name", "peer"], &[], &["same folder"]),
    ];
    for (args, env, expected) in cases {
        let mut full = vec!["--dry-run"];
        full.extend_from_slice(args);
        let out = run(d, &full, env);
        let stderr = out.failure(1);
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{args:?} {env:?}: {needle:?} missing from {stderr}"
            );
        }
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    // Nothing was created by the failed starts.
    assert!(!d.join("stores").exists());
}

#[test]
fn joined_bootstraps_are_persisted_and_read_back() {
    let dir = tempdir();
    let d = dir.path();
    let upper = SUBNET_HEX.replace('1', "A");
    let out = dry(
        d,
        &[
            "--subnet-bootstrap",
            &upper,
            "--msb-bootstrap",
            MSB_HEX,
            "--msb-channel",
            "my-msb",
        ],
        &[],
    );
    let lower = upper.to_lowercase();
    assert_eq!(banner(&out, "Peer subnet bootstrap"), lower);
    assert_eq!(
        banner(&out, "Subnet writable"),
        "unknown until the node has synced the subnet"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("stores/peer/subnet-bootstrap.hex")).unwrap(),
        format!("{lower}\n")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("stores/peer-msb/msb-bootstrap.hex")).unwrap(),
        format!("{MSB_HEX}\n")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("stores/peer-msb/msb-channel.txt")).unwrap(),
        "my-msb\n"
    );

    // A restart without the flags rejoins both.
    let out = dry(d, &[], &[]);
    assert_eq!(banner(&out, "Peer subnet bootstrap"), lower);
    assert_eq!(banner(&out, "MSB network bootstrap"), MSB_HEX);
    assert_eq!(banner(&out, "MSB channel"), "my-msb");
    assert!(
        setting(&out, "--subnet-bootstrap").contains("(file stores/peer/subnet-bootstrap.hex)")
    );
    assert!(setting(&out, "--msb-channel").contains("(file stores/peer-msb/msb-channel.txt)"));

    // A file with surrounding whitespace and upper case is accepted.
    std::fs::write(
        d.join("stores/peer/subnet-bootstrap.hex"),
        format!("  {}\r\n\n", SUBNET_HEX.replace('1', "B")),
    )
    .unwrap();
    let out = dry(d, &[], &[]);
    assert_eq!(
        banner(&out, "Peer subnet bootstrap"),
        SUBNET_HEX.replace('1', "b")
    );
}

#[test]
fn a_bad_bootstrap_file_is_ignored_with_a_warning() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir_all(d.join("stores/peer")).unwrap();
    let file = d.join("stores/peer/subnet-bootstrap.hex");
    for content in [
        "abc\n",
        &format!("{}x\n", &SUBNET_HEX[..63]),
        &format!("{SUBNET_HEX}00"),
    ] {
        std::fs::write(&file, content).unwrap();
        let out = run(d, &["--dry-run"], &[]);
        let stdout = out.success();
        assert!(
            banner(stdout, "Peer subnet bootstrap").starts_with("new subnet"),
            "{content:?}: {stdout}"
        );
        assert!(
            out.stderr
                .contains("warning: ignoring stores/peer/subnet-bootstrap.hex"),
            "{content:?}: {}",
            out.stderr
        );
        // Ignored, not replaced.
        assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
    }
}

#[test]
fn dht_lists_faucet_and_contract_reach_the_banner() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(d.join("app.wasm"), b"\0asm").unwrap();
    let out = run(
        d,
        &[
            "--dry-run",
            "--peer-dht-bootstrap",
            "10.0.0.1:4001, node.example:4002",
            "--dht-bootstrap=10.9.9.9:1",
            "--msb-dht-bootstrap",
            "/ip4/10.0.0.2/tcp/4003",
            "--msb-faucet",
            "0.5",
            "--contract",
            "app.wasm",
        ],
        &[("DHT_BOOTSTRAP", "10.8.8.8:1")],
    );
    let stdout = out.success();
    assert!(
        out.stderr.contains("--dht-bootstrap is ignored"),
        "{}",
        out.stderr
    );
    assert_eq!(
        banner(stdout, "Peer DHT bootstrap nodes"),
        "10.0.0.1:4001, node.example:4002"
    );
    assert_eq!(
        banner(stdout, "MSB DHT bootstrap nodes"),
        "/ip4/10.0.0.2/tcp/4003"
    );
    assert_eq!(banner(stdout, "MSB faucet"), "0.5 TNK per new peer");
    assert!(setting(stdout, "--contract").contains("app.wasm  (flag --contract)"));
}

#[test]
fn an_encrypted_keystore_needs_its_passphrase() {
    let dir = tempdir();
    let d = dir.path();
    let out = run(d, &["--dry-run", "--passphrase", "secret"], &[]);
    let stdout = out.success().to_string();
    assert!(!out.stderr.contains("unencrypted"), "{}", out.stderr);
    let peer = banner(&stdout, "Peer pubkey (hex)").to_string();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(d.join("stores/peer/keypair.json")).unwrap())
            .unwrap();
    assert_eq!(doc["secret"]["scheme"], "argon2id-xchacha20poly1305");

    // No passphrase and no terminal: a clear error.
    let stderr = run(d, &["--dry-run"], &[]).failure(1).to_string();
    assert!(stderr.contains("a passphrase is needed"), "{stderr}");
    // The right one from the environment: the same key.
    let out = dry(d, &[], &[("TRAC_PASSPHRASE", "secret")]);
    assert_eq!(banner(&out, "Peer pubkey (hex)"), peer);
    // The wrong one.
    let stderr = run(d, &["--dry-run"], &[("TRAC_PASSPHRASE", "nope")])
        .failure(1)
        .to_string();
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
}

// ----- the library, called directly -------------------------------------------------------

fn resolve(flags: &RunFlags, env: &[(&str, &str)]) -> Result<RunConfig, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RunConfig::resolve(flags, |k| env.get(k).map(OsString::from))
}

#[test]
fn peer_dht_bootstrap_precedence() {
    let both_env = [
        ("PEER_DHT_BOOTSTRAP", "1.1.1.1:1"),
        ("DHT_BOOTSTRAP", "2.2.2.2:2"),
    ];
    let flags = RunFlags {
        peer_dht_bootstrap: Some("3.3.3.3:3".into()),
        dht_bootstrap: Some("4.4.4.4:4".into()),
        ..RunFlags::default()
    };
    let c = resolve(&flags, &both_env).unwrap();
    assert_eq!(c.peer_dht_bootstrap, ["3.3.3.3:3"]);
    assert_eq!(
        c.origin("--peer-dht-bootstrap"),
        &Origin::Flag("--peer-dht-bootstrap")
    );
    let flags = RunFlags {
        dht_bootstrap: Some("4.4.4.4:4".into()),
        ..RunFlags::default()
    };
    let c = resolve(&flags, &both_env).unwrap();
    assert_eq!(c.peer_dht_bootstrap, ["4.4.4.4:4"]);
    assert_eq!(
        c.origin("--peer-dht-bootstrap"),
        &Origin::Flag("--dht-bootstrap")
    );
    let c = resolve(&RunFlags::default(), &both_env).unwrap();
    assert_eq!(c.peer_dht_bootstrap, ["1.1.1.1:1"]);
    assert_eq!(
        c.origin("--peer-dht-bootstrap"),
        &Origin::Env("PEER_DHT_BOOTSTRAP")
    );
    let c = resolve(&RunFlags::default(), &both_env[1..]).unwrap();
    assert_eq!(c.peer_dht_bootstrap, ["2.2.2.2:2"]);
    assert_eq!(
        c.origin("--peer-dht-bootstrap"),
        &Origin::Env("DHT_BOOTSTRAP")
    );
    let c = resolve(
        &RunFlags::default(),
        &[("PEER_DHT_BOOTSTRAP", " "), both_env[1]],
    )
    .unwrap();
    assert_eq!(c.peer_dht_bootstrap, ["2.2.2.2:2"]);
    let c = resolve(&RunFlags::default(), &[]).unwrap();
    assert!(c.peer_dht_bootstrap.is_empty());
}

#[test]
fn defaults_and_booleans_in_the_library() {
    let c = resolve(&RunFlags::default(), &[]).unwrap();
    assert_eq!(c.peer_store_name, "peer");
    assert_eq!(c.msb_store_name, "peer-msb");
    assert_eq!(c.subnet_channel, "trac-peer-subnet");
    assert!(c.mdns && !c.timer);
    assert_eq!(c.contract, ContractSource::BundledIntercom);
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listen[0].to_string(), "/ip4/0.0.0.0/tcp/0");
    assert_eq!(
        c.layout(),
        StoreLayout {
            peer_store: "stores/peer".into(),
            msb_store: "stores/peer-msb".into(),
        }
    );
    for (value, expected) in [
        ("1", true),
        ("TRUE", true),
        (" yes ", true),
        ("On", true),
        ("0", false),
        ("false", false),
        ("NO", false),
        ("off", false),
    ] {
        let flags = RunFlags {
            timer: Some(value.into()),
            ..RunFlags::default()
        };
        assert_eq!(resolve(&flags, &[]).unwrap().timer, expected, "{value:?}");
    }
    let flags = RunFlags {
        msb_faucet: Some("10".into()),
        ..RunFlags::default()
    };
    assert_eq!(
        resolve(&flags, &[]).unwrap().msb_faucet,
        Some(10 * trac_host::msb::TNK)
    );
}

#[test]
fn bootstrap_files_round_trip_in_the_library() {
    let dir = tempdir();
    let layout = StoreLayout {
        peer_store: dir.path().join("p"),
        msb_store: dir.path().join("m"),
    };
    assert_eq!(layout.read_subnet_bootstrap().unwrap(), Persisted::Absent);
    let id = Hash32([0xab; 32]);
    layout.write_subnet_bootstrap(&id).unwrap();
    assert_eq!(
        layout.read_subnet_bootstrap().unwrap(),
        Persisted::Found(id)
    );
    assert_eq!(
        std::fs::read_to_string(layout.subnet_bootstrap_file()).unwrap(),
        format!("{}\n", "ab".repeat(32))
    );
    layout.write_msb_network(&id, "chan").unwrap();
    assert_eq!(layout.read_msb_bootstrap().unwrap(), Persisted::Found(id));
    assert_eq!(
        layout.read_msb_channel().unwrap(),
        Persisted::Found("chan".into())
    );
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&layout.peer_store).unwrap().count(), 1);
    std::fs::write(layout.subnet_bootstrap_file(), "xyz").unwrap();
    let read = layout.read_subnet_bootstrap().unwrap();
    assert!(matches!(read, Persisted::Ignored { .. }), "{read:?}");
    assert!(read.warning().unwrap().contains("64 hex digits"));
}

#[test]
fn banner_of_a_read_only_joiner() {
    let peer = Keypair::from_seed(&[7; 32]).public();
    let info = BannerInfo {
        msb_bootstrap: Some(Hash32([2; 32])),
        msb_channel: "trac-msb".into(),
        msb_faucet: Some(5),
        msb_address: "trac1msb".into(),
        msb_store: "stores/p-msb".into(),
        msb_dht_bootstrap: vec!["10.0.0.1:1".into()],
        peer_store: "stores/p".into(),
        peer_dht_bootstrap: vec![],
        subnet_bootstrap: Some(Hash32([1; 32])),
        subnet_channel: "trac-peer-subnet".into(),
        peer_public_key: peer,
        writer_key: peer,
        writable: Some(false),
        subnet_bootstrap_file: "stores/p/subnet-bootstrap.hex".into(),
        listen: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        sidechannel_extras: vec!["news".into(), "ops".into()],
    };
    let text = render_banner(&info);
    assert!(text.contains("\nSidechannel entry: 0000intercom\nSidechannel extras: news, ops\n"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "");
    assert_eq!(lines[1], BANNER_TITLE);
    assert_eq!(
        lines[2],
        format!("MSB network bootstrap: {}", "02".repeat(32))
    );
    assert_eq!(lines[3], "MSB channel: trac-msb");
    // The faucet belongs to a network being created only.
    assert!(!text.contains("MSB faucet"));
    assert!(text.contains("\nMSB DHT bootstrap nodes: 10.0.0.1:1\n"));
    assert!(!text.contains("Peer DHT bootstrap nodes"));
    assert!(text.contains(&format!("\nPeer subnet bootstrap: {}\n", "01".repeat(32))));
    assert!(text.contains(&format!(
        "\nPeer trac address (bech32m): {}\n",
        peer.address()
    )));
    assert!(text.contains("\nSubnet writable: no\n"));
    assert!(text.contains(&format!(
        "\nWARNING: Subnet is read-only for this keypair: ask the subnet admin to run /add_writer --key {}",
        peer.to_hex()
    )));
    assert!(text.contains("\nSubnet bootstrap file: stores/p/subnet-bootstrap.hex\n"));
    assert!(text.contains("\nListen addresses: /ip4/127.0.0.1/tcp/4001\n"));
    assert_eq!(lines[lines.len() - 2], "=".repeat(BANNER_TITLE.len()));
    assert_eq!(lines[lines.len() - 1], "");
    assert!(text.ends_with("\n\n"));
}

#[test]
fn rpc_settings_resolve_with_flag_env_default_precedence() {
    let dir = tempdir();
    let out = dry(dir.path(), &[], &[]);
    assert_eq!(
        setting(&out, "--rpc"),
        "--rpc                    off  (default)"
    );
    assert!(setting(&out, "--rpc-port").contains("5001"));
    assert!(setting(&out, "--rpc-host").contains("127.0.0.1"));
    assert!(setting(&out, "--rpc-max-body-bytes").contains("1000000"));
    let out = dry(
        dir.path(),
        &["--rpc", "--rpc-port=0", "--api-tx-exposed"],
        &[
            ("PEER_RPC_PORT", "6000"),
            ("PEER_RPC_ALLOW_ORIGIN", "https://app.example"),
        ],
    );
    assert!(setting(&out, "--rpc").contains("on  (flag --rpc)"));
    assert!(setting(&out, "--rpc-port").contains("0  (flag --rpc-port)"));
    assert!(setting(&out, "--api-tx-exposed").contains("on"));
    assert!(
        setting(&out, "--rpc-allow-origin")
            .contains("https://app.example  (env PEER_RPC_ALLOW_ORIGIN)")
    );
    // Submissions exposed without the RPC: a warning, not an error.
    let outcome = run(dir.path(), &["--dry-run", "--api-tx-exposed"], &[]);
    let stderr = outcome.stderr.clone();
    outcome.success();
    assert!(
        stderr.contains("--api-tx-exposed has no effect without --rpc"),
        "{stderr}"
    );
}

#[test]
fn sc_bridge_settings_token_sources_and_invalid_values() {
    let dir = tempdir();
    let out = dry(dir.path(), &[], &[]);
    assert_eq!(
        setting(&out, "--sc-bridge"),
        "--sc-bridge              off  (default)"
    );
    assert!(setting(&out, "--sc-bridge-host").contains("127.0.0.1:49222"));
    assert!(setting(&out, "--sc-bridge-token").contains("none"));

    // The bridge needs a token; the error says how to give it out of process listings.
    let outcome = run(dir.path(), &["--dry-run", "--sc-bridge"], &[]);
    let stderr = outcome.stderr.clone();
    outcome.failure(1);
    assert!(
        stderr.contains("SC-Bridge requires --sc-bridge-token (auth is mandatory)"),
        "{stderr}"
    );
    assert!(stderr.contains("--sc-bridge-token-file"), "{stderr}");

    // Flag, then token file flag, then SC_BRIDGE_TOKEN, then SC_BRIDGE_TOKEN_FILE; the token
    // itself is never printed.
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "  token-from-a-file-0123456789 \n").unwrap();
    let file_arg = file.display().to_string();
    let out = dry(
        dir.path(),
        &["--sc-bridge", "--sc-bridge-token-file", &file_arg],
        &[("SC_BRIDGE_TOKEN", "token-from-the-environment")],
    );
    assert!(
        setting(&out, "--sc-bridge-token")
            .contains("set (not shown)  (flag --sc-bridge-token-file)")
    );
    assert!(!out.contains("token-from-a-file"), "{out}");
    let out = dry(
        dir.path(),
        &["--sc-bridge", "--sc-bridge-port=0"],
        &[
            ("SC_BRIDGE_TOKEN", "token-from-the-environment"),
            ("SC_BRIDGE_TOKEN_FILE", &file_arg),
            ("SC_BRIDGE_CLI", "1"),
        ],
    );
    assert!(setting(&out, "--sc-bridge-token").contains("(env SC_BRIDGE_TOKEN)"));
    assert!(setting(&out, "--sc-bridge-host").contains("127.0.0.1:0"));
    assert!(setting(&out, "--sc-bridge-cli").contains("on  (env SC_BRIDGE_CLI)"));
    let out = dry(
        dir.path(),
        &["--sc-bridge"],
        &[("SC_BRIDGE_TOKEN_FILE", &file_arg)],
    );
    assert!(setting(&out, "--sc-bridge-token").contains("(env SC_BRIDGE_TOKEN_FILE)"));

    // A short token is allowed with a warning; unreadable files and bad values fail.
    let outcome = run(
        dir.path(),
        &["--dry-run", "--sc-bridge", "--sc-bridge-token", "short"],
        &[],
    );
    let stderr = outcome.stderr.clone();
    outcome.success();
    assert!(stderr.contains("shorter than 16 characters"), "{stderr}");
    for (args, needle) in [
        (
            vec![
                "--sc-bridge",
                "--sc-bridge-token-file",
                "/nonexistent/token",
            ],
            "cannot read the token file",
        ),
        (
            vec!["--sc-bridge-port", "70000"],
            "invalid --sc-bridge-port \"70000\"",
        ),
        (
            vec!["--sc-bridge-host", "localhost"],
            "expected an IP address",
        ),
        (vec!["--sc-bridge-max-clients", "0"], "from 1 to 1024"),
        (vec!["--sc-bridge-max-frame-bytes", "10"], "from 1024"),
        (
            vec!["--sc-bridge-allow-origin", "bad\norigin"],
            "expected * or origins",
        ),
        (vec!["--sc-bridge-cli", "maybe"], "expected a boolean"),
    ] {
        let mut full = vec!["--dry-run"];
        full.extend(args.iter().copied());
        let outcome = run(dir.path(), &full, &[]);
        let stderr = outcome.failure(1).to_string();
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
