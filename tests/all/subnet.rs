//! The subnet state machine: system ops, chat, contract deployment and transactions; the
//! conformance cases of the reference (trac-peer.md §10) translated to signed ops, every
//! refusal branch, poison pills, the contract lifecycle, and determinism across nodes.

use serde_json::{Value, json};
use trac_host::bundled::{INTERCOM, REGISTRY};
use trac_host::crypto::{Hash32, Keypair, PublicKey, hash};
use trac_host::store::StoreRead;
use trac_host::subnet::ops::{
    CHUNK_BYTES, Envelope, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, MAX_FEATURE_KEY_BYTES,
    MAX_FEATURE_NAME_BYTES, MAX_NICK_BYTES, OP_VERSION, PARAM_CAPS, deploy_ops,
};
use trac_host::subnet::{
    Action, Params, SettlementScheme, SignedOp, SubnetMachine, SubnetOp, encode_op, keys,
};

use crate::ledger_support::{NetConfig, Sim};
use crate::subnet_support::{
    MSB_NETWORK, PROBE, Solo, attest, creator, guard_key, key, machine, msb_indexer, msgpack,
    open_store, padded, runtime, settled_tx, signed_for, subnet_sim, tx_op, wat_app,
};

/// A key as text.
fn text(key: Vec<u8>) -> String {
    String::from_utf8(key).expect("utf-8 key")
}

/// The hex of a key pair's public key.
fn hex(keypair: &Keypair) -> String {
    keypair.public().to_hex()
}

/// A chat post without attachments.
fn post(text: &str) -> Action {
    Action::PostMessage {
        text: text.into(),
        attachments: vec![],
        reply_to: None,
    }
}

/// A chat post replying to `to`.
fn reply(text: &str, to: u64) -> Action {
    Action::PostMessage {
        text: text.into(),
        attachments: vec![],
        reply_to: Some(to),
    }
}

/// A subnet with the creator as admin (no contract).
fn with_admin() -> Solo {
    let mut solo = Solo::new();
    solo.apply(vec![Solo::add_admin_op()]);
    solo
}

/// A subnet with the creator as admin and chat on (no contract).
fn with_chat() -> Solo {
    let mut solo = with_admin();
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply(vec![on]);
    solo
}

/// A subnet created with Intercom, chat on.
fn intercom_with_chat() -> Solo {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply(vec![on]);
    solo
}

/// A tx hash.
fn txh(n: u8) -> Hash32 {
    Hash32([n; 32])
}

// ---------------------------------------------------------------------------------------------
// 1. Conformance: the reference's operations, as signed ops
// ---------------------------------------------------------------------------------------------

#[test]
fn creation_deploys_the_app_and_a_tx_applies() {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let admin = key(1).public().to_hex();
    assert_eq!(solo.json("admin"), json!(admin));
    let current = solo.json("contract/current");
    assert_eq!(current["name"], json!("intercom"), "{current}");
    let alice = key(2);
    let op = solo.tx(&alice.public(), Hash32([1; 32]), "storeSomething", &[0xc0]);
    solo.apply(vec![op]);
    assert_eq!(solo.json("txl"), json!(1));
    let record = solo.json("txi/0");
    assert_eq!(record["err"], json!(null), "{record}");
    assert_eq!(solo.json("something"), json!("there is something"));
    assert_eq!(
        solo.json(&format!("tx/{}", Hash32([1; 32]).to_hex())),
        json!(0)
    );

    // Chat: on, then a message.
    let on = solo.signed(&key(1), Action::SetChatStatus { enabled: true });
    let post = solo.signed(
        &alice,
        Action::PostMessage {
            text: "hello".into(),
            attachments: vec![],
            reply_to: None,
        },
    );
    solo.apply(vec![on, post]);
    assert_eq!(solo.json("msgl"), json!(1));
    assert_eq!(solo.json("msg/0")["msg"], json!("hello"));
    assert_eq!(solo.json("chat_last")["msg"], json!("hello"));
}

#[test]
fn genesis_records_the_subnet_and_its_creator() {
    let mut solo = Solo::new();
    let creator_hex = hex(&creator());
    assert_eq!(solo.json("admin"), Value::Null, "no admin before AddAdmin");
    assert_eq!(
        solo.json(&text(keys::writer(&creator().public()))),
        json!(true)
    );
    assert_eq!(solo.json("sys/indexers"), json!([creator_hex]));
    let subnet = solo.json("sys/subnet");
    assert_eq!(subnet["id"], json!(solo.id().to_hex()));
    assert_eq!(subnet["creator"], json!(creator_hex));
    assert_eq!(subnet["channel"], json!("test-subnet"));
    let params: Params = rmp_serde::from_slice(&solo.get("params").expect("params")).unwrap();
    assert_eq!(params, Params::default());
    let recorded = solo
        .ledger
        .read(true, |s| trac_host::subnet::SubnetMachine::genesis_in(s))
        .unwrap()
        .unwrap()
        .expect("genesis recorded");
    assert_eq!(recorded, crate::subnet_support::genesis());
}

#[test]
fn add_admin_from_the_creator_sets_the_admin_once() {
    let mut solo = Solo::new();
    solo.apply(vec![Solo::add_admin_op()]);
    assert_eq!(solo.json("admin"), json!(hex(&creator())));
    // One-shot: another AddAdmin from the creator's log is refused.
    let again = encode_op(&SubnetOp::AddAdmin {
        key: key(3).public(),
    });
    solo.assert_refused(again, "second AddAdmin");
    assert_eq!(solo.json("admin"), json!(hex(&creator())));
}

#[test]
fn add_admin_from_another_writer_is_refused() {
    let mut solo = with_admin();
    let writer = key(2);
    let add = solo.admin(Action::AddWriter {
        key: writer.public(),
    });
    solo.apply(vec![add]);
    let mine = encode_op(&SubnetOp::AddAdmin {
        key: writer.public(),
    });
    solo.assert_refused_by(Some(&writer), vec![mine], "AddAdmin from a non-creator");
    assert_eq!(solo.json("admin"), json!(hex(&creator())));
}

#[test]
fn keys_that_are_not_valid_public_keys_are_refused() {
    // The identity point (small order) and bytes that decode to no point.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let invalid = [PublicKey(identity), PublicKey([0xff; 32])];
    let mut solo = Solo::new();
    for key in invalid {
        solo.assert_refused(
            encode_op(&SubnetOp::AddAdmin { key }),
            "AddAdmin of an invalid key",
        );
    }
    solo.apply(vec![Solo::add_admin_op()]);
    for key in invalid {
        let ops = vec![
            solo.admin(Action::UpdateAdmin { admin: Some(key) }),
            solo.admin(Action::AddWriter { key }),
            solo.admin(Action::AddIndexer { key }),
        ];
        solo.assert_refused_by(None, ops, "invalid key as admin, writer or indexer");
    }
    assert_eq!(solo.json("admin"), json!(hex(&creator())));
    assert_eq!(solo.json("sys/indexers"), json!([hex(&creator())]));
}

#[test]
fn update_admin_hands_over_then_renounces_for_good() {
    let mut solo = with_admin();
    let next = key(2);
    let handover = solo.admin(Action::UpdateAdmin {
        admin: Some(next.public()),
    });
    let guard = guard_key(&solo.id(), &handover);
    let expires = solo.expiry();
    solo.apply(vec![handover]);
    assert_eq!(solo.json("admin"), json!(hex(&next)));
    assert_eq!(solo.json(&guard), json!(expires), "replay guard = expiry");

    // The former admin has no authority left; the new one has.
    let by_old = solo.admin(Action::SetChatStatus { enabled: true });
    solo.assert_refused(by_old, "old admin");
    let by_new = solo.signed(&next, Action::SetChatStatus { enabled: true });
    solo.apply(vec![by_new]);
    assert_eq!(solo.json("chat_status"), json!("on"));

    // Renouncing stores nil: no admin action and no AddAdmin works afterwards.
    let renounce = solo.signed(&next, Action::UpdateAdmin { admin: None });
    solo.apply(vec![renounce]);
    assert_eq!(solo.get("admin"), Some(vec![0xc0]));
    let off = solo.signed(&next, Action::SetChatStatus { enabled: false });
    solo.assert_refused(off, "admin action after renouncing");
    solo.assert_refused(Solo::add_admin_op(), "AddAdmin after renouncing");
    // Chat keeps working without an admin.
    let hello = solo.signed(&key(5), post("still here"));
    solo.apply(vec![hello]);
    assert_eq!(solo.json("msgl"), json!(1));
}

#[test]
fn writers_and_indexers_are_added_and_removed() {
    let mut solo = with_admin();
    let (writer, indexer, user) = (key(2), key(3), key(5));
    let writer_key = text(keys::writer(&writer.public()));
    let indexer_key = text(keys::writer(&indexer.public()));
    solo.cosigners.push(indexer.clone());

    let add = solo.admin(Action::AddWriter {
        key: writer.public(),
    });
    let guard = guard_key(&solo.id(), &add);
    solo.apply(vec![add]);
    assert_eq!(solo.json(&writer_key), json!(true));
    assert_ne!(solo.json(&guard), Value::Null, "sh/<hash> written");
    assert_eq!(solo.json("sys/indexers"), json!([hex(&creator())]));

    let add = solo.admin(Action::AddIndexer {
        key: indexer.public(),
    });
    solo.apply(vec![add]);
    assert_eq!(solo.json(&indexer_key), json!(true));
    assert_eq!(
        solo.json("sys/indexers"),
        json!([hex(&creator()), hex(&indexer)])
    );

    // Adding twice is refused.
    let again = solo.admin(Action::AddWriter {
        key: writer.public(),
    });
    solo.assert_refused(again, "writer added twice");
    let again = solo.admin(Action::AddIndexer {
        key: indexer.public(),
    });
    solo.assert_refused(again, "indexer added twice");

    // The writer relays ops; authority comes from their signatures.
    let relayed = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply_as(&writer, vec![relayed]);
    assert_eq!(solo.json("chat_status"), json!("on"));
    let forged = solo.signed(&writer, Action::SetChatStatus { enabled: false });
    solo.assert_refused_by(Some(&writer), vec![forged], "writer signs an admin action");

    // Removed: banned, and its later entries are skipped.
    let remove = solo.admin(Action::RemoveWriter {
        key: writer.public(),
    });
    solo.apply(vec![remove]);
    assert_eq!(solo.json(&writer_key), Value::Null);
    assert_eq!(
        solo.json(&text(keys::banned(&writer.public()))),
        json!(true)
    );
    let skipped = solo.status().skipped;
    let message = solo.signed(&user, post("via a removed writer"));
    solo.apply_as(&writer, vec![message.clone()]);
    assert_eq!(solo.status().skipped, skipped + 1);
    assert_eq!(solo.json("msgl"), Value::Null);
    // The same signed message relayed by a writer applies.
    solo.apply(vec![message]);
    assert_eq!(solo.json("msgl"), json!(1));

    // Demoting an indexer keeps it a writer; the last indexer stays.
    let demote = solo.admin(Action::RemoveIndexer {
        key: indexer.public(),
    });
    solo.apply(vec![demote]);
    assert_eq!(solo.json("sys/indexers"), json!([hex(&creator())]));
    assert_eq!(solo.json(&indexer_key), json!(true));
    let last = solo.admin(Action::RemoveIndexer {
        key: creator().public(),
    });
    solo.assert_refused(last, "remove the last indexer");
    let last = solo.admin(Action::RemoveWriter {
        key: creator().public(),
    });
    solo.assert_refused(last, "remove the last indexer as a writer");
    let not_indexer = solo.admin(Action::SetSequencer {
        key: writer.public(),
    });
    solo.assert_refused(not_indexer, "sequencer that is not an indexer");
    let not_writer = solo.admin(Action::RemoveWriter {
        key: key(9).public(),
    });
    solo.assert_refused(not_writer, "remove a key that is not a writer");

    // Removing an indexer removes it from the set too.
    let promote = solo.admin(Action::AddIndexer {
        key: indexer.public(),
    });
    solo.apply(vec![promote]);
    let remove = solo.admin(Action::RemoveWriter {
        key: indexer.public(),
    });
    solo.apply(vec![remove]);
    assert_eq!(solo.json("sys/indexers"), json!([hex(&creator())]));
    assert_eq!(solo.json(&indexer_key), Value::Null);
}

