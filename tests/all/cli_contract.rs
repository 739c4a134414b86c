//! `trac contract inspect|exec` as a real process.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{tempdir, trac};
use crate::wat_contract::WatContract;

/// A contract that stores its tx arguments under key `k`, reads `k` back in a query, and loops
/// forever for a tx whose function name is 4 bytes long.
fn store_and_read() -> Vec<u8> {
    WatContract::new()
        .data(200, b"k")
        .body(
            "execute",
            "(if (i32.eq (local.get $b) (i32.const 4)) (then (loop $l (br $l))))
             (call $put (i32.const 200) (i32.const 1) (local.get $c) (local.get $d) (i32.const 600))
             (call $ok_empty)",
        )
        .body(
            "query",
            "(call $get (i32.const 200) (i32.const 1) (i32.const 600))
             (if (result i32) (i32.load8_u (i32.const 604))
               (then (call $ok_bytes (i32.load (i32.const 608)) (i32.load (i32.const 612))))
               (else (call $ok_empty)))",
        )
        .build()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write component");
    path
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn inspect_describes_an_accepted_component() {
    let dir = tempdir();
    let file = write(dir.path(), "c.wasm", &store_and_read());
    let out = trac(dir.path(), &["contract", "inspect", file.to_str().unwrap()]).run();
    let stdout = out.success();
    assert!(stdout.contains("verdict    accepted"), "{stdout}");
    assert!(stdout.contains("contract   wat-test 0.1.0"), "{stdout}");
    assert!(stdout.contains("trac:contract/state@0.1.0"), "{stdout}");

    let out = trac(
        dir.path(),
        &["contract", "inspect", "--json", file.to_str().unwrap()],
    )
    .run();
    let doc = json(out.success());
    assert_eq!(doc["verdict"], "accepted");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(doc["code_hash"], blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(doc["size"], bytes.len());
    assert!(
        doc["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "execute")
    );
}

#[test]
fn inspect_refuses_garbage_and_core_modules_with_exit_status_1() {
    let dir = tempdir();
    let garbage = write(dir.path(), "g.wasm", b"definitely not wasm");
    let out = trac(
        dir.path(),
        &["contract", "inspect", garbage.to_str().unwrap()],
    )
    .run();
    out.failure(1);
    assert!(out.stdout.contains("verdict    refused"), "{out:?}");

    let core = write(dir.path(), "m.wasm", &WatContract::new().core_module());
    let out = trac(
        dir.path(),
        &["contract", "inspect", "--json", core.to_str().unwrap()],
    )
    .run();
    out.failure(1);
    let doc = json(&out.stdout);
    assert_eq!(doc["verdict"], "refused");
    assert!(
        doc["reason"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module")
    );

    let missing = trac(dir.path(), &["contract", "inspect", "nope.wasm"]).run();
    assert!(missing.failure(1).contains("cannot read component"));
}

#[test]
fn exec_commits_writes_and_sim_writes_nothing() {
    let dir = tempdir();
    let file = write(dir.path(), "c.wasm", &store_and_read());
    let file = file.to_str().unwrap();
    let exec = |extra: &[&str]| {
        let mut args = vec!["contract", "exec", file, "--state", "state", "--json"];
        args.extend_from_slice(extra);
        trac(dir.path(), &args).run()
    };

    let sim = json(exec(&["--call", "store", "--args", r#"{"n": 7}"#, "--sim"]).success());
    assert_eq!(sim["committed"], false);
    assert_eq!(sim["writes"].as_array().unwrap().len(), 1);
    let empty_root = sim["state_root"].clone();
    let read = json(exec(&["--entry", "query", "--call", "get"]).success());
    assert_eq!(read["result"]["ok"], "", "sim must not write: {read}");

    let done = json(exec(&["--call", "store", "--args", r#"{"n": 7}"#]).success());
    assert_eq!(done["committed"], true);
    assert!(done["fuel_used"].as_u64().unwrap() > 0);
    assert_ne!(done["state_root"], empty_root);
    assert_eq!(done["writes"][0]["key"], "k");
    assert_eq!(done["writes"][0]["value"], serde_json::json!({"n": 7}));

    let read = json(exec(&["--entry", "query", "--call", "get"]).success());
    assert_eq!(read["result"]["ok"], serde_json::json!({"n": 7}));
    assert_eq!(read["state_root"], done["state_root"]);

    // Human output names result, fuel, writes and the state.
    let out = trac(
        dir.path(),
        &[
            "contract", "exec", file, "--state", "state", "--call", "store", "--args", "[1,2]",
            "--sim",
        ],
    )
    .run();
    let stdout = out.success();
    for needle in ["result     ok", "fuel       ", "writes     1", "simulated"] {
        assert!(stdout.contains(needle), "missing {needle:?} in {stdout}");
    }
}

#[test]
fn exec_reports_failures_and_bad_input_clearly() {
    let dir = tempdir();
    let file = write(dir.path(), "c.wasm", &store_and_read());
    let file = file.to_str().unwrap();

    let out = trac(
        dir.path(),
        &[
            "contract", "exec", file, "--state", "s", "--call", "spin", "--fuel", "100000",
            "--json",
        ],
    )
    .run();
    let stderr = out.failure(1);
    assert!(stderr.contains("out of fuel"), "{stderr}");
    let doc = json(&out.stdout);
    assert_eq!(doc["fuel_used"], 100_000);
    assert_eq!(doc["committed"], false);
    assert_eq!(doc["writes"].as_array().unwrap().len(), 0);

    let bad_json = trac(
        dir.path(),
        &[
            "contract", "exec", file, "--state", "s", "--call", "x", "--args", "{nope",
        ],
    )
    .run();
    assert!(bad_json.failure(1).contains("invalid --args"));
    let float = trac(
        dir.path(),
        &[
            "contract", "exec", file, "--state", "s", "--call", "x", "--args", "1.5",
        ],
    )
    .run();
    assert!(float.failure(1).contains("not an integer"));
    let sender = trac(
        dir.path(),
        &[
            "contract", "exec", file, "--state", "s", "--call", "x", "--sender", "trac1xyz",
        ],
    )
    .run();
    assert!(sender.failure(1).contains("invalid --sender"));
    let fuel = trac(
        dir.path(),
        &[
            "contract", "exec", file, "--state", "s", "--call", "x", "--fuel", "0",
        ],
    )
    .run();
    assert!(fuel.failure(1).contains("fuel"));
    let no_call = trac(dir.path(), &["contract", "exec", file, "--state", "s"]).run();
    no_call.failure(2);
}

#[test]
fn exec_uses_the_disk_cache() {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let file = write(dir.path(), "c.wasm", &store_and_read());
    let run = || {
        trac(
            dir.path(),
            &[
                "contract",
                "exec",
                file.to_str().unwrap(),
                "--state",
                "s",
                "--call",
                "store",
                "--sim",
            ],
        )
        .env("TRAC_CACHE_DIR", cache.to_str().unwrap())
        .run()
    };
    run().success();
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache dir created")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "one compiled artifact expected");
    run().success();
}

#[test]
fn build_refuses_a_directory_that_is_not_a_crate() {
    let dir = tempdir();
    let out = trac(dir.path(), &["contract", "build", "."]).run();
    let stderr = out.failure(1);
    assert!(stderr.contains("is not a contract crate"), "{stderr}");
    let bad = trac(
        dir.path(),
        &["contract", "build", ".", "--toolchain", "nope"],
    )
    .run();
    bad.failure(2);
}
