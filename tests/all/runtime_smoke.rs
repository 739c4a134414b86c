use std::sync::Arc;

use trac_host::runtime::{
    CallContext, CallFailure, CallRequest, Invocation, Limits, OpKind, ReservedKeys, Runtime,
    RuntimeConfig, TxCall,
};
use trac_host::store::{Store, StoreOptions};

use crate::wat_contract::WatContract;

#[test]
fn smoke() {
    let component = WatContract::new()
        .data(200, b"keyvalue")
        .body(
            "execute",
            "(call $put (i32.const 200) (i32.const 3) (i32.const 203) (i32.const 5) (i32.const 600)) (call $ok_empty)",
        )
        .build();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let contract = runtime.load(&component, &Limits::default()).unwrap();
    let info = runtime.describe(&contract).unwrap();
    println!("{info:?}");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let batch = store.write().unwrap();
    let outcome = runtime
        .execute(
            &contract,
            &CallRequest {
                view: &batch,
                context: CallContext::read_only(OpKind::Tx),
                reserved: Arc::new(ReservedKeys::none()),
            },
            &Invocation::Tx(TxCall {
                function: "x".into(),
                args: vec![],
            }),
        )
        .unwrap();
    println!("{outcome:?}");
    let looping = WatContract::new()
        .body("execute", "(loop $l (br $l)) (call $ok_empty)")
        .build();
    let contract = runtime.load(&looping, &Limits::default()).unwrap();
    let outcome = runtime
        .execute(
            &contract,
            &CallRequest {
                view: &batch,
                context: CallContext::read_only(OpKind::Tx),
                reserved: Arc::new(ReservedKeys::none()),
            },
            &Invocation::Tx(TxCall {
                function: "x".into(),
                args: vec![],
            }),
        )
        .unwrap();
    assert_eq!(outcome.result, Err(CallFailure::OutOfFuel));
    let recursive = WatContract::new()
        .extra("(func $rec (param i32) (result i32) (call $rec (local.get 0)))")
        .body(
            "execute",
            "(drop (call $rec (i32.const 1))) (call $ok_empty)",
        )
        .build();
    let contract = runtime.load(&recursive, &Limits::default()).unwrap();
    let outcome = runtime
        .execute(
            &contract,
            &CallRequest {
                view: &batch,
                context: CallContext::read_only(OpKind::Tx),
                reserved: Arc::new(ReservedKeys::none()),
            },
            &Invocation::Tx(TxCall {
                function: "x".into(),
                args: vec![],
            }),
        )
        .unwrap();
    println!("{outcome:?}");
    assert_eq!(outcome.result, Err(CallFailure::CallDepth));
}