#[test]
fn auto_add_lets_keys_join_until_they_are_removed() {
    let mut solo = with_admin();
    let joiner = key(6);
    let writer_key = text(keys::writer(&joiner.public()));
    let join = solo.signed(&joiner, Action::AutoAddWriter);
    solo.assert_refused(join, "auto-add while off");

    let on = solo.admin(Action::SetAutoAddWriters { enabled: true });
    solo.apply(vec![on]);
    assert_eq!(solo.json("auto_add_writers"), json!("on"));
    // Signed by the joining key, relayed by any writer.
    let join = solo.signed(&joiner, Action::AutoAddWriter);
    solo.apply(vec![join]);
    assert_eq!(solo.json(&writer_key), json!(true));
    // The new writer's own entries apply.
    let relayed = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply_as(&joiner, vec![relayed]);
    assert_eq!(solo.json("chat_status"), json!("on"));
    let again = solo.signed(&joiner, Action::AutoAddWriter);
    solo.assert_refused(again, "auto-add of a writer");

    // Removed keys are banned from auto-add, and only the admin lets them back.
    let remove = solo.admin(Action::RemoveWriter {
        key: joiner.public(),
    });
    solo.apply(vec![remove]);
    let back = solo.signed(&joiner, Action::AutoAddWriter);
    solo.assert_refused(back, "banned key re-adds itself");
    assert_eq!(solo.json(&writer_key), Value::Null);
    let readd = solo.admin(Action::AddWriter {
        key: joiner.public(),
    });
    solo.apply(vec![readd]);
    assert_eq!(solo.json(&writer_key), json!(true));
    assert_eq!(
        solo.json(&text(keys::banned(&joiner.public()))),
        Value::Null
    );

    let off = solo.admin(Action::SetAutoAddWriters { enabled: false });
    solo.apply(vec![off]);
    assert_eq!(solo.json("auto_add_writers"), json!("off"));
    let late = solo.signed(&key(7), Action::AutoAddWriter);
    solo.assert_refused(late, "auto-add after it is turned off");
}

#[test]
fn chat_status_transactions_switch_and_whitelist() {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let user = key(5);
    let early = solo.signed(&user, post("too early"));
    solo.assert_refused(early, "post while chat is off");
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply(vec![on]);
    assert_eq!(solo.json("chat_status"), json!("on"));

    // Transactions disabled: recorded with an error, the contract not called.
    let off = solo.admin(Action::EnableTransactions { enabled: false });
    solo.apply(vec![off]);
    assert_eq!(solo.json("txen"), json!(false));
    let tx = solo.tx(&user.public(), txh(1), "storeSomething", &[0xc0]);
    solo.apply(vec![tx]);
    assert_eq!(solo.json("txl"), json!(1));
    let record = solo.json("txi/0");
    let err = record["err"].as_str().expect("an error");
    assert!(err.contains("transactions are disabled"), "{record}");
    assert_eq!(solo.json("something"), Value::Null);
    assert_eq!(solo.json(&format!("tx/{}", txh(1).to_hex())), json!(0));
    let enable = solo.admin(Action::EnableTransactions { enabled: true });
    solo.apply(vec![enable]);
    assert_eq!(solo.json("txen"), json!(true));
    let tx = solo.tx(&user.public(), txh(2), "storeSomething", &[0xc0]);
    solo.apply(vec![tx]);
    assert_eq!(solo.json("txi/1")["err"], Value::Null);
    assert_eq!(solo.json("something"), json!("there is something"));

    // Whitelist: enforced for users, never for the admin.
    let enforce = solo.admin(Action::EnableWhitelist { enabled: true });
    solo.apply(vec![enforce]);
    assert_eq!(solo.json("wlst"), json!(true));
    let blocked = solo.signed(&user, post("not listed"));
    solo.assert_refused(blocked, "post by a user off the whitelist");
    let by_admin = solo.admin(post("admin is exempt"));
    solo.apply(vec![by_admin]);
    assert_eq!(solo.json("msgl"), json!(1));
    let list = solo.admin(Action::SetWhitelistStatus {
        user: user.public(),
        status: true,
    });
    solo.apply(vec![list]);
    assert_eq!(
        solo.json(&text(keys::whitelist(&user.public()))),
        json!(true)
    );
    let listed = solo.signed(&user, post("listed"));
    solo.apply(vec![listed]);
    assert_eq!(solo.json("msgl"), json!(2));
    let unlist = solo.admin(Action::SetWhitelistStatus {
        user: user.public(),
        status: false,
    });
    solo.apply(vec![unlist]);
    let blocked = solo.signed(&user, post("unlisted again"));
    solo.assert_refused(blocked, "post after unlisting");
    let by_user = solo.signed(
        &user,
        Action::SetWhitelistStatus {
            user: user.public(),
            status: true,
        },
    );
    solo.assert_refused(by_user, "user whitelists itself");
    let relax = solo.admin(Action::EnableWhitelist { enabled: false });
    solo.apply(vec![relax]);
    let free = solo.signed(&user, post("whitelist off"));
    solo.apply(vec![free]);
    assert_eq!(solo.json("msgl"), json!(3));

    // Chat off again: posts refused.
    let off = solo.admin(Action::SetChatStatus { enabled: false });
    solo.apply(vec![off]);
    assert_eq!(solo.json("chat_status"), json!("off"));
    let late = solo.signed(&user, post("chat is off"));
    solo.assert_refused(late, "post after chat is turned off");
}

#[test]
fn moderators_mute_regular_users_only() {
    let mut solo = with_chat();
    let (moderator, other_mod, user, bystander) = (key(3), key(4), key(5), key(6));
    for m in [&moderator, &other_mod] {
        let op = solo.admin(Action::SetMod {
            user: m.public(),
            enabled: true,
        });
        solo.apply(vec![op]);
    }
    assert_eq!(
        solo.json(&text(keys::moderator(&moderator.public()))),
        json!(true)
    );
    let muted_key = text(keys::muted(&user.public()));

    // The admin mutes; a muted user cannot post; unmuted, it can.
    let mute = solo.admin(Action::MuteStatus {
        user: user.public(),
        muted: true,
    });
    solo.apply(vec![mute]);
    assert_eq!(solo.json(&muted_key), json!(true));
    let silenced = solo.signed(&user, post("muted"));
    solo.assert_refused(silenced, "post by a muted user");
    let unmute = solo.admin(Action::MuteStatus {
        user: user.public(),
        muted: false,
    });
    solo.apply(vec![unmute]);
    assert_eq!(solo.json(&muted_key), json!(false));
    let free = solo.signed(&user, post("free"));
    solo.apply(vec![free]);
    assert_eq!(solo.json("msgl"), json!(1));

    // A moderator mutes a regular user, not the admin or another moderator.
    let by_mod = solo.signed(
        &moderator,
        Action::MuteStatus {
            user: user.public(),
            muted: true,
        },
    );
    solo.apply(vec![by_mod]);
    assert_eq!(solo.json(&muted_key), json!(true));
    for (target, what) in [
        (creator().public(), "a mod mutes the admin"),
        (other_mod.public(), "a mod mutes another mod"),
    ] {
        let op = solo.signed(
            &moderator,
            Action::MuteStatus {
                user: target,
                muted: true,
            },
        );
        solo.assert_refused(op, what);
    }
    let by_user = solo.signed(
        &bystander,
        Action::MuteStatus {
            user: user.public(),
            muted: false,
        },
    );
    solo.assert_refused(by_user, "a user unmutes another");

    // The admin is never muted in effect.
    let self_mute = solo.admin(Action::MuteStatus {
        user: creator().public(),
        muted: true,
    });
    solo.apply(vec![self_mute]);
    let by_admin = solo.admin(post("admin speaks"));
    solo.apply(vec![by_admin]);
    assert_eq!(solo.json("msgl"), json!(2));

    // A demoted moderator has no power left.
    let demote = solo.admin(Action::SetMod {
        user: moderator.public(),
        enabled: false,
    });
    solo.apply(vec![demote]);
    assert_eq!(
        solo.json(&text(keys::moderator(&moderator.public()))),
        json!(false)
    );
    let op = solo.signed(
        &moderator,
        Action::MuteStatus {
            user: bystander.public(),
            muted: true,
        },
    );
    solo.assert_refused(op, "a demoted mod mutes");
    let by_user = solo.signed(
        &user,
        Action::SetMod {
            user: user.public(),
            enabled: true,
        },
    );
    solo.assert_refused(by_user, "a user makes itself a mod");
}

#[test]
fn nicks_are_unique_and_old_nicks_are_freed() {
    let mut solo = with_admin();
    let (moderator, other_mod, alice, bob) = (key(3), key(4), key(5), key(6));
    let early = solo.signed(
        &alice,
        Action::SetNick {
            user: alice.public(),
            nick: "alice".into(),
        },
    );
    solo.assert_refused(early, "nick while chat is off");
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply(vec![on]);
    for m in [&moderator, &other_mod] {
        let op = solo.admin(Action::SetMod {
            user: m.public(),
            enabled: true,
        });
        solo.apply(vec![op]);
    }
    let nick = |solo: &Solo, signer: &Keypair, user: &Keypair, nick: &str| {
        solo.signed(
            signer,
            Action::SetNick {
                user: user.public(),
                nick: nick.into(),
            },
        )
    };

    let op = nick(&solo, &alice, &alice, "alice");
    solo.apply(vec![op]);
    assert_eq!(
        solo.json(&text(keys::nick(&alice.public()))),
        json!("alice")
    );
    assert_eq!(solo.json("kcin/alice"), json!(hex(&alice)));
    let op = nick(&solo, &bob, &bob, "alice");
    solo.assert_refused(op, "nick taken");

    // Renaming frees the old nick.
    let op = nick(&solo, &alice, &alice, "alicia");
    solo.apply(vec![op]);
    assert_eq!(solo.json("kcin/alice"), Value::Null);
    assert_eq!(solo.json("kcin/alicia"), json!(hex(&alice)));
    assert_eq!(
        solo.json(&text(keys::nick(&alice.public()))),
        json!("alicia")
    );
    let op = nick(&solo, &bob, &bob, "alice");
    solo.apply(vec![op]);
    assert_eq!(solo.json("kcin/alice"), json!(hex(&bob)));

    // Who may rename whom.
    let op = nick(&solo, &bob, &alice, "renamed-by-bob");
    solo.assert_refused(op, "a user renames another");
    let op = nick(&solo, &creator(), &alice, "by-admin");
    solo.apply(vec![op]);
    assert_eq!(solo.json("kcin/by-admin"), json!(hex(&alice)));
    assert_eq!(solo.json("kcin/alicia"), Value::Null);
    let op = nick(&solo, &moderator, &alice, "by-mod");
    solo.apply(vec![op]);
    assert_eq!(solo.json("kcin/by-mod"), json!(hex(&alice)));
    let op = nick(&solo, &moderator, &creator(), "admin-by-mod");
    solo.assert_refused(op, "a mod renames the admin");
    let op = nick(&solo, &moderator, &other_mod, "mod-by-mod");
    solo.assert_refused(op, "a mod renames another mod");

    // Lengths and characters.
    let longest = "é".repeat(MAX_NICK_BYTES / 2);
    let op = nick(&solo, &alice, &alice, &longest);
    solo.apply(vec![op]);
    assert_eq!(solo.json(&format!("kcin/{longest}")), json!(hex(&alice)));
    for (bad, what) in [
        (format!("{longest}a"), "nick of 33 bytes"),
        (String::new(), "empty nick"),
        ("a/b".into(), "nick with a slash"),
        (" padded".into(), "nick starting with a space"),
        ("line\nbreak".into(), "nick with a control character"),
    ] {
        let op = nick(&solo, &alice, &alice, &bad);
        solo.assert_refused(op, what);
    }
}

