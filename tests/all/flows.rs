//! The app's flows across three real `trac run` processes (an admin and two joiners, alice
//! and bob) on 127.0.0.1 with port 0 and mDNS off: gated and open writer modes, chat, a
//! transaction settled through the admin's MSB validator by a peer that is not one, a
//! subnet of the second example app, contract upgrades by terminal and by
//! `trac contract deploy` (running and stopped node), restarts, SIGKILL recovery, and the
//! refusal of a peer speaking another protocol version.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::node_support::{NodeProc, PATIENCE, artifact, await_converged, banner, joining};
use crate::support::tempdir;

/// An admin with a faucet and two joiners; returns them and alice's address.
fn three(dirs: [&Path; 3], admin_flags: &[&str]) -> (NodeProc, NodeProc, NodeProc, String) {
    let mut flags = vec!["--msb-faucet", "10"];
    flags.extend_from_slice(admin_flags);
    let mut admin = NodeProc::start(dirs[0], &flags);
    let (msb, subnet, addr) = banner(&mut admin);
    let mut alice = NodeProc::start(dirs[1], &joining(&msb, &subnet, &addr));
    let (_, _, alice_addr) = banner(&mut alice);
    let mut bob = NodeProc::start(dirs[2], &joining(&msb, &subnet, &addr));
    banner(&mut bob);
    (admin, alice, bob, alice_addr)
}

