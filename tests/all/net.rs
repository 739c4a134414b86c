//! The libp2p networking layer over real sockets on 127.0.0.1 (random ports, mDNS off):
//! dialing, ledger request/response and pushes between real ledgers, the peer id ↔ peer key
//! mapping, Kademlia discovery through a bootstrap peer, protocol-version refusal, frame limits
//! and shutdown.

use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::mpsc;
use trac_host::crypto::{Keypair, PublicKey};
use trac_host::ledger::{LedgerLimits, LogEntry, Message};
use trac_host::net::{
    Multiaddr, Net, NetConfig, NetError, NetEvent, NetHandle, PROTOCOL_VERSION, PeerId,
    ScInboundKind, peer_id_of, public_key_of,
};

use crate::ledger_support::{NETWORK, TestMachine, key, open_ledger, put};

/// Bound on every wait: generous against a loaded machine, far above what loopback needs.
const WAIT: Duration = Duration::from_secs(10);

/// A running node under test.
struct Node {
    net: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    addr: Multiaddr,
    key: Keypair,
}

fn config(seed: u8) -> NetConfig {
    let mut config = NetConfig::new(Keypair::from_seed(&[seed; 32]));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config
}

async fn start(config: NetConfig) -> Node {
    let key = config.keypair.clone();
    let (net, mut events) = Net::start(config).expect("start the network");
    let addr = next(&mut events, |e| match e {
        NetEvent::Listening(addr) => Some(addr),
        _ => None,
    })
    .await;
    Node {
        net,
        events,
        addr,
        key,
    }
}

/// The first event `pick` accepts (others are skipped); panics after [`WAIT`].
async fn next<T>(
    events: &mut mpsc::Receiver<NetEvent>,
    mut pick: impl FnMut(NetEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("network stopped");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
    .expect("timed out waiting for a network event")
}

async fn connected(events: &mut mpsc::Receiver<NetEvent>, peer: PeerId) -> PublicKey {
    next(events, |e| match e {
        NetEvent::PeerConnected(p, key, _) if p == peer => Some(key),
        _ => None,
    })
    .await
}

fn port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            trac_host::net::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp address")
}

#[tokio::test]
async fn peer_id_is_the_node_key() {
    for seed in [1u8, 2, 200] {
        let keypair = Keypair::from_seed(&[seed; 32]);
        let peer = peer_id_of(&keypair.public()).unwrap();
        assert_eq!(public_key_of(&peer), Some(keypair.public()));
    }
    // A random (identity-hashed, not an ed25519 key) peer id maps to nothing.
    assert_eq!(
        public_key_of(&PeerId::from_bytes(&[0, 2, 1, 2]).unwrap()),
        None
    );

    let node = start(config(7)).await;
    assert_eq!(node.net.peer_id(), peer_id_of(&node.key.public()).unwrap());
    assert_eq!(node.net.public_key(), node.key.public());
    assert_eq!(
        node.net.listen_addrs().await.unwrap(),
        vec![node.addr.clone()]
    );
    node.net.shutdown().await;
}