#[test]
fn messages_are_indexed_globally_and_per_user() {
    let mut solo = intercom_with_chat();
    let (alice, bob) = (key(5), key(6));
    let op = solo.signed(&alice, post("hi"));
    solo.apply(vec![op]);
    assert_eq!(solo.json("msgl"), json!(1));
    assert_eq!(
        solo.json("msg/0"),
        json!({
            "type": "msg",
            "msg": "hi",
            "address": hex(&alice),
            "attachments": [],
            "deleted_by": null,
            "reply_to": null,
            "pinned": false,
            "pin_id": null,
        })
    );
    assert_eq!(
        solo.json(&text(keys::user_message(&alice.public(), 0))),
        json!("msg/0")
    );
    assert_eq!(
        solo.json(&text(keys::user_message_count(&alice.public()))),
        json!(1)
    );
    // Intercom's chat hook ran.
    assert_eq!(solo.json("chat_last")["msg"], json!("hi"));

    let op = solo.signed(
        &bob,
        Action::PostMessage {
            text: "re".into(),
            attachments: vec!["ipfs://one".into(), "ipfs://two".into()],
            reply_to: Some(0),
        },
    );
    let again = solo.signed(&alice, post("again"));
    solo.apply(vec![op, again]);
    assert_eq!(solo.json("msgl"), json!(3));
    let message = solo.json("msg/1");
    assert_eq!(message["reply_to"], json!(0));
    assert_eq!(message["attachments"], json!(["ipfs://one", "ipfs://two"]));
    assert_eq!(
        solo.json(&text(keys::user_message(&bob.public(), 0))),
        json!("msg/1")
    );
    assert_eq!(
        solo.json(&text(keys::user_message(&alice.public(), 1))),
        json!("msg/2")
    );
    assert_eq!(
        solo.json(&text(keys::user_message_count(&alice.public()))),
        json!(2)
    );
    assert_eq!(solo.json("chat_last")["msg"], json!("again"));

    let dangling = solo.signed(&bob, reply("to nothing", 3));
    solo.assert_refused(dangling, "reply to a message that does not exist");
}

#[test]
fn messages_are_deleted_by_the_admin_their_author_or_a_moderator() {
    let mut solo = with_chat();
    let (moderator, alice, bob) = (key(3), key(5), key(6));
    let op = solo.admin(Action::SetMod {
        user: moderator.public(),
        enabled: true,
    });
    solo.apply(vec![op]);
    // 0 alice, 1 admin, 2 bob, 3 moderator, 4 alice (with attachments).
    let posts = vec![
        solo.signed(&alice, post("zero")),
        solo.admin(post("one")),
        solo.signed(&bob, post("two")),
        solo.signed(&moderator, post("three")),
        solo.signed(
            &alice,
            Action::PostMessage {
                text: "four".into(),
                attachments: vec!["file".into()],
                reply_to: None,
            },
        ),
    ];
    solo.apply(posts);
    assert_eq!(solo.json("msgl"), json!(5));
    let delete =
        |solo: &Solo, signer: &Keypair, id: u64| solo.signed(signer, Action::DeleteMessage { id });

    let op = delete(&solo, &bob, 0);
    solo.assert_refused(op, "a stranger deletes");
    let op = delete(&solo, &alice, 0);
    solo.apply(vec![op]);
    let message = solo.json("msg/0");
    assert_eq!(message["msg"], Value::Null);
    assert_eq!(message["deleted_by"], json!(hex(&alice)));
    assert_eq!(solo.json("delml"), json!(1));
    assert_eq!(solo.json("delm/0"), json!(0));
    let op = delete(&solo, &creator(), 0);
    solo.assert_refused(op, "delete twice");

    let op = delete(&solo, &moderator, 1);
    solo.assert_refused(op, "a mod deletes the admin's message");
    let op = delete(&solo, &moderator, 2);
    solo.apply(vec![op]);
    assert_eq!(solo.json("msg/2")["deleted_by"], json!(hex(&moderator)));
    let op = delete(&solo, &creator(), 3);
    solo.apply(vec![op]);
    assert_eq!(solo.json("msg/3")["deleted_by"], json!(hex(&creator())));
    let op = delete(&solo, &creator(), 4);
    solo.apply(vec![op]);
    let message = solo.json("msg/4");
    assert_eq!(message["attachments"], json!([]));
    assert_eq!(message["msg"], Value::Null);
    assert_eq!(solo.json("delml"), json!(4));
    assert_eq!(solo.json("delm/1"), json!(2));
    assert_eq!(solo.json("delm/2"), json!(3));
    assert_eq!(solo.json("delm/3"), json!(4));
    // The admin's own message, by the admin.
    let op = delete(&solo, &creator(), 1);
    solo.apply(vec![op]);
    assert_eq!(solo.json("delml"), json!(5));
    let op = delete(&solo, &creator(), 5);
    solo.assert_refused(op, "delete a message that does not exist");
}

#[test]
fn pins_keep_their_slot_and_unpins_free_it() {
    let mut solo = with_chat();
    let (moderator, alice) = (key(3), key(5));
    let op = solo.admin(Action::SetMod {
        user: moderator.public(),
        enabled: true,
    });
    let posts = vec![
        op,
        solo.signed(&alice, post("zero")),
        solo.signed(&alice, post("one")),
    ];
    solo.apply(posts);
    let pin = |solo: &Solo, signer: &Keypair, id: u64, pinned: bool| {
        solo.signed(signer, Action::PinMessage { id, pinned })
    };

    let op = pin(&solo, &alice, 0, true);
    solo.assert_refused(op, "a user pins");
    let op = pin(&solo, &creator(), 0, true);
    solo.apply(vec![op]);
    let message = solo.json("msg/0");
    assert_eq!(message["pinned"], json!(true));
    assert_eq!(message["pin_id"], json!(0));
    assert_eq!(solo.json("pnl"), json!(1));
    assert_eq!(solo.json("pni/0"), json!({"msg": 0, "pinned": true}));

    let op = pin(&solo, &moderator, 1, true);
    solo.apply(vec![op]);
    assert_eq!(solo.json("msg/1")["pin_id"], json!(1));
    assert_eq!(solo.json("pnl"), json!(2));

    // Pinning with pinned = false unpins but keeps the slot.
    let op = pin(&solo, &creator(), 0, false);
    solo.apply(vec![op]);
    let message = solo.json("msg/0");
    assert_eq!(message["pinned"], json!(false));
    assert_eq!(message["pin_id"], json!(0));
    assert_eq!(solo.json("pni/0"), json!({"msg": 0, "pinned": false}));
    assert_eq!(solo.json("pnl"), json!(2));

    // Unpinning by slot frees the message's slot; a new pin takes a new one.
    let op = solo.signed(&alice, Action::UnpinMessage { pin: 1 });
    solo.assert_refused(op, "a user unpins");
    let op = solo.signed(&moderator, Action::UnpinMessage { pin: 1 });
    solo.apply(vec![op]);
    let message = solo.json("msg/1");
    assert_eq!(message["pinned"], json!(false));
    assert_eq!(message["pin_id"], Value::Null);
    assert_eq!(solo.json("pni/1"), json!({"msg": 1, "pinned": false}));
    let op = pin(&solo, &creator(), 1, true);
    solo.apply(vec![op]);
    assert_eq!(solo.json("msg/1")["pin_id"], json!(2));
    assert_eq!(solo.json("pnl"), json!(3));
    assert_eq!(solo.json("pni/2"), json!({"msg": 1, "pinned": true}));

    let op = solo.admin(Action::UnpinMessage { pin: 3 });
    solo.assert_refused(op, "unpin a slot that does not exist");
    let op = pin(&solo, &creator(), 2, true);
    solo.assert_refused(op, "pin a message that does not exist");
}

#[test]
fn admin_signed_features_reach_the_contract() {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let timer = |value: u64| Action::Feature {
        feature: "timer".into(),
        key: "currentTime".into(),
        value: serde_bytes::ByteBuf::from(msgpack(json!(value))),
    };
    let op = solo.admin(timer(1_234));
    let guard = guard_key(&solo.id(), &op);
    solo.apply(vec![op]);
    assert_eq!(solo.json("currentTime"), json!(1_234));
    assert_ne!(solo.json(&guard), Value::Null);

    let by_user = solo.signed(&key(5), timer(99));
    solo.assert_refused(by_user, "feature signed by a user");
    assert_eq!(solo.json("currentTime"), json!(1_234));

    // A feature the contract refuses is consumed (its guard written), its writes dropped.
    let op = solo.admin(Action::Feature {
        feature: "timer".into(),
        key: "otherKey".into(),
        value: serde_bytes::ByteBuf::from(msgpack(json!(5))),
    });
    let guard = guard_key(&solo.id(), &op);
    let changed = solo.assert_accepted(op, "feature the contract refuses");
    let index_prefix = keys::GUARD_INDEX;
    assert!(
        changed
            .iter()
            .all(|k| *k == guard || k.starts_with(index_prefix)),
        "{changed:?}"
    );
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert_eq!(solo.json("currentTime"), json!(1_234));

    // The chat hook sees the timer.
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    let hello = solo.signed(&key(5), post("what time is it"));
    solo.apply(vec![on, hello]);
    assert_eq!(solo.json("chat_last")["at"], json!(1_234));

    // Without a contract, features are refused.
    let mut bare = with_admin();
    let op = bare.admin(timer(1));
    bare.assert_refused(op, "feature without a contract");
}

// ---------------------------------------------------------------------------------------------
// 2. Refusals: every negative branch leaves the state as it was
// ---------------------------------------------------------------------------------------------

