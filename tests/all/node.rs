//! `trac run` as real processes of `trac-under-test` on 127.0.0.1: an admin node creates a
//! dev MSB network (with a faucet) and a subnet, a second node joins both through the admin
//! (fetching the genesis from it) and replicates them, SIGTERM stops both cleanly, and
//! restarts reopen the same subnet and MSB network.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::node_support::{NodeProc, PATIENCE, banner};
use crate::support::tempdir;

#[test]
fn a_joiner_replicates_the_admins_subnet_and_msb_and_nodes_stop_and_restart_cleanly() {
    let a = tempdir();
    let b = tempdir();
    // A faucet: the admin grants the joiner TNK when it connects, so MSB has a checkpoint.
    let mut admin = NodeProc::start(a.path(), &["--msb-faucet", "10"]);
    let (msb, subnet, addr) = banner(&mut admin);
    assert_eq!(msb.len(), 64, "{msb}");
    assert_eq!(subnet.len(), 64, "{subnet}");
    assert!(a.path().join("stores/peer/subnet-genesis.bin").is_file());
    assert!(a.path().join("stores/peer-msb/msb-genesis.bin").is_file());

    // The creator's first entry (admin, MSB trust, Intercom) is final at once.
    let deadline = Instant::now() + PATIENCE;
    let admin_stats = loop {
        let stats = admin.stats();
        if stats.1.0 >= 1 {
            break stats;
        }
        assert!(Instant::now() < deadline, "the subnet never checkpointed");
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut joiner = NodeProc::start(
        b.path(),
        &[
            "--subnet-bootstrap",
            &subnet,
            "--msb-bootstrap",
            &msb,
            "--dht-bootstrap",
            &addr,
        ],
    );
    let (jmsb, jsubnet, _) = banner(&mut joiner);
    assert_eq!((&jmsb, &jsubnet), (&msb, &subnet));
    // The joiner reaches the admin's final heights and roots: the subnet's, and the MSB's
    // once the faucet grant is final.
    let deadline = Instant::now() + PATIENCE;
    let admin_stats = loop {
        let theirs = admin.stats();
        let mine = joiner.stats();
        if theirs.0.0 >= 1 && mine.0 == theirs.0 && mine.1 == theirs.1 && mine.2 >= 1 {
            break theirs;
        }
        assert!(
            Instant::now() < deadline,
            "the joiner did not catch up: {mine:?} vs {theirs:?} (first: {admin_stats:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The joiner sees the contract the admin deployed.
    joiner.send("/get --key contract/current");
    let current = joiner.expect_line("contract/current:");
    assert!(current.contains("\"intercom\""), "{current}");
    assert!(b.path().join("stores/peer/subnet-genesis.bin").is_file());

    let (code, stderr) = joiner.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = admin.terminate();
    assert_eq!(code, Some(0), "{stderr}");

    // The joiner restarts alone, without flags: the persisted ids and genesis files reopen
    // both networks with what it had replicated. Without the genesis files too: the stores'
    // state records both (and the files are written again).
    let subnet_file = b.path().join("stores/peer/subnet-genesis.bin");
    let msb_file = b.path().join("stores/peer-msb/msb-genesis.bin");
    std::fs::remove_file(&subnet_file).expect("remove");
    std::fs::remove_file(&msb_file).expect("remove");
    let mut joiner = NodeProc::start(b.path(), &[]);
    let (jmsb, jsubnet, _) = banner(&mut joiner);
    assert_eq!((&jmsb, &jsubnet), (&msb, &subnet));
    let stats = joiner.stats();
    assert_eq!(
        (stats.0, stats.1),
        (admin_stats.0.clone(), admin_stats.1.clone())
    );
    let (code, stderr) = joiner.terminate();
    assert_eq!(code, Some(0), "{stderr}");

    // A restart reopens the same networks, with the state they had.
    let mut again = NodeProc::start(a.path(), &[]);
    let (msb2, subnet2, _) = banner(&mut again);
    assert_eq!((msb2, subnet2), (msb, subnet));
    let stats = again.stats();
    assert_eq!((stats.0, stats.1), (admin_stats.0, admin_stats.1));
    again.send("/exit");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = again.child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "/exit did not stop the node");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_admins_terminal_runs_chat_app_and_tx_commands() {
    let a = tempdir();
    let mut admin = NodeProc::start(a.path(), &[]);
    banner(&mut admin);
    // App commands run on the confirmed state: wait for the creator's first checkpoint.
    let deadline = Instant::now() + PATIENCE;
    while admin.stats().1.0 < 1 {
        assert!(Instant::now() < deadline, "the subnet never checkpointed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // /help lists the built-ins and Intercom's own commands; those run on the contract.
    admin.send("/help");
    admin.expect_containing("/stats");
    admin.expect_containing("/print");
    admin.send("/print --text hello");
    admin.expect_line("hello");

    // Chat: the admin turns chat on and posts.
    admin.send("/set_chat_status --enabled 1");
    admin.expect_containing("appended");
    admin.send("/post --message hi");
    admin.expect_containing("appended");
    let msg = admin.await_value("msg/0", |v| v != "null");
    assert!(msg.contains("\"hi\""), "{msg}");

    // A bad command: the failure and the usage line.
    admin.send("/post");
    admin.expect_line("Command failed:");
    admin.expect_line("Usage: /post");
    admin.send("/no_such_command");
    admin.expect_line("Command failed:");

    // Roles and keys.
    admin.send("/stats");
    let me = admin.expect_line("Peer ");
    assert!(
        me.contains("writer yes") && me.contains("admin yes"),
        "{me}"
    );

    // A transaction: the subnet is deployed on MSB (this node is the dev MSB's validator),
    // then the command is settled and recorded.
    admin.send("/deploy_subnet");
    admin.expect_line("MSB TX broadcasted:");
    admin.send("/tx --command something --sim 1");
    admin.expect_line("Simulation succeeded");
    admin.send("/tx --command something");
    let tx = admin.expect_line("MSB TX broadcasted:");
    assert_eq!(tx.len(), 64, "{tx}");
    admin.await_value("txl", |v| v == "1");

    // Only one admin is ever added; the admin deploys another contract.
    admin.send(&format!("/add_admin --address {}", "ab".repeat(32)));
    admin.expect_line("Command failed:");
    let registry =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/artifacts/registry.wasm");
    admin.send(&format!("/deploy_contract --file {}", registry.display()));
    admin.expect_line("Contract ");
    admin.await_value("contract/current", |v| v.contains("\"registry\""));
    admin.exit();
}

#[test]
fn the_admin_makes_a_joiner_writable_with_add_writer() {
    let a = tempdir();
    let b = tempdir();
    let mut admin = NodeProc::start(a.path(), &[]);
    let (msb, subnet, addr) = banner(&mut admin);
    let mut joiner = NodeProc::start(
        b.path(),
        &[
            "--subnet-bootstrap",
            &subnet,
            "--msb-bootstrap",
            &msb,
            "--dht-bootstrap",
            &addr,
        ],
    );
    banner(&mut joiner);
    let key = joiner
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("Peer writer key (hex):"))
        .expect("the banner names the writer key")
        .trim()
        .to_string();
    joiner.send("/stats");
    let me = joiner.expect_line("Peer ");
    assert!(me.contains("writer no") && me.contains("admin no"), "{me}");
    // A joiner is no admin.
    joiner.send("/set_chat_status --enabled 1");
    let refused = joiner.expect_line("Command failed:");
    assert!(refused.contains("Only the admin"), "{refused}");

    admin.send(&format!("/add_writer --key {key}"));
    admin.expect_containing("appended");
    let deadline = Instant::now() + PATIENCE;
    loop {
        joiner.send("/stats");
        let me = joiner.expect_line("Peer ");
        if me.contains("writer yes") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joiner never became writable: {me}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    joiner.exit();
    admin.exit();
}