#[tokio::test]
async fn two_nodes_replicate_a_ledger_over_request_response_and_push() {
    let mut a = start(config(1)).await;
    let mut b = start(config(2)).await;

    // A dials B's listen address and learns B's id: B's node key.
    let b_id = a.net.dial(b.addr.clone()).await.expect("dial B");
    assert_eq!(b_id, peer_id_of(&b.key.public()).unwrap());
    assert_eq!(connected(&mut a.events, b_id).await, b.key.public());
    assert_eq!(
        connected(&mut b.events, a.net.peer_id()).await,
        a.key.public()
    );
    assert_eq!(
        a.net.connected_peers().await.unwrap(),
        vec![(b_id, b.key.public())]
    );

    // B holds a ledger with three entries of the admin; A's ledger has none.
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let admin = key(1);
    let machine = TestMachine::new(admin.public());
    let mut ledger_b = open_ledger(
        dir_b.path(),
        Some(&admin),
        machine.clone(),
        LedgerLimits::default(),
    );
    let mut ledger_a = open_ledger(dir_a.path(), None, machine, LedgerLimits::default());
    for i in 0..3 {
        ledger_b.append(vec![put(&format!("k{i}"), "v")]).unwrap();
    }

    // A asks B for the admin's log; B's node answers through its ledger.
    let want = vec![Message::WantEntries {
        writer: admin.public(),
        from: 0,
    }];
    let (answer, ()) = tokio::join!(a.net.send(b_id, NETWORK, want.clone()), async {
        let (network, messages, reply) = next(&mut b.events, |e| match e {
            NetEvent::Request {
                peer,
                network,
                messages,
                reply,
            } if peer == a.net.peer_id() => Some((network, messages, reply)),
            _ => None,
        })
        .await;
        assert_eq!((network, &messages), (NETWORK, &want));
        let mut out = Vec::new();
        for message in messages {
            out.extend(ledger_b.handle(message).unwrap());
        }
        reply.send(out).unwrap();
    });
    let answer = answer.expect("request answered");
    assert_eq!(answer.len(), 3);
    for message in answer {
        ledger_a.handle(message).unwrap();
    }
    assert_eq!(
        ledger_a.log_head(&admin.public()),
        ledger_b.log_head(&admin.public())
    );

    // B appends and pushes the new entry to every connected peer; A's ledger takes it.
    let entry = ledger_b.append(vec![put("k3", "v")]).unwrap();
    assert_eq!(
        b.net
            .push(NETWORK, vec![Message::Entry(entry.clone())])
            .await
            .unwrap(),
        1
    );
    let (network, messages) = next(&mut a.events, |e| match e {
        NetEvent::Pushed {
            peer,
            network,
            messages,
        } if peer == b_id => Some((network, messages)),
        _ => None,
    })
    .await;
    assert_eq!(
        (network, &messages),
        (NETWORK, &vec![Message::Entry(entry)])
    );
    for message in messages {
        ledger_a.handle(message).unwrap();
    }
    assert_eq!(ledger_a.log_head(&admin.public()).0, 4);

    // A node that drops the reply answers with a refusal; the caller hears it.
    let (answer, ()) = tokio::join!(a.net.send(b_id, NETWORK, want), async {
        next(&mut b.events, |e| match e {
            NetEvent::Request { reply, .. } => {
                drop(reply);
                Some(())
            }
            _ => None,
        })
        .await
    });
    match answer {
        Err(NetError::Remote { peer, reason }) => {
            assert_eq!(peer, b_id);
            assert!(reason.contains("did not answer"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Unknown peers are refused locally.
    let stranger = peer_id_of(&key(99).public()).unwrap();
    assert!(matches!(
        a.net.send(stranger, NETWORK, Vec::new()).await,
        Err(NetError::NotConnected(p)) if p == stranger
    ));

    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test]
async fn a_node_that_knows_only_b_discovers_a_through_kademlia() {
    let mut b = start(config(12)).await;
    let b_id = b.net.peer_id();
    // A bootstraps from B's multiaddr, C from `host:port` only.
    let mut a_config = config(11);
    a_config.bootstrap = vec![b.addr.to_string()];
    let mut a = start(a_config).await;
    connected(&mut a.events, b_id).await;
    connected(&mut b.events, a.net.peer_id()).await;

    let mut c_config = config(13);
    c_config.bootstrap = vec![format!("127.0.0.1:{}", port(&b.addr))];
    let mut c = start(c_config).await;
    connected(&mut c.events, b_id).await;
    // The DHT lookup of C's own id through B finds A, and C connects to it.
    let a_key = connected(&mut c.events, a.net.peer_id()).await;
    assert_eq!(a_key, a.key.public());
    connected(&mut a.events, c.net.peer_id()).await;

    // C's push now reaches A directly (and B).
    let pushed = vec![Message::WantCheckpoints { from: 5 }];
    assert_eq!(c.net.push(NETWORK, pushed.clone()).await.unwrap(), 2);
    let got = next(&mut a.events, |e| match e {
        NetEvent::Pushed { peer, messages, .. } if peer == c.net.peer_id() => Some(messages),
        _ => None,
    })
    .await;
    assert_eq!(got, pushed);

    for node in [&a, &b, &c] {
        node.net.shutdown().await;
    }
}

#[tokio::test]
async fn a_peer_on_another_protocol_version_is_refused_with_a_clear_message() {
    let mut a = start(config(21)).await;
    let mut future = config(22);
    future.protocol_version = PROTOCOL_VERSION + 1;
    let b = start(future).await;
    let b_id = b.net.peer_id();

    let err = a.net.dial(b.addr.clone()).await.unwrap_err();
    let NetError::Refused { peer, reason } = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(*peer, b_id);
    assert!(
        reason.contains("'trac/2'") && reason.contains("'trac/1'"),
        "the reason names both versions: {reason}"
    );
    let reason = next(&mut a.events, |e| match e {
        NetEvent::Refused { peer, reason } if peer == b_id => Some(reason),
        NetEvent::PeerConnected(..) => panic!("an incompatible peer must not connect"),
        _ => None,
    })
    .await;
    assert!(reason.contains("protocol version"), "{reason}");
    // B refuses A as well, with the same kind of message.
    let mut b = b;
    let reason = next(&mut b.events, |e| match e {
        NetEvent::Refused { peer, reason } if peer == a.net.peer_id() => Some(reason),
        NetEvent::PeerConnected(..) => panic!("an incompatible peer must not connect"),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("'trac/1'") && reason.contains("this node speaks 'trac/2'"),
        "{reason}"
    );
    assert!(a.net.connected_peers().await.unwrap().is_empty());
    assert_eq!(a.net.stats().await.unwrap().refused_peers, 1);
    a.net.shutdown().await;
    b.net.shutdown().await;
}

/// An entry of about `bytes` bytes.
fn big_entry(bytes: usize) -> Message {
    let writer = key(1);
    Message::Entry(LogEntry::sign(
        &writer,
        &NETWORK,
        0,
        trac_host::crypto::Hash32::ZERO,
        Vec::new(),
        vec![vec![7u8; bytes]],
    ))
}

#[tokio::test]
async fn oversized_frames_are_refused_without_breaking_the_connection() {
    let mut a_config = config(31);
    a_config.limits.max_frame_bytes = 256 << 10;
    let a = start(a_config).await;
    let mut b_config = config(32);
    b_config.limits.max_frame_bytes = 64 << 10;
    let mut b = start(b_config).await;
    let b_id = a.net.dial(b.addr.clone()).await.unwrap();
    connected(&mut b.events, a.net.peer_id()).await;

    // Above A's own limit: refused before anything is sent.
    let err = a
        .net
        .send(b_id, NETWORK, vec![big_entry(300 << 10)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::FrameTooLarge { max, .. } if max == 256 << 10),
        "{err:?}"
    );
    assert!(matches!(
        a.net.push(NETWORK, vec![big_entry(300 << 10)]).await,
        Err(NetError::FrameTooLarge { .. })
    ));

    // Within A's limit, above B's: B refuses it from the length prefix (its body is skipped,
    // never buffered) and answers with the reason.
    let err = a
        .net
        .send(b_id, NETWORK, vec![big_entry(100 << 10)])
        .await
        .unwrap_err();
    match &err {
        NetError::Remote { peer, reason } => {
            assert_eq!(*peer, b_id);
            assert!(
                reason.contains("exceeds the limit of 65536 bytes"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let reason = next(&mut b.events, |e| match e {
        NetEvent::Refused { reason, .. } => Some(reason),
        NetEvent::Request { .. } => panic!("an oversized frame must not reach the node"),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("exceeds the limit of 65536 bytes"),
        "{reason}"
    );
    assert_eq!(b.net.stats().await.unwrap().refused_frames, 1);

    // The connection still carries requests.
    let small = vec![Message::WantCheckpoints { from: 1 }];
    let (answer, ()) = tokio::join!(a.net.send(b_id, NETWORK, small.clone()), async {
        let reply = next(&mut b.events, |e| match e {
            NetEvent::Request { reply, .. } => Some(reply),
            _ => None,
        })
        .await;
        reply.send(small.clone()).unwrap();
    });
    assert_eq!(answer.unwrap(), small);
    assert_eq!(b.net.connected_peers().await.unwrap().len(), 1);
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test]
async fn a_slow_peer_has_bounded_queues() {
    let mut a_config = config(61);
    a_config.limits.max_in_flight = 1;
    a_config.limits.max_queued = 1;
    let a = start(a_config).await;
    let mut b = start(config(62)).await;
    let b_id = a.net.dial(b.addr.clone()).await.unwrap();
    connected(&mut b.events, a.net.peer_id()).await;
    let ask = |from| vec![Message::WantCheckpoints { from }];

    // Requests: B's node holds the first answer; one more waits in A's queue, the next is
    // refused at once with a clear error.
    let first = tokio::spawn({
        let net = a.net.clone();
        async move { net.send(b_id, NETWORK, ask(1)).await }
    });
    let held = next(&mut b.events, |e| match e {
        NetEvent::Request { reply, .. } => Some(reply),
        _ => None,
    })
    .await;
    let second = a.net.send(b_id, NETWORK, ask(2));
    let third = a.net.send(b_id, NETWORK, ask(3));
    tokio::pin!(second, third);
    let refused = tokio::select! {
        biased;
        _ = &mut second => panic!("the second request must wait for the first"),
        refused = &mut third => refused,
    };
    match refused {
        Err(NetError::QueueFull { peer, queued, .. }) => assert_eq!((peer, queued), (b_id, 1)),
        other => panic!("expected a full queue, got {other:?}"),
    }
    held.send(ask(10)).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), ask(10));
    let (second, ()) = tokio::join!(second, async {
        let reply = next(&mut b.events, |e| match e {
            NetEvent::Request { reply, .. } => Some(reply),
            _ => None,
        })
        .await;
        reply.send(ask(20)).unwrap();
    });
    assert_eq!(second.unwrap(), ask(20));

    // Pushes: a burst far above the window and queue loses its oldest queued pushes, never
    // the newest; every push is either delivered or counted as dropped.
    let burst = 50;
    // Spawned without yielding in between, the pushes all reach A's swarm task at once.
    let pushes: Vec<_> = (0..burst)
        .map(|i| {
            let net = a.net.clone();
            tokio::spawn(async move { net.push(NETWORK, ask(i)).await })
        })
        .collect();
    for pushed in pushes {
        assert_eq!(pushed.await.unwrap().unwrap(), 1);
    }
    let mut delivered = 0;
    next(&mut b.events, |e| match e {
        NetEvent::Pushed { messages, .. } => {
            delivered += 1;
            (messages == ask(burst - 1)).then_some(())
        }
        _ => None,
    })
    .await;
    let dropped = a.net.stats().await.unwrap().dropped_pushes;
    assert!(dropped > 0, "the burst must overflow the queue");
    assert_eq!(delivered + dropped, burst);
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_the_handle() {
    let a = start(config(41)).await;
    let mut b = start(config(42)).await;
    let a_id = a.net.peer_id();
    b.net.dial(a.addr.clone()).await.unwrap();
    connected(&mut b.events, a_id).await;

    let clone = a.net.clone();
    a.net.shutdown().await;
    next(&mut b.events, |e| match e {
        NetEvent::PeerDisconnected(peer) if peer == a_id => Some(()),
        _ => None,
    })
    .await;
    assert!(b.net.connected_peers().await.unwrap().is_empty());
    assert!(matches!(
        clone.connected_peers().await,
        Err(NetError::Stopped)
    ));
    assert!(matches!(
        clone.push(NETWORK, Vec::new()).await,
        Err(NetError::Stopped)
    ));
    // A second shutdown is harmless.
    clone.shutdown().await;

    // Dialing a closed port fails with a clear error.
    let err = b.net.dial(a.addr.clone()).await.unwrap_err();
    assert!(matches!(err, NetError::Dial { .. }), "{err:?}");
    b.net.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_fails_fast() {
    let mut bad = config(51);
    bad.bootstrap = vec!["seed.example".into()];
    let err = Net::start(bad).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid address 'seed.example': expected host:port or a multiaddr"
    );
    // Outside a runtime.
    let err = std::thread::spawn(|| Net::start(config(52)).map(|_| ()))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, NetError::NoRuntime));
}

#[tokio::test]
async fn sidechannel_frames_flow_in_order_and_oversized_ones_are_refused() {
    let (inbound_tx, mut inbound) = mpsc::channel(4096);
    let mut receiver_config = config(41);
    receiver_config.sidechannel = Some(inbound_tx);
    receiver_config.limits.max_sidechannel_frame_bytes = 4096;
    let receiver = start(receiver_config).await;
    let mut sender = start(config(42)).await;
    let peer = sender.net.dial(receiver.addr.clone()).await.expect("dial");
    connected(&mut sender.events, peer).await;

    // Many frames, pipelined, arrive complete and in order with the sender's key.
    for i in 0..500u32 {
        sender
            .net
            .sidechannel_send(peer, i.to_be_bytes().to_vec())
            .await
            .expect("queued");
    }
    // The connection comes first, then the frames in order.
    let first = tokio::time::timeout(WAIT, inbound.recv())
        .await
        .expect("an event in time")
        .expect("open");
    assert_eq!(first.kind, ScInboundKind::Connected);
    for i in 0..500u32 {
        let got = tokio::time::timeout(WAIT, inbound.recv())
            .await
            .expect("a frame in time")
            .expect("open");
        assert_eq!(got.kind, ScInboundKind::Frame);
        assert_eq!(got.key, sender.key.public());
        assert_eq!(&got.frame[..], &i.to_be_bytes());
    }
    // Above the sender's own limit: refused before sending.
    assert!(matches!(
        sender.net.sidechannel_send(peer, vec![0; 2 << 20]).await,
        Err(NetError::FrameTooLarge { .. })
    ));
    // Above the receiver's limit: refused there, never delivered.
    sender
        .net
        .sidechannel_send(peer, vec![1; 8192])
        .await
        .expect("queued");
    sender
        .net
        .sidechannel_send(peer, vec![2; 16])
        .await
        .expect("queued");
    let next_frame = tokio::time::timeout(WAIT, inbound.recv())
        .await
        .expect("a frame in time")
        .expect("open");
    assert_eq!(&next_frame.frame[..], &[2; 16]);

    // A node without sidechannels does not take the protocol; its ledger still works.
    sender.net.disconnect(peer).await.expect("disconnect");
    sender.net.shutdown().await;
    receiver.net.shutdown().await;
}