#[test]
fn signed_ops_are_guarded_against_replay_expiry_and_other_subnets() {
    let mut solo = with_admin();
    let admin = creator();
    let chat = |enabled| Action::SetChatStatus { enabled };

    // Replay: the same bytes twice.
    let op = solo.signed_with(&admin, chat(true), 1, solo.expiry());
    solo.apply(vec![op.clone()]);
    assert_eq!(solo.json("chat_status"), json!("on"));
    let off = solo.signed_with(&admin, chat(false), 2, solo.expiry());
    solo.apply(vec![off]);
    solo.assert_refused(op.clone(), "replayed signature");
    assert_eq!(solo.json("chat_status"), json!("off"));
    // Also within one entry: the second copy is refused.
    let twice = solo.signed_with(&admin, chat(true), 3, solo.expiry());
    let guard = guard_key(&solo.id(), &twice);
    let positions = solo.status().position;
    solo.apply(vec![twice.clone(), twice]);
    assert_eq!(solo.status().position, positions + 2);
    assert_eq!(solo.json("chat_status"), json!("on"));
    assert_ne!(solo.json(&guard), Value::Null);

    // Expiry: exactly the applying height is fine, one below is expired.
    let height = solo.next_height();
    let expired = solo.signed_with(&admin, chat(false), 4, height - 1);
    solo.assert_refused(expired, "expired signature");
    let height = solo.next_height();
    let last_chance = solo.signed_with(&admin, chat(false), 5, height);
    solo.apply(vec![last_chance]);
    assert_eq!(solo.json("chat_status"), json!("off"));

    // Expiry too far: at most max_op_ttl heights ahead.
    let ttl = Params::default().max_op_ttl;
    let height = solo.next_height();
    let too_far = solo.signed_with(&admin, chat(true), 6, height + ttl + 1);
    solo.assert_refused(too_far, "expiry beyond max_op_ttl");
    let height = solo.next_height();
    let farthest = solo.signed_with(&admin, chat(true), 7, height + ttl);
    solo.apply(vec![farthest]);
    assert_eq!(solo.json("chat_status"), json!("on"));
    let forever = solo.signed_with(&admin, chat(false), 8, u64::MAX);
    solo.assert_refused(forever, "expires = u64::MAX");

    // Signed for another subnet (same admin key): refused here.
    let elsewhere = signed_for(&Hash32([5; 32]), &admin, chat(false), 9, solo.expiry());
    solo.assert_refused(elsewhere, "cross-subnet replay");

    // A signature by one key presented as another's.
    let mut forged = SignedOp::sign(&key(5), &solo.id(), chat(false), 10, solo.expiry());
    forged.signer = admin.public();
    solo.assert_refused(
        encode_op(&SubnetOp::Signed(forged)),
        "signature of another key",
    );
    // A tampered action under a valid signature.
    let mut tampered = SignedOp::sign(&admin, &solo.id(), chat(true), 11, solo.expiry());
    tampered.action = chat(false);
    solo.assert_refused(encode_op(&SubnetOp::Signed(tampered)), "tampered action");
    // A non-admin signing an admin action.
    let by_user = solo.signed(&key(5), chat(false));
    solo.assert_refused(by_user, "admin action signed by a user");
    assert_eq!(solo.json("chat_status"), json!("on"));
}

#[test]
fn a_refused_op_leaves_the_root_as_a_malformed_op_does() {
    // Two identical subnets: one applies each refused op, the other a malformed op in its
    // place (which only prunes). Their roots must stay equal.
    let (mut a, mut b) = (Solo::new(), Solo::new());
    let admin = creator();
    let id = a.id();
    let expiry = 1_000;
    let on = signed_for(
        &id,
        &admin,
        Action::SetChatStatus { enabled: true },
        1,
        expiry,
    );
    let setup = vec![Solo::add_admin_op(), on.clone()];
    a.apply(setup.clone());
    b.apply(setup);
    assert_eq!(a.root(), b.root());
    let user = key(5);
    let refused = [
        (on, "replayed signature"),
        (
            signed_for(&id, &admin, Action::SetChatStatus { enabled: false }, 2, 1),
            "expired",
        ),
        (
            signed_for(
                &id,
                &admin,
                Action::SetChatStatus { enabled: false },
                3,
                200_000,
            ),
            "expiry too far",
        ),
        (
            signed_for(
                &Hash32([5; 32]),
                &admin,
                Action::SetChatStatus { enabled: false },
                4,
                expiry,
            ),
            "another subnet",
        ),
        (
            signed_for(
                &id,
                &user,
                Action::SetChatStatus { enabled: false },
                5,
                expiry,
            ),
            "wrong signer",
        ),
        (
            signed_for(&id, &user, reply("dangling", 7), 6, expiry),
            "reply to nothing",
        ),
        (
            signed_for(
                &id,
                &user,
                Action::MuteStatus {
                    user: admin.public(),
                    muted: true,
                },
                7,
                expiry,
            ),
            "a user mutes the admin",
        ),
        (
            encode_op(&SubnetOp::AddAdmin { key: user.public() }),
            "second AddAdmin",
        ),
    ];
    for (op, what) in refused {
        a.apply(vec![op]);
        b.apply(vec![b"malformed".to_vec()]);
        assert_eq!(a.root(), b.root(), "{what}");
    }
    // An accepted op does change the root (the comparison can fail).
    let hello = signed_for(&id, &user, post("hello"), 8, expiry);
    a.apply(vec![hello]);
    b.apply(vec![b"malformed".to_vec()]);
    assert_ne!(a.root(), b.root());
}

#[test]
fn replay_guards_are_pruned_after_expiry_and_stay_refused() {
    let mut solo = with_admin();
    let admin = creator();
    let height = solo.next_height();
    let op = solo.signed_with(&admin, Action::SetChatStatus { enabled: true }, 1, height);
    let guard = guard_key(&solo.id(), &op);
    solo.apply(vec![op.clone()]);
    assert_eq!(solo.json(&guard), json!(height));
    assert_eq!(solo.keys_under(keys::GUARD_INDEX).len(), 1);

    // The next checkpoint prunes it (it expired), and the op stays refused: it is expired.
    let other = solo.admin(Action::SetChatStatus { enabled: false });
    let other_guard = guard_key(&solo.id(), &other);
    solo.apply(vec![other]);
    assert_eq!(solo.json(&guard), Value::Null, "expired guard pruned");
    assert_eq!(
        solo.keys_under(keys::GUARD_INDEX).len(),
        1,
        "only the live guard's index"
    );
    assert_ne!(solo.json(&other_guard), Value::Null);
    solo.assert_refused(op, "replay of a pruned (expired) op");
    assert_eq!(solo.json("chat_status"), json!("off"));
}

#[test]
fn guard_pruning_is_bounded_per_op() {
    let mut solo = with_chat();
    let height = solo.next_height();
    let user = key(5);
    let posts: Vec<Vec<u8>> = (0..300)
        .map(|i| solo.signed_with(&user, post(&format!("m{i}")), i, height))
        .collect();
    solo.ledger.append(posts[..150].to_vec()).expect("append");
    solo.apply(posts[150..].to_vec());
    assert_eq!(solo.json("msgl"), json!(300));
    assert_eq!(solo.keys_under("sh/").len(), 301); // + SetChatStatus's guard
    // One op prunes at most 256 expired guards.
    let nudge = solo.signed(&user, post("nudge"));
    solo.apply(vec![nudge]);
    let live = 1 + 1; // SetChatStatus's and the nudge's
    assert_eq!(solo.keys_under("sh/").len(), 300 - 256 + live);
    // The next op finishes the job.
    let nudge = solo.signed(&user, post("nudge again"));
    solo.apply(vec![nudge]);
    assert_eq!(solo.keys_under("sh/").len(), live + 1);
    assert_eq!(solo.keys_under(keys::GUARD_INDEX).len(), live + 1);
}

#[test]
fn actions_before_an_admin_exists_are_refused_without_panicking() {
    let mut solo = Solo::new();
    let (user, other) = (key(5), key(6));
    let mut ops: Vec<Vec<u8>> = [
        Action::SetChatStatus { enabled: true },
        Action::AddWriter { key: user.public() },
        Action::AddIndexer { key: user.public() },
        Action::RemoveWriter {
            key: creator().public(),
        },
        Action::SetAutoAddWriters { enabled: true },
        Action::EnableTransactions { enabled: false },
        Action::EnableWhitelist { enabled: true },
        Action::SetMod {
            user: user.public(),
            enabled: true,
        },
        // The reference crashed on muteStatus without an admin.
        Action::MuteStatus {
            user: other.public(),
            muted: true,
        },
        Action::UpdateAdmin {
            admin: Some(user.public()),
        },
        Action::SetMsbTrust {
            network: MSB_NETWORK,
            indexers: vec![msb_indexer().public()],
            scheme: SettlementScheme::Attested,
        },
        Action::SetParams {
            params: Params::default(),
        },
        Action::Feature {
            feature: "timer".into(),
            key: "currentTime".into(),
            value: serde_bytes::ByteBuf::from(msgpack(json!(1))),
        },
        Action::DeleteMessage { id: 0 },
        Action::PinMessage {
            id: 0,
            pinned: true,
        },
        Action::UnpinMessage { pin: 0 },
        Action::SetNick {
            user: user.public(),
            nick: "early".into(),
        },
        post("nobody listens"),
        Action::AutoAddWriter,
    ]
    .into_iter()
    .flat_map(|action| {
        // Signed by the creator (not yet admin) and by a user.
        [solo.admin(action.clone()), solo.signed(&user, action)]
    })
    .collect();
    ops.extend(solo.deploy(INTERCOM));
    solo.assert_refused_by(None, ops, "actions without an admin");
    // The subnet goes on.
    solo.apply(vec![Solo::add_admin_op()]);
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    solo.apply(vec![on]);
    assert_eq!(solo.json("chat_status"), json!("on"));
}

#[test]
fn field_lengths_are_checked() {
    let mut solo = intercom_with_chat();
    let user = key(5);
    let max = Params::default().max_message_bytes as usize;
    let attachments = |n: usize, len: usize| Action::PostMessage {
        text: "files".into(),
        attachments: vec!["a".repeat(len); n],
        reply_to: None,
    };
    let feature = |name: &str, key: &str, len: usize| Action::Feature {
        feature: name.into(),
        key: key.into(),
        value: serde_bytes::ByteBuf::from(vec![0xc0; len]),
    };
    let refused: Vec<(Vec<u8>, &str)> = vec![
        (solo.signed(&user, post("")), "empty message"),
        (
            solo.signed(&user, post(&"m".repeat(max + 1))),
            "message over max_message_bytes",
        ),
        (
            solo.signed(&user, attachments(MAX_ATTACHMENTS + 1, 4)),
            "too many attachments",
        ),
        (
            solo.signed(&user, attachments(1, MAX_ATTACHMENT_BYTES + 1)),
            "attachment too long",
        ),
        (solo.signed(&user, attachments(1, 0)), "empty attachment"),
        (
            solo.admin(feature(
                &"f".repeat(MAX_FEATURE_NAME_BYTES + 1),
                "currentTime",
                1,
            )),
            "feature name too long",
        ),
        (
            solo.admin(feature("", "currentTime", 1)),
            "empty feature name",
        ),
        (
            solo.admin(feature("timer", &"k".repeat(MAX_FEATURE_KEY_BYTES + 1), 1)),
            "feature key too long",
        ),
        (
            solo.admin(feature(
                "timer",
                "currentTime",
                Params::default().max_feature_bytes as usize + 1,
            )),
            "feature value too long",
        ),
        (
            solo.admin(Action::SetMsbTrust {
                network: MSB_NETWORK,
                indexers: vec![],
                scheme: SettlementScheme::Attested,
            }),
            "no MSB indexers",
        ),
        (
            solo.admin(Action::SetMsbTrust {
                network: MSB_NETWORK,
                indexers: (0..33).map(|i| key(100 + i).public()).collect(),
                scheme: SettlementScheme::Attested,
            }),
            "33 MSB indexers",
        ),
        (
            solo.admin(Action::DeployContract {
                hash: hash(b"x"),
                size: 0,
                chunks: vec![],
            }),
            "empty component",
        ),
        (
            solo.admin(Action::DeployContract {
                hash: hash(b"x"),
                size: CHUNK_BYTES as u64 + 1,
                chunks: vec![hash(b"x")],
            }),
            "chunk count does not match the size",
        ),
        (
            solo.admin(Action::DeployContract {
                hash: hash(b"x"),
                size: u64::from(Params::default().limits.max_component_bytes) + 1,
                chunks: vec![hash(b"x"); 17],
            }),
            "component over max_component_bytes",
        ),
    ];
    for (op, what) in refused {
        solo.assert_refused(op, what);
    }
    // The limits themselves are allowed.
    let longest = solo.signed(&user, post(&"m".repeat(max)));
    let most = solo.signed(&user, attachments(MAX_ATTACHMENTS, MAX_ATTACHMENT_BYTES));
    solo.apply(vec![longest, most]);
    assert_eq!(solo.json("msgl"), json!(2));
}

