//! The subnet state machine: system ops, chat, contract deployment and transactions.

use serde_json::json;
use trac_host::bundled;
use trac_host::crypto::Hash32;
use trac_host::subnet::Action;

use crate::subnet_support::{Solo, key};

#[test]
fn creation_deploys_the_app_and_a_tx_applies() {
    let mut solo = Solo::new();
    solo.create(bundled::INTERCOM);
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