/// `trac contract deploy <component> --store <peer store>`.
fn cli_deploy(component: &Path, store: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trac-under-test"))
        .args(["contract", "deploy"])
        .arg(component)
        .arg("--store")
        .arg(store)
        .env_clear()
        .output()
        .expect("run trac contract deploy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn gated_then_open_writers_chat_and_a_tx_forwarded_to_the_validator() {
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    let (mut admin, mut alice, mut bob, _) = three([a.path(), b.path(), c.path()], &[]);
    let (alice_key, bob_key) = (alice.writer_key(), bob.writer_key());

    // Gated: the admin adds alice; bob stays read-only and his writes are refused.
    admin.send("/set_chat_status --enabled 1");
    admin.expect_containing("appended");
    admin.send(&format!("/add_writer --key {alice_key}"));
    admin.expect_containing("appended");
    alice.await_role("writer yes");
    alice.send("/post --message \"hello from alice\"");
    alice.expect_containing("appended");
    bob.send("/post --message \"bob here\"");
    let refused = bob.expect_line("Command failed:");
    assert!(refused.contains("not writable"), "{refused}");
    let msg = bob.await_value("msg/0", |v| v.contains("hello from alice"));
    assert!(msg.contains(&alice_key), "{msg}");
    bob.send("/stats");
    assert!(bob.expect_line("Peer ").contains("writer no"));

    // Open: with auto-add on, bob asks a writer to append his signed request.
    admin.send("/set_auto_add_writers --enabled 1");
    admin.expect_containing("appended");
    bob.await_role("writer yes");
    bob.send("/post --message \"bob joined\"");
    bob.expect_containing("appended");
    admin.await_value("msg/1", |v| {
        v.contains("bob joined") && v.contains(&bob_key)
    });

    // A transaction by alice, who is no MSB validator: the subnet is registered on MSB, her
    // faucet grant and the registration reach her replica, then her op is forwarded to the
    // admin's validator, settled, and applied on all three.
    admin.send("/deploy_subnet");
    admin.expect_line("MSB TX broadcasted:");
    alice.retry(
        "/tx --command something --sim 1",
        "",
        "Simulation succeeded",
    );
    alice.send("/tx --command something");
    let tx = alice.expect_line("MSB TX broadcasted:");
    assert_eq!(tx.len(), 64, "{tx}");
    for node in [&mut admin, &mut alice, &mut bob] {
        node.await_value("txl", |v| v == "1");
    }
    let record = bob.await_value("txi/0", |v| v != "null");
    assert!(record.contains(&alice_key), "{record}");
    let (height, root) = await_converged(&mut [&mut admin, &mut alice, &mut bob], 1);
    assert!(height >= 1 && root.len() == 64, "{height} {root}");

    // MSB administration: only the MSB admin whitelists; alice's MSB node key, funded and
    // whitelisted by the admin, joins the validators (the admin's validator co-signs).
    bob.send(&format!("/msb_add_whitelist --address {alice_key}"));
    let refused = bob.expect_line("Command failed:");
    assert!(refused.contains("Only the MSB admin"), "{refused}");
    alice.send("/msb");
    let alice_msb = alice.expect_line("MSB node key:");
    assert!(alice_msb.ends_with("(validator no)"), "{alice_msb}");
    let alice_msb = alice_msb.split(' ').next().expect("a key").to_string();
    admin.send(&format!("/transfer --to {alice_msb} --amount 2"));
    admin.expect_line("MSB TX broadcasted:");
    admin.send(&format!("/msb_add_whitelist --address {alice_msb}"));
    admin.expect_line("MSB whitelist appended:");
    alice.retry("/msb_join_validators", "", "MSB TX broadcasted");
    alice.retry("/msb", "MSB node key:", "(validator yes)");
    admin.send(&format!("/msb_add_indexer --address {alice_msb}"));
    admin.expect_line("MSB addIndexer appended:");
    for node in [bob, alice, admin] {
        node.exit();
    }
}

#[test]
fn a_registry_subnet_upgrades_on_every_peer_by_terminal_and_by_cli() {
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    let registry = artifact("registry");
    let intercom = artifact("intercom");
    let contract = registry.to_string_lossy().into_owned();
    let (mut admin, mut alice, mut bob, alice_addr) =
        three([a.path(), b.path(), c.path()], &["--contract", &contract]);
    for node in [&mut admin, &mut alice, &mut bob] {
        node.await_value("contract/current", |v| v.contains("\"registry\""));
    }

    // The registry works like Intercom: alice becomes a writer and claims a name.
    admin.send(&format!("/add_writer --key {}", alice.writer_key()));
    admin.expect_containing("appended");
    alice.await_role("writer yes");
    admin.send("/deploy_subnet");
    admin.expect_line("MSB TX broadcasted:");
    alice.retry(
        "/tx --command \"claim alice peer-one\" --sim 1",
        "",
        "Simulation succeeded",
    );
    alice.send("/tx --command \"claim alice peer-one\"");
    alice.expect_line("MSB TX broadcasted:");
    for node in [&mut admin, &mut alice, &mut bob] {
        node.await_value("name/alice", |v| v.contains("peer-one"));
    }
    bob.retry("/whois --name alice", "alice", "peer-one");

    // Upgrade by terminal: Intercom replaces the registry at one log position everywhere.
    admin.send(&format!("/deploy_contract --file {}", intercom.display()));
    admin.expect_line("Contract ");
    let current: Vec<String> = [&mut admin, &mut alice, &mut bob]
        .into_iter()
        .map(|n| n.await_value("contract/current", |v| v.contains("\"intercom\"")))
        .collect();
    assert!(current.iter().all(|c| *c == current[0]), "{current:#?}");
    assert!(current[0].contains("\"position\""), "{}", current[0]);

    // Upgrade through the running admin's store with the CLI.
    let store = a.path().join("stores/peer");
    let (ok, text) = cli_deploy(&registry, &store);
    assert!(ok, "{text}");
    assert!(text.contains("Contract "), "{text}");
    for node in [&mut admin, &mut alice, &mut bob] {
        node.await_value("contract/current", |v| v.contains("\"registry\""));
    }
    // Not the admin: alice's store refuses.
    let (ok, text) = cli_deploy(&intercom, &b.path().join("stores/peer"));
    assert!(!ok && text.contains("Only the admin"), "{text}");

    // Through the stopped admin's store: appended there, broadcast when it starts again (on a
    // new port, without flags: it dials the peers it knew).
    let (code, stderr) = admin.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let (ok, text) = cli_deploy(&intercom, &store);
    assert!(ok && text.contains("stopped"), "{text}");
    let known = std::fs::read_to_string(store.join("known-peers.txt")).expect("known peers");
    assert!(
        known.contains(&alice_addr.replace("127.0.0.1:", "/tcp/")),
        "{known}"
    );
    let mut admin = NodeProc::start(a.path(), &[]);
    banner(&mut admin);
    for node in [&mut admin, &mut alice, &mut bob] {
        node.await_value("contract/current", |v| v.contains("\"intercom\""));
    }
    await_converged(&mut [&mut admin, &mut alice, &mut bob], 1);
    // A bad component never reaches the log.
    let junk = a.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm junk").expect("write");
    let (ok, text) = cli_deploy(&junk, &store);
    assert!(!ok && text.contains("refused"), "{text}");
    for node in [bob, alice, admin] {
        node.exit();
    }
}

#[test]
fn restarts_and_sigkill_lose_nothing() {
    let (a, b) = (tempdir(), tempdir());
    let mut admin = NodeProc::start(a.path(), &[]);
    let (msb, subnet, addr) = banner(&mut admin);
    let mut alice = NodeProc::start(b.path(), &joining(&msb, &subnet, &addr));
    banner(&mut alice);
    admin.send("/set_chat_status --enabled 1");
    admin.expect_containing("appended");
    admin.send(&format!("/add_writer --key {}", alice.writer_key()));
    admin.expect_containing("appended");
    alice.await_role("writer yes");

    // Alice stops; the admin writes meanwhile; alice restarts (no flags) and catches up.
    let (code, stderr) = alice.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    admin.send("/post --message \"while you were away\"");
    admin.expect_containing("appended");
    // No flags: the ids are persisted and the admin is a known peer.
    let mut alice = NodeProc::start(b.path(), &[]);
    banner(&mut alice);
    alice.await_value("msg/0", |v| v.contains("while you were away"));

    // Alice is killed while writing: what she committed survives, her log goes on, and
    // both converge on one root.
    for i in 0..20 {
        alice.send(&format!("/post --message \"burst {i}\""));
    }
    alice.expect_containing("appended");
    alice.kill9();
    let mut alice = NodeProc::start(b.path(), &[]);
    banner(&mut alice);
    alice.send("/post --message \"after the crash\"");
    alice.expect_containing("appended");
    let mut found = false;
    let deadline = Instant::now() + PATIENCE;
    while !found {
        admin.send("/get --key msgl --confirmed 0");
        let count: u64 = admin.expect_line("msgl:").parse().expect("a message count");
        for n in (1..count).rev() {
            admin.send(&format!("/get --key msg/{n} --confirmed 0"));
            if admin
                .expect_line(&format!("msg/{n}:"))
                .contains("after the crash")
            {
                found = true;
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the post after the crash never arrived"
        );
    }
    let (_, root) = await_converged(&mut [&mut admin, &mut alice], 1);
    assert_eq!(root.len(), 64);
    alice.exit();
    admin.exit();
}

#[test]
fn a_peer_with_another_protocol_version_is_refused_clearly() {
    let (a, b) = (tempdir(), tempdir());
    let mut admin = NodeProc::start(a.path(), &[]);
    let (msb, subnet, addr) = banner(&mut admin);
    let mut flags = joining(&msb, &subnet, &addr);
    flags.extend(["--protocol-version", "2"]);
    let mut other = NodeProc::start(b.path(), &flags);
    let deadline = Instant::now() + PATIENCE;
    let code = loop {
        if let Some(status) = other.child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the refused node kept waiting");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (_, stderr) = other.terminate_exited();
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("protocol version") && stderr.contains("trac/1"),
        "{stderr}"
    );
    let (code, admin_err) = admin.terminate();
    assert_eq!(code, Some(0));
    assert!(admin_err.contains("protocol version"), "{admin_err}");
}

#[test]
fn the_timer_feature_runs_on_the_admin_and_reaches_every_peer() {
    let (a, b) = (tempdir(), tempdir());
    let mut admin = NodeProc::start(a.path(), &["--timer", "1", "--timer-interval-ms", "200"]);
    let (msb, subnet, addr) = banner(&mut admin);
    // A joiner with the timer on is not the admin: it appends nothing.
    let mut flags = joining(&msb, &subnet, &addr);
    flags.extend(["--timer", "1", "--timer-interval-ms", "200"]);
    let mut alice = NodeProc::start(b.path(), &flags);
    banner(&mut alice);
    let first: u64 = alice
        .await_value("currentTime", |v| v != "null")
        .parse()
        .expect("milliseconds");
    let later: u64 = alice
        .await_value("currentTime", |v| v.parse::<u64>().is_ok_and(|t| t > first))
        .parse()
        .expect("milliseconds");
    assert!(later > first);
    alice.send("/stats");
    let subnet_line = alice.expect_line("Subnet ");
    assert!(subnet_line.contains("divergence no"), "{subnet_line}");
    alice.exit();
    admin.exit();
}