#[test]
fn malformed_oversized_and_foreign_version_ops_are_refused() {
    let mut solo = intercom_with_chat();
    let user = key(5);
    let add_admin = SubnetOp::AddAdmin { key: user.public() };
    let envelope = |version: u8, op: SubnetOp| trac_host::codec::encode(&Envelope { version, op });
    assert_eq!(
        envelope(OP_VERSION, add_admin.clone()),
        encode_op(&add_admin)
    );
    let valid_post = solo.signed(&user, post("fine"));
    let post_op = trac_host::subnet::decode_op(&valid_post).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty op"),
        (b"not an op at all".to_vec(), "garbage"),
        (vec![0xc0], "msgpack nil"),
        (valid_post[..valid_post.len() - 1].to_vec(), "truncated op"),
        (
            [valid_post.as_slice(), &[0]].concat(),
            "trailing byte after an op",
        ),
        (
            envelope(OP_VERSION + 1, post_op.clone()),
            "format version 2",
        ),
        (envelope(0, post_op), "format version 0"),
        (
            vec![0x5a; CHUNK_BYTES + 1025],
            "op beyond the largest op size",
        ),
    ];
    for (op, what) in cases {
        solo.assert_refused(op, what);
    }

    // A signed op larger than the system-op limit, though its text is within the (raised)
    // message limit.
    let raise = solo.admin(Action::SetParams {
        params: Params {
            max_message_bytes: PARAM_CAPS.max_message_bytes,
            ..Params::default()
        },
    });
    solo.apply(vec![raise]);
    let huge = solo.signed(
        &user,
        post(&"h".repeat(PARAM_CAPS.max_message_bytes as usize)),
    );
    assert!(huge.len() > trac_host::subnet::ops::MAX_SYSTEM_OP_BYTES);
    solo.assert_refused(huge, "signed op over 64 KiB");
    let big = solo.signed(&user, post(&"h".repeat(60_000)));
    solo.apply(vec![big]);
    assert_eq!(solo.json("msgl"), json!(1));

    // A tx op larger than max_tx_bytes.
    let args = msgpack(json!({"op": "x", "some_key": "k".repeat(70_000)}));
    let tx = solo.tx(&user.public(), txh(1), "submitSomething", &args);
    assert!(tx.len() > Params::default().max_tx_bytes as usize);
    solo.assert_refused(tx, "tx op over max_tx_bytes");
}

#[test]
fn contracts_cannot_write_reserved_keys() {
    let reserved = keys::reserved();
    let creator_writer = text(keys::writer(&creator().public()));
    let forbidden = [
        "admin",
        "auto_add_writers",
        "chat_status",
        "txen",
        "wlst",
        "msgl",
        "delml",
        "pnl",
        "txl",
        "params",
        "msg/0",
        "umsg/x/0",
        "umsgl/x",
        "sys/x",
        "sys/indexers",
        creator_writer.as_str(),
        "contract/x",
        "contract/current",
        "sh/x",
        "tx/x",
        "txi/0",
        "utxl/x",
        "utxi/x/0",
        "nick/x",
        "kcin/x",
        "mod/x",
        "mtd/x",
        "wl/x",
        "delm/0",
        "pni/0",
        "bnd/x",
    ];
    for key in forbidden {
        assert!(reserved.contains(key.as_bytes()), "{key} must be reserved");
    }
    for key in [
        "app/x",
        "something",
        "currentTime",
        "chat_last",
        "name/x",
        "msgs",
    ] {
        assert!(!reserved.contains(key.as_bytes()), "{key} is app state");
    }

    // A contract that tries anyway: its writes to reserved keys are refused by the runtime,
    // its other writes apply.
    let mut solo = Solo::new();
    solo.create(&wat_app("1.0.0", &forbidden, false));
    assert_eq!(solo.json("contract/current")["name"], json!("wat-test"));
    let on = solo.admin(Action::SetChatStatus { enabled: true });
    let hello = solo.signed(&key(5), post("hello"));
    solo.apply(vec![on, hello]);
    assert_eq!(solo.get("app/ok"), Some(b"\xa1x".to_vec()), "the hook ran");
    let before = solo.state();
    let tx = solo.tx(&key(5).public(), txh(1), "anything", &[0xc0]);
    solo.apply(vec![tx]);
    assert_eq!(solo.json("txi/0")["err"], Value::Null);
    let after = solo.state();
    for key in forbidden {
        if key != "txl" && key != "txi/0" {
            assert_eq!(
                before.get(key.as_bytes()),
                after.get(key.as_bytes()),
                "{key} changed"
            );
        }
    }
    assert_eq!(solo.json("txl"), json!(1));
    assert_eq!(solo.json("msg/0")["msg"], json!("hello"));
    assert_eq!(solo.json("admin"), json!(hex(&creator())));
}

// ---------------------------------------------------------------------------------------------
// 3. Poison pills: nothing panics, nothing stalls
// ---------------------------------------------------------------------------------------------

#[test]
fn poison_pills_neither_panic_nor_stall() {
    let mut solo = intercom_with_chat();
    let user = key(5);
    // Names that crashed the reference's dispatch are plain names here.
    let names = [
        "__proto__",
        "constructor",
        "hasOwnProperty",
        "valueOf",
        "toString",
        "prototype",
    ];
    for (i, name) in names.iter().enumerate() {
        let owner = key(20 + i as u8);
        let op = solo.signed(
            &owner,
            Action::SetNick {
                user: owner.public(),
                nick: (*name).into(),
            },
        );
        solo.apply(vec![op]);
        assert_eq!(solo.json(&format!("kcin/{name}")), json!(hex(&owner)));
    }
    let feature = solo.admin(Action::Feature {
        feature: "__proto__".into(),
        key: "constructor".into(),
        value: serde_bytes::ByteBuf::from(vec![0xc0]),
    });
    solo.assert_accepted(feature, "unknown feature (consumed)");
    let ops = vec![
        solo.tx(&user.public(), txh(1), "__proto__", &[0xc0]),
        solo.tx(&user.public(), txh(2), "hasOwnProperty", &[0xc1, 0xff]),
        solo.tx(&user.public(), txh(3), "constructor", &[]),
    ];
    solo.apply(ops);
    assert_eq!(solo.json("txl"), json!(3));
    for n in 0..3 {
        let record = solo.json(&format!("txi/{n}"));
        assert!(record["err"].is_string(), "{record}");
    }

    // Absurd numbers.
    let absurd: Vec<(Vec<u8>, &str)> = vec![
        (
            solo.admin(Action::DeleteMessage { id: u64::MAX }),
            "delete message u64::MAX",
        ),
        (
            solo.admin(Action::UnpinMessage { pin: u64::MAX }),
            "unpin slot u64::MAX",
        ),
        (
            solo.admin(Action::PinMessage {
                id: u64::MAX,
                pinned: true,
            }),
            "pin message u64::MAX",
        ),
        (
            solo.signed(&user, reply("to the end of time", u64::MAX)),
            "reply to u64::MAX",
        ),
        (
            solo.signed_with(&user, post("forever"), 1, u64::MAX),
            "expires u64::MAX",
        ),
        (
            solo.signed(
                &user,
                Action::PostMessage {
                    text: "many".into(),
                    attachments: vec!["a".into(); 5_000],
                    reply_to: None,
                },
            ),
            "5 000 attachments",
        ),
        (
            solo.signed(
                &user,
                Action::PostMessage {
                    text: "more".into(),
                    attachments: vec!["a".into(); 100_000],
                    reply_to: None,
                },
            ),
            "100 000 attachments",
        ),
        (
            solo.admin(Action::DeployContract {
                hash: hash(b"huge"),
                size: u64::MAX,
                chunks: vec![],
            }),
            "component of u64::MAX bytes",
        ),
        (
            encode_op(&SubnetOp::ContractChunk {
                hash: hash(b"huge"),
                index: u32::MAX,
                bytes: serde_bytes::ByteBuf::from(vec![1]),
            }),
            "chunk u32::MAX",
        ),
    ];
    for (op, what) in absurd {
        solo.assert_refused(op, what);
    }
    let max_nonce = solo.signed_with(&user, post("nonce"), u64::MAX, solo.expiry());
    let odd_text = solo.signed(&user, post("\u{0}\u{202e}\u{feff}zero width"));
    solo.apply(vec![max_nonce, odd_text]);
    assert_eq!(solo.json("msgl"), json!(2));
    assert_eq!(
        solo.json("msg/1")["msg"],
        json!("\u{0}\u{202e}\u{feff}zero width")
    );

    // Still alive.
    let alive = solo.signed(&user, post("still alive"));
    solo.apply(vec![alive]);
    assert_eq!(solo.json("msgl"), json!(3));
    assert_eq!(solo.status().divergence, None);
}

#[test]
fn random_bytes_as_ops_are_refused() {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let solo = std::cell::RefCell::new(intercom_with_chat());
    let valid = solo.borrow().signed(&key(5), post("template"));
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    // Raw garbage, and garbage behind a valid op's first bytes (envelope, variant, action).
    let prefix = 0..valid.len();
    let op = prop_oneof![
        vec(any::<u8>(), 0..400),
        (prefix, vec(any::<u8>(), 0..200)).prop_map(move |(cut, tail)| {
            let mut op = valid[..cut].to_vec();
            op.extend(tail);
            op
        }),
    ];
    runner
        .run(&vec(op, 1..12), |ops| {
            solo.borrow_mut()
                .assert_refused_by(None, ops, "random bytes");
            Ok(())
        })
        .unwrap();
    let mut solo = solo.into_inner();
    let alive = solo.signed(&key(5), post("alive"));
    solo.apply(vec![alive]);
    assert_eq!(solo.json("msgl"), json!(1));
}

#[test]
fn every_single_byte_corruption_of_an_op_is_refused() {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let signed = solo.admin(Action::SetChatStatus { enabled: true });
    let tx = solo.tx(&key(5).public(), txh(1), "storeSomething", &[0xc0]);
    for (op, what) in [(&signed, "corrupted signed op"), (&tx, "corrupted tx op")] {
        for flip in [0x01u8, 0x80, 0xff] {
            let corrupted: Vec<Vec<u8>> = (0..op.len())
                .map(|i| {
                    let mut c = op.clone();
                    c[i] ^= flip;
                    c
                })
                .collect();
            for batch in corrupted.chunks(200) {
                solo.assert_refused_by(None, batch.to_vec(), what);
            }
        }
    }
    solo.apply(vec![signed, tx]);
    assert_eq!(solo.json("chat_status"), json!("on"));
    assert_eq!(solo.json("txl"), json!(1));
}

// ---------------------------------------------------------------------------------------------
// 4. Contract lifecycle, transactions and settlement
// ---------------------------------------------------------------------------------------------

#[test]
fn creation_records_the_active_contract_and_refuses_redeploying_it() {
    let mut solo = Solo::new();
    let ops = solo.create_ops(INTERCOM);
    let chunk_position = ops.len() as u64 - 1;
    solo.apply(ops);
    let code = hash(INTERCOM).to_hex();
    let current = solo.json("contract/current");
    assert_eq!(
        current,
        json!({
            "hash": code,
            "name": "intercom",
            "version": "0.1.0",
            "size": INTERCOM.len(),
            "position": chunk_position,
            "height": 1,
        })
    );
    assert_eq!(solo.json("contract/history/0"), current);
    assert_eq!(solo.json("contract/historyl"), json!(1));
    assert_eq!(
        solo.json("contract/last-deploy"),
        json!({"hash": code, "position": chunk_position, "error": null})
    );
    assert_ne!(solo.json(&format!("contract/stored/{code}")), Value::Null);
    assert_eq!(solo.json(&format!("contract/upload/{code}")), Value::Null);
    assert_eq!(
        solo.get(&format!("contract/code/{code}/0")).as_deref(),
        Some(INTERCOM)
    );
    let again = solo.deploy(INTERCOM);
    solo.assert_refused_by(None, again, "deploying the active contract");
    // Only the admin deploys.
    let by_user = deploy_ops(&solo.signer(&key(5)), REGISTRY, solo.expiry());
    solo.assert_refused_by(None, by_user, "deployment signed by a user");
}

#[test]
fn an_upgrade_mid_log_switches_the_contract_at_its_position() {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let user = key(5);
    let nil = [0xc0];
    let start = solo.status().position;
    let mut ops = vec![solo.tx(&user.public(), txh(1), "storeSomething", &nil)];
    ops.extend(solo.deploy(REGISTRY));
    ops.push(solo.tx(
        &user.public(),
        txh(2),
        "claim",
        &msgpack(json!({"name": "alice", "target": "home"})),
    ));
    ops.push(solo.tx(&user.public(), txh(3), "storeSomething", &nil));
    let height = solo.next_height();
    solo.apply(ops);

    let current = solo.json("contract/current");
    assert_eq!(current["name"], json!("registry"));
    assert_eq!(current["hash"], json!(hash(REGISTRY).to_hex()));
    assert_eq!(current["position"], json!(start + 2), "at the chunk op");
    assert_eq!(current["height"], json!(height));
    assert_eq!(solo.json("contract/historyl"), json!(2));
    assert_eq!(solo.json("contract/history/0")["name"], json!("intercom"));
    assert_eq!(solo.json("contract/history/1"), current);

    // Before the switch, Intercom ran; after it, the registry.
    assert_eq!(solo.json("txi/0")["err"], Value::Null);
    assert_eq!(solo.json("something"), json!("there is something"));
    assert_eq!(solo.json("txi/1")["err"], Value::Null);
    assert_eq!(solo.json("name/alice")["owner"], json!(hex(&user)));
    let err = solo.json("txi/2")["err"].clone();
    assert!(
        err.as_str().is_some_and(|e| e.contains("unknown function")),
        "{err}"
    );

    // Back to Intercom: it is stored, so the announcement alone re-activates it.
    let announce = solo.deploy(INTERCOM)[0].clone();
    let position = solo.status().position;
    solo.apply(vec![announce]);
    let current = solo.json("contract/current");
    assert_eq!(current["name"], json!("intercom"));
    assert_eq!(current["position"], json!(position));
    assert_eq!(solo.json("contract/historyl"), json!(3));
    assert_eq!(solo.json("contract/history/2"), current);
    let tx = solo.tx(&user.public(), txh(4), "storeSomething", &nil);
    solo.apply(vec![tx]);
    let record = solo.json("txi/3");
    assert_eq!(record["err"], Value::Null, "{record}");
    assert_ne!(record["result"], Value::Null, "{record}");
}

#[test]
fn migrate_runs_with_the_previous_version_on_every_activation() {
    let mut solo = Solo::new();
    solo.create(INTERCOM);
    let (a, b) = (wat_app("1.0.0", &[], false), wat_app("2.0.0", &[], false));
    let ops = solo.deploy(&a);
    solo.apply(ops);
    assert_eq!(solo.json("contract/current")["version"], json!("1.0.0"));
    assert_eq!(solo.get("app/migrated").as_deref(), Some(&b"0.1.0"[..]));
    let ops = solo.deploy(&b);
    solo.apply(ops);
    assert_eq!(solo.get("app/migrated").as_deref(), Some(&b"1.0.0"[..]));
    // Re-activating a stored version migrates again.
    let announce = solo.deploy(&a)[0].clone();
    solo.apply(vec![announce]);
    let current = solo.json("contract/current");
    assert_eq!(current["hash"], json!(hash(&a).to_hex()));
    assert_eq!(solo.get("app/migrated").as_deref(), Some(&b"2.0.0"[..]));
    assert_eq!(solo.json("contract/historyl"), json!(4));

    // A component whose migrate fails is stored, not activated; the failure is recorded.
    let failing = wat_app("3.0.0", &[], true);
    let ops = solo.deploy(&failing);
    solo.apply(ops);
    let last = solo.json("contract/last-deploy");
    assert_eq!(last["hash"], json!(hash(&failing).to_hex()));
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("migrate failed")),
        "{last}"
    );
    assert_eq!(solo.json("contract/current"), current);
    assert_eq!(solo.json("contract/historyl"), json!(4));
    assert_eq!(solo.get("app/migrated").as_deref(), Some(&b"2.0.0"[..]));

    // Bytes that are no component: recorded, nothing activated.
    let junk = b"definitely not a component".repeat(8);
    let ops = solo.deploy(&junk);
    solo.apply(ops);
    let last = solo.json("contract/last-deploy");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid component")),
        "{last}"
    );
    assert_eq!(solo.json("contract/current"), current);

    // The active contract still runs.
    let tx = solo.tx(&key(5).public(), txh(1), "anything", &[0xc0]);
    solo.apply(vec![tx]);
    assert_eq!(solo.json("txi/0")["err"], Value::Null);
    assert_eq!(solo.get("app/ok"), Some(b"\xa1x".to_vec()));
}

#[test]
fn chunks_must_match_their_announcement() {
    let mut solo = with_admin();
    let trust = solo.trust_op();
    solo.apply(vec![trust]);
    let component = padded(INTERCOM, CHUNK_BYTES);
    let ops = solo.deploy(&component);
    assert_eq!(ops.len(), 3, "an announcement and two chunks");
    let code = hash(&component);
    let chunk = |code: Hash32, index: u32, bytes: &[u8]| {
        encode_op(&SubnetOp::ContractChunk {
            hash: code,
            index,
            bytes: serde_bytes::ByteBuf::from(bytes.to_vec()),
        })
    };
    let (first, second) = component.split_at(CHUNK_BYTES);
    solo.assert_refused(chunk(code, 0, first), "chunk before its announcement");
    solo.apply(vec![ops[0].clone()]);
    assert_ne!(
        solo.json(&format!("contract/upload/{}", code.to_hex())),
        Value::Null
    );
    let mut flipped = first.to_vec();
    flipped[1_000] ^= 1;
    let refused: Vec<(Vec<u8>, &str)> = vec![
        (chunk(code, 0, &flipped), "chunk not matching its hash"),
        (chunk(code, 0, &first[1..]), "chunk of the wrong length"),
        (chunk(code, 1, first), "chunk 1 with chunk 0's bytes"),
        (chunk(code, 2, second), "chunk beyond the announced ones"),
        (
            chunk(hash(b"other"), 0, first),
            "chunk of an unannounced hash",
        ),
    ];
    for (op, what) in refused {
        solo.assert_refused(op, what);
    }
    solo.apply(vec![chunk(code, 0, first)]);
    assert_eq!(
        solo.get(&format!("contract/code/{}/0", code.to_hex()))
            .as_deref(),
        Some(first)
    );
    assert_eq!(solo.json("contract/current"), Value::Null);
    solo.assert_refused(chunk(code, 0, first), "chunk stored twice");
    solo.apply(vec![chunk(code, 1, second)]);
    let current = solo.json("contract/current");
    assert_eq!(current["hash"], json!(code.to_hex()));
    assert_eq!(current["name"], json!("intercom"));
    assert_eq!(current["size"], json!(component.len()));
    assert_eq!(
        solo.json(&format!("contract/upload/{}", code.to_hex())),
        Value::Null
    );
    let tx = solo.tx(&key(5).public(), txh(1), "storeSomething", &[0xc0]);
    solo.apply(vec![tx]);
    assert_eq!(solo.json("something"), json!("there is something"));
}

#[test]
fn an_expired_partial_upload_can_be_announced_again() {
    let mut solo = with_admin();
    let component = padded(INTERCOM, CHUNK_BYTES);
    let height = solo.next_height();
    let first_try = deploy_ops(&solo.signer(&creator()), &component, height);
    solo.apply(first_try[..2].to_vec());
    solo.assert_refused(first_try[2].clone(), "chunk after its upload expired");
    assert_eq!(solo.json("contract/current"), Value::Null);
    // A new announcement restarts the upload, and it completes.
    let second_try = solo.deploy(&component);
    solo.apply(second_try);
    assert_eq!(
        solo.json("contract/current")["hash"],
        json!(hash(&component).to_hex())
    );
}

#[test]
fn failed_txs_are_recorded_with_error_and_fuel_and_roll_back() {
    let mut solo = Solo::new();
    solo.create(PROBE);
    let (alice, bob) = (key(5).public(), key(6).public());
    let fill = |n: u64| msgpack(json!({ "n": n }));
    let ops = vec![
        solo.tx(&alice, txh(1), "fill", &fill(3)),
        solo.tx(&bob, txh(2), "fill", &fill(5_000)),
        solo.tx(
            &alice,
            txh(3),
            "panic",
            &msgpack(json!({"message": "the sky fell"})),
        ),
        solo.tx(&bob, txh(4), "nope", &[0xc0]),
        solo.tx(&alice, txh(5), "fill", &msgpack(json!({"x": 1}))),
        solo.tx(&alice, txh(6), "fill", &[0xc1]),
    ];
    let start = solo.status().position;
    let height = solo.next_height();
    solo.apply(ops);
    assert_eq!(solo.json("txl"), json!(6));
    let ok = solo.json("txi/0");
    assert_eq!(ok["err"], Value::Null, "{ok}");
    assert_eq!(ok["tx"], json!(txh(1).to_hex()));
    assert_eq!(ok["function"], json!("fill"));
    assert_eq!(ok["ipk"], json!(alice.to_hex()));
    assert_eq!(ok["wp"], json!(crate::subnet_support::validator().to_hex()));
    assert_eq!(ok["position"], json!(start));
    assert_eq!(ok["height"], json!(height));
    assert!(ok["fuel"].as_u64().is_some_and(|f| f > 0), "{ok}");
    for i in 0..3 {
        assert_eq!(solo.json(&format!("fill/{i}")), json!(i));
    }
    // The failed fill wrote nothing.
    assert_eq!(solo.json("fill/3"), Value::Null);
    assert_eq!(solo.json("fill/4999"), Value::Null);
    let expected = [
        (1, "write"),
        (2, "the sky fell"),
        (3, "unknown function"),
        (4, "invalid arguments"),
        (5, "invalid arguments"),
    ];
    for (n, needle) in expected {
        let record = solo.json(&format!("txi/{n}"));
        let err = record["err"].as_str().unwrap_or_default();
        assert!(err.contains(needle), "txi/{n}: {record}");
        assert_eq!(record["result"], Value::Null, "{record}");
        assert!(record["fuel"].is_u64(), "{record}");
        assert_eq!(record["position"], json!(start + n));
    }
    assert!(solo.json("txi/1")["fuel"].as_u64().unwrap() > 0);
    assert!(solo.json("txi/2")["fuel"].as_u64().unwrap() > 0);

    // Per-requester index.
    assert_eq!(solo.json(&text(keys::user_tx_count(&alice))), json!(4));
    assert_eq!(solo.json(&text(keys::user_tx_count(&bob))), json!(2));
    for (n, global) in [0, 2, 4, 5].into_iter().enumerate() {
        assert_eq!(
            solo.json(&text(keys::user_tx(&alice, n as u64))),
            json!(global)
        );
    }
    for (n, global) in [1, 3].into_iter().enumerate() {
        assert_eq!(
            solo.json(&text(keys::user_tx(&bob, n as u64))),
            json!(global)
        );
    }
    for n in 0..6u8 {
        assert_eq!(solo.json(&format!("tx/{}", txh(n + 1).to_hex())), json!(n));
    }

    // A settled tx hash applies once.
    let duplicate = solo.tx(&bob, txh(1), "fill", &fill(1));
    solo.assert_refused(duplicate, "duplicate tx hash");

    // Tracing one tx records its reads and writes.
    solo.ledger.machine().trace(txh(7));
    let traced = solo.tx(&alice, txh(7), "fill", &fill(2));
    solo.apply(vec![traced]);
    let trace = solo.ledger.machine().take_trace().expect("traced");
    assert_eq!(trace.function, "fill");
    assert_eq!(trace.tx_hash, txh(7));
    assert!(trace.result.is_ok(), "{trace:?}");
    assert_eq!(trace.writes.len(), 2);
    assert_eq!(solo.json(&text(keys::user_tx_count(&alice))), json!(5));
}

#[test]
fn settlements_must_come_from_the_trusted_msb_and_match_the_call() {
    use trac_host::subnet::{Attestation, TxOp};

    let mut solo = Solo::new();
    let mut ops = vec![Solo::add_admin_op()];
    ops.extend(solo.deploy(INTERCOM));
    solo.apply(ops);
    let user = key(5).public();
    let nil = [0xc0];
    let call = "storeSomething";
    let before_trust = solo.tx(&user, txh(1), call, &nil);
    solo.assert_refused(before_trust, "settlement before SetMsbTrust");
    let trust = solo.trust_op();
    solo.apply(vec![trust]);
    assert_eq!(
        solo.json("sys/msb"),
        json!({
            "network": MSB_NETWORK.to_hex(),
            "indexers": [msb_indexer().public().to_hex()],
            "scheme": "Attested",
            "changed_at": 0
        })
    );

    let good = |solo: &Solo, tx: Hash32| solo.settlement(&user, tx, call, &nil);
    let trusted = |s| attest(&msb_indexer(), &MSB_NETWORK, s);
    let mut other_subnet = good(&solo, txh(2));
    other_subnet.subnet = Hash32([5; 32]);
    let mut wrong_content = good(&solo, txh(3));
    wrong_content.content = TxOp::content_hash(&solo.id(), call, &[0x90]);
    let mut forged: Attestation = trac_host::codec::decode(&trusted(good(&solo, txh(4)))).unwrap();
    forged.settlement = good(&solo, txh(5));
    let for_function = |f: &str| {
        let settlement = solo.settlement(&user, txh(6), f, &nil);
        tx_op(f, &nil, trusted(settlement))
    };
    let refused: Vec<(Vec<u8>, &str)> = vec![
        (
            tx_op(call, &nil, trusted(other_subnet)),
            "settled for another subnet",
        ),
        (
            tx_op(call, &nil, trusted(wrong_content)),
            "settled content of other args",
        ),
        (
            tx_op(call, &[0x90], trusted(good(&solo, txh(7)))),
            "call args differ from the settled ones",
        ),
        (
            tx_op("submitSomething", &nil, trusted(good(&solo, txh(8)))),
            "call function differs from the settled one",
        ),
        (
            tx_op(
                call,
                &nil,
                attest(&key(199), &MSB_NETWORK, good(&solo, txh(9))),
            ),
            "attested by an untrusted key",
        ),
        (
            tx_op(
                call,
                &nil,
                attest(&msb_indexer(), &Hash32([1; 32]), good(&solo, txh(10))),
            ),
            "attested on another MSB network",
        ),
        (
            tx_op(call, &nil, trac_host::codec::encode(&forged)),
            "attestation signature of another settlement",
        ),
        (tx_op(call, &nil, b"garbage".to_vec()), "malformed proof"),
        (tx_op(call, &nil, vec![]), "empty proof"),
        (for_function(""), "empty function name"),
        (for_function(&"f".repeat(129)), "function name too long"),
        (
            for_function("bad\u{7}name"),
            "function name with a control character",
        ),
    ];
    for (op, what) in refused {
        solo.assert_refused(op, what);
    }
    let valid = tx_op(call, &nil, trusted(good(&solo, txh(11))));
    solo.apply(vec![valid]);
    assert_eq!(solo.json("txl"), json!(1));

    // Trust moves to another indexer: only its attestations count from then on.
    let new_indexer = key(199);
    let trust = |signer: &Keypair| {
        solo.signed(
            signer,
            Action::SetMsbTrust {
                network: MSB_NETWORK,
                indexers: vec![new_indexer.public()],
                scheme: SettlementScheme::Attested,
            },
        )
    };
    let (by_user, by_admin) = (trust(&key(5)), trust(&creator()));
    solo.assert_refused(by_user, "SetMsbTrust by a user");
    solo.apply(vec![by_admin]);
    let old = tx_op(call, &nil, trusted(good(&solo, txh(12))));
    solo.assert_refused(old, "attested by the formerly trusted indexer");
    let new = tx_op(
        call,
        &nil,
        attest(&new_indexer, &MSB_NETWORK, good(&solo, txh(13))),
    );
    solo.apply(vec![new]);
    assert_eq!(solo.json("txl"), json!(2));
}

#[test]
fn params_change_within_the_hard_caps_only() {
    let mut solo = intercom_with_chat();
    let caps = PARAM_CAPS;
    let with = |change: &dyn Fn(&mut Params)| {
        let mut params = Params::default();
        change(&mut params);
        params
    };
    let beyond: Vec<(Params, &str)> = vec![
        (
            with(&|p| p.limits.fuel_per_call = caps.limits.fuel_per_call + 1),
            "fuel above the cap",
        ),
        (
            with(&|p| p.limits.max_component_bytes = caps.limits.max_component_bytes + 1),
            "component size above the cap",
        ),
        (with(&|p| p.limits.max_key_len = 0), "zero key length"),
        (
            with(&|p| p.max_op_ttl = caps.max_op_ttl + 1),
            "ttl above the cap",
        ),
        (with(&|p| p.max_op_ttl = 0), "zero ttl"),
        (
            with(&|p| p.max_message_bytes = caps.max_message_bytes + 1),
            "message size above the cap",
        ),
        (with(&|p| p.max_tx_bytes = 0), "zero tx size"),
        (
            with(&|p| p.max_feature_bytes = caps.max_feature_bytes + 1),
            "feature size above the cap",
        ),
    ];
    for (params, what) in beyond {
        let op = solo.admin(Action::SetParams { params });
        solo.assert_refused(op, what);
    }
    let by_user = solo.signed(
        &key(5),
        Action::SetParams {
            params: with(&|p| p.max_message_bytes = 10),
        },
    );
    solo.assert_refused(by_user, "SetParams by a user");

    // Within the caps: applied, and enforced from the next op on.
    let small = with(&|p| {
        p.max_message_bytes = 10;
        p.max_op_ttl = 50;
    });
    let op = solo.admin(Action::SetParams { params: small });
    solo.apply(vec![op]);
    let stored: Params = rmp_serde::from_slice(&solo.get("params").unwrap()).unwrap();
    assert_eq!(stored, small);
    let user = key(5);
    let height = solo.next_height();
    let long = solo.signed_with(&user, post("eleven char"), 1, height + 10);
    solo.assert_refused(long, "message over the new limit");
    let height = solo.next_height();
    let far = solo.signed_with(&user, post("far"), 2, height + 51);
    solo.assert_refused(far, "expiry beyond the new ttl");
    let height = solo.next_height();
    let fits = solo.signed_with(&user, post("ten chars!"), 3, height + 50);
    solo.apply(vec![fits]);
    assert_eq!(solo.json("msgl"), json!(1));

    // Less fuel: calls run out of it, and that is recorded.
    let height = solo.next_height();
    let starve = solo.signed_with(
        &creator(),
        Action::SetParams {
            params: with(&|p| p.limits.fuel_per_call = 1_000),
        },
        4,
        height + 10,
    );
    solo.apply(vec![starve]);
    let tx = solo.tx(&user.public(), txh(1), "storeSomething", &[0xc0]);
    solo.apply(vec![tx]);
    let record = solo.json("txi/0");
    assert!(
        record["err"]
            .as_str()
            .is_some_and(|e| e.contains("out of fuel")),
        "{record}"
    );
    assert_eq!(solo.json("something"), Value::Null);
}

#[test]
fn params_never_strand_the_active_contract() {
    // Limits the active contract does not validate under are refused: accepted, they made
    // loading it a node fault on every node, and the subnet stopped applying for good.
    // Limits it validates under are accepted even if its calls then fail (recorded).
    type Change = Box<dyn Fn(&mut Params)>;
    let cases: Vec<(&str, Change, bool)> = vec![
        (
            "component size below the active contract's",
            Box::new(|p| p.limits.max_component_bytes = 1_024),
            false,
        ),
        (
            "one instance",
            Box::new(|p| p.limits.max_instances = 1),
            false,
        ),
        (
            "one page of memory",
            Box::new(|p| p.limits.max_memory_bytes = 65_536),
            false,
        ),
        (
            "one table element",
            Box::new(|p| p.limits.max_table_elements = 1),
            false,
        ),
        (
            "call depth 1",
            Box::new(|p| p.limits.max_call_depth = 1),
            true,
        ),
    ];
    for (what, change, accepted) in cases {
        let mut solo = intercom_with_chat();
        let mut params = Params::default();
        change(&mut params);
        let op = solo.admin(Action::SetParams { params });
        if accepted {
            solo.apply(vec![op]);
        } else {
            solo.assert_refused(op, what);
        }
        // Either way the subnet keeps applying: txs and chat messages are recorded.
        let user = key(5);
        let tx = solo.tx(&user.public(), txh(1), "storeSomething", &[0xc0]);
        let hello = solo.signed(&user, post("hello"));
        solo.apply(vec![tx, hello]);
        assert_eq!(solo.json("txl"), json!(1), "{what}");
        let stored: Params = rmp_serde::from_slice(&solo.get("params").unwrap()).unwrap();
        let record = solo.json("txi/0");
        if accepted {
            assert_eq!(stored, params, "{what}");
            assert!(record["err"].is_string(), "{what}: {record}");
        } else {
            assert_eq!(stored, Params::default(), "{what}");
            assert_eq!(record["err"], Value::Null, "{what}: {record}");
            assert_eq!(solo.json("msgl"), json!(1), "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Determinism across nodes, replay and archives
// ---------------------------------------------------------------------------------------------

/// Builds the signed ops of a simulated subnet (deterministic nonces, one far expiry).
struct Workload {
    id: Hash32,
    nonce: u64,
}

impl Workload {
    /// Heights of the simulations stay far below it.
    const EXPIRY: u64 = 50_000;

    fn signed(&mut self, keypair: &Keypair, action: Action) -> Vec<u8> {
        self.nonce += 1;
        signed_for(&self.id, keypair, action, self.nonce, Self::EXPIRY)
    }

    fn admin(&mut self, action: Action) -> Vec<u8> {
        self.signed(&creator(), action)
    }

    fn tx(&self, requester: &Keypair, tx: u8, function: &str, args: &[u8]) -> Vec<u8> {
        settled_tx(&self.id, &requester.public(), txh(tx), function, args)
    }

    fn deploy(&self, component: &[u8]) -> Vec<Vec<u8>> {
        deploy_ops(
            &trac_host::subnet::OpSigner::new(creator(), self.id),
            component,
            Self::EXPIRY,
        )
    }
}

/// Runs a mixed workload on three subnet nodes (node 0 the creator; nodes 1 and 2 added as
/// indexers) over a lossy network: chat, moderation, features, txs, an upgrade to the
/// registry mid-log, a sequencer change and a removed writer. Returns the converged network.
fn run_subnet_workload(seed: u64) -> Sim<SubnetMachine> {
    let mut sim = subnet_sim(3, NetConfig::reliable(), seed);
    let mut w = Workload {
        id: sim.network(),
        nonce: 0,
    };
    let (users, nil) = ([key(10), key(11), key(12)], [0xc0]);

    // Creation, chat, two more indexers.
    let mut ops = vec![Solo::add_admin_op()];
    ops.push(w.admin(Action::SetMsbTrust {
        network: MSB_NETWORK,
        indexers: vec![msb_indexer().public()],
        scheme: SettlementScheme::Attested,
    }));
    ops.extend(w.deploy(INTERCOM));
    ops.push(w.admin(Action::SetChatStatus { enabled: true }));
    ops.push(w.admin(Action::AddIndexer {
        key: key(2).public(),
    }));
    ops.push(w.admin(Action::AddIndexer {
        key: key(3).public(),
    }));
    sim.append(0, ops);
    sim.await_consistency(50);
    let indexers: Vec<String> = (1..=3).map(|i| hex(&key(i))).collect();
    for i in 0..3 {
        let stored = sim.get(i, true, "sys/indexers").expect("indexers");
        let stored: Vec<String> = rmp_serde::from_slice(&stored).unwrap();
        assert_eq!(stored, indexers, "node {i}");
    }

    // Everyone writes at once, over a lossy network.
    sim.net = NetConfig::lossy();
    let op = w.signed(&users[0], post("hello from node 1"));
    let nick = w.signed(
        &users[0],
        Action::SetNick {
            user: users[0].public(),
            nick: "ten".into(),
        },
    );
    sim.append(
        1,
        vec![op, nick, w.tx(&users[1], 1, "storeSomething", &nil)],
    );
    let op = w.signed(&users[1], post("hello from node 2"));
    let args = msgpack(json!({"op": "do_something", "some_key": "k"}));
    sim.append(2, vec![op, w.tx(&users[2], 2, "submitSomething", &args)]);
    let set_mod = w.admin(Action::SetMod {
        user: users[0].public(),
        enabled: true,
    });
    let timer = w.admin(Action::Feature {
        feature: "timer".into(),
        key: "currentTime".into(),
        value: serde_bytes::ByteBuf::from(msgpack(json!(42))),
    });
    sim.append(0, vec![set_mod, timer]);
    for round in 0..6u8 {
        for (node, author) in users.iter().enumerate() {
            let op = w.signed(author, post(&format!("round {round} from node {node}")));
            let tx = w.tx(author, 10 + round * 3 + node as u8, "storeSomething", &nil);
            sim.append(node, vec![op, tx]);
        }
        sim.tick();
        sim.deliver_some(40);
    }
    sim.await_consistency(200);
    let pin = w.signed(
        &users[0],
        Action::PinMessage {
            id: 1,
            pinned: true,
        },
    );
    let delete = w.admin(Action::DeleteMessage { id: 0 });
    sim.append(1, vec![pin]);
    sim.append(2, vec![delete]);

    // The upgrade, with txs racing it, then txs certainly after it.
    let claim = |name: &str| msgpack(json!({"name": name, "target": "somewhere"}));
    sim.append(0, w.deploy(REGISTRY));
    sim.append(1, vec![w.tx(&users[0], 40, "claim", &claim("racer"))]);
    sim.append(2, vec![w.tx(&users[1], 41, "storeSomething", &nil)]);
    sim.await_consistency(200);
    sim.append(2, vec![w.tx(&users[2], 42, "claim", &claim("bob"))]);
    sim.append(1, vec![w.tx(&users[0], 43, "storeSomething", &nil)]);
    sim.await_consistency(200);

    // A node crashes while the others go on (two of three indexers are a majority), then
    // restarts with a fresh machine (no contract loaded) and catches up.
    sim.crash(2);
    let op = w.signed(&users[0], post("while node 2 is down"));
    sim.append(1, vec![op, w.tx(&users[0], 44, "claim", &claim("carol"))]);
    sim.await_consistency(200);
    sim.restart(2);
    let op = w.signed(&users[2], post("node 2 is back"));
    sim.append(2, vec![op]);
    sim.await_consistency(200);

    // Node 1 becomes the sequencer; node 2 is demoted, then removed.
    let op = w.admin(Action::SetSequencer {
        key: key(2).public(),
    });
    sim.append(0, vec![op]);
    sim.await_consistency(200);
    let op = w.signed(&users[1], post("under a new sequencer"));
    sim.append(2, vec![op]);
    let op = w.admin(Action::RemoveIndexer {
        key: key(3).public(),
    });
    sim.append(0, vec![op]);
    sim.await_consistency(200);
    let op = w.admin(Action::RemoveWriter {
        key: key(3).public(),
    });
    sim.append(1, vec![op]);
    sim.await_consistency(200);
    let op = w.signed(&users[2], post("from a removed writer"));
    sim.append(2, vec![op]);
    let op = w.signed(&users[0], post("the last word"));
    sim.append(0, vec![op]);
    sim.await_consistency(200);
    sim
}

#[test]
fn three_nodes_apply_a_mixed_workload_identically() {
    for seed in 21..25 {
        three_nodes_check(seed);
    }
}

fn three_nodes_check(seed: u64) {
    let mut sim = run_subnet_workload(seed);
    assert_eq!(sim.errors, Vec::new(), "an honest run has no errors");
    let reference = sim.snapshot(0);
    assert_eq!(reference.status.divergence, None);
    assert_eq!(reference.unconfirmed_root, reference.status.final_root);
    for i in 1..3 {
        assert_eq!(
            sim.status(i),
            reference.status,
            "seed {seed}: node {i} status"
        );
        assert_eq!(
            sim.snapshot(i),
            reference,
            "seed {seed}: node {i} differs from node 0"
        );
    }
    assert!(reference.status.skipped >= 1, "the removed writer's entry");

    let json_at = |sim: &mut Sim<SubnetMachine>, key: &str| {
        sim.get(0, true, key)
            .map(|b| trac_host::codec::json::msgpack_to_json(&b).unwrap())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        json_at(&mut sim, "contract/current")["name"],
        json!("registry")
    );
    assert_eq!(json_at(&mut sim, "contract/historyl"), json!(2));
    assert_eq!(json_at(&mut sim, "currentTime"), json!(42));
    assert_eq!(json_at(&mut sim, "kcin/ten"), json!(hex(&key(10))));
    assert_eq!(json_at(&mut sim, "name/bob")["owner"], json!(hex(&key(12))));
    assert_eq!(json_at(&mut sim, "msg/0")["msg"], Value::Null, "deleted");
    assert_eq!(json_at(&mut sim, "msg/1")["pinned"], json!(true));
    // 2 + 18 + 2 + 2 posts applied; the removed writer's post was skipped.
    assert_eq!(json_at(&mut sim, "msgl"), json!(24));
    assert_eq!(json_at(&mut sim, "txl"), json!(25));
    assert_eq!(
        json_at(&mut sim, "name/carol")["owner"],
        json!(hex(&key(10)))
    );
    assert_eq!(
        json_at(&mut sim, "sys/indexers"),
        json!([hex(&key(2)), hex(&key(1))])
    );
    let height = sim.status(0).final_height;
    let last = sim.ledger(0).checkpoint(height).unwrap().unwrap();
    assert_eq!(last.body.sequencer, key(2).public());
    // Txs after the upgrade ran on the registry.
    for (tx, ok) in [(42, true), (43, false)] {
        let n = json_at(&mut sim, &format!("tx/{}", txh(tx).to_hex()));
        let record = json_at(&mut sim, &format!("txi/{n}"));
        if ok {
            assert_eq!(record["err"], Value::Null, "{record}");
        } else {
            assert!(
                record["err"]
                    .as_str()
                    .is_some_and(|e| e.contains("unknown function")),
                "{record}"
            );
        }
    }
}

#[test]
fn a_subnet_log_replays_and_round_trips_through_an_archive() {
    use trac_host::ledger::archive::{ArchiveReader, export};
    use trac_host::ledger::replay::{ReplayOptions, replay};
    use trac_host::ledger::{Ledger, LedgerLimits};

    let mut sim = run_subnet_workload(5);
    let network = sim.network();
    let status = sim.status(0);
    let confirmed = sim.snapshot(0).confirmed;

    // Replay every node's store into a fresh one, signatures checked.
    for i in 0..3 {
        let source = sim.ledger(i).store().clone();
        let dir = tempfile::tempdir().unwrap();
        let target = open_store(dir.path());
        let mut heights = Vec::new();
        let report = replay(
            &source,
            &network,
            &machine(),
            &target,
            &ReplayOptions {
                verify_signatures: true,
                ..ReplayOptions::default()
            },
            &mut |p| heights.push(p.height),
        )
        .unwrap();
        assert_eq!(report.divergence, None, "node {i}");
        assert_eq!(report.height, status.final_height);
        assert_eq!(report.root, status.final_root);
        assert_eq!(report.ops, status.position);
        assert_eq!(report.skipped, status.skipped);
        assert_eq!(heights, (1..=status.final_height).collect::<Vec<_>>());
        let replayed = target
            .read()
            .unwrap()
            .state_range(&[], None, usize::MAX)
            .unwrap();
        assert_eq!(replayed, confirmed, "node {i}: replayed state");
    }

    // A machine of another subnet computes other roots: the replay says where.
    let source = sim.ledger(0).store().clone();
    let dir = tempfile::tempdir().unwrap();
    let other = trac_host::subnet::SubnetGenesis {
        salt: [8; 16],
        ..crate::subnet_support::genesis()
    };
    let report = replay(
        &source,
        &network,
        &SubnetMachine::standard(other, runtime()),
        &open_store(dir.path()),
        &ReplayOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let divergence = report.divergence.expect("diverges");
    assert_eq!(divergence.height, 1);
    assert_eq!(divergence.first_position, 0);

    // Export node 0's log, feed it to a fresh read-only node.
    let genesis_bytes = trac_host::codec::encode(&crate::subnet_support::genesis());
    let mut archive = Vec::new();
    let stats = export(&source, &network, &genesis_bytes, &mut archive).unwrap();
    assert_eq!(stats.checkpoints, status.final_height);
    assert_eq!(stats.entries, status.entries);
    let reader = ArchiveReader::new(archive.as_slice()).unwrap();
    assert_eq!(reader.header().network, network);
    assert_eq!(reader.header().final_height, status.final_height);
    let genesis: trac_host::subnet::SubnetGenesis =
        trac_host::codec::decode(&reader.header().genesis).unwrap();
    assert_eq!(genesis, crate::subnet_support::genesis());
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = Ledger::open(
        open_store(dir.path()),
        SubnetMachine::standard(genesis, runtime()),
        network,
        None,
        LedgerLimits::default(),
    )
    .unwrap();
    let mut messages = 0;
    for message in reader {
        fresh.handle(message.unwrap()).unwrap();
        messages += 1;
    }
    assert_eq!(messages, stats.entries + stats.checkpoints + stats.acks);
    let imported = fresh.status();
    assert_eq!(imported.final_height, status.final_height);
    assert_eq!(imported.final_root, status.final_root);
    assert_eq!(imported.position, status.position);
    assert_eq!(imported.skipped, status.skipped);
    assert_eq!(imported.entries, status.entries);
    assert_eq!(imported.divergence, None);
    let state = fresh
        .read(true, |s| s.range(b"", None, usize::MAX).unwrap())
        .unwrap();
    assert_eq!(state, confirmed);
}
