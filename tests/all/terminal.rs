//! The terminal's command layer: flag grammar, typed commands, help, sanitising, dispatch.

use std::path::PathBuf;

use trac_host::crypto::{Keypair, PublicKey};
use trac_host::msb::ops::parse_amount;
use trac_host::terminal::parse::{Line, tokenize};
use trac_host::terminal::{
    BUILTINS, Command, Executor, builtin, dispatch, help_text, sanitize, sanitize_block,
    sanitize_with_limit,
};

fn key(seed: u8) -> PublicKey {
    Keypair::from_seed(&[seed; 32]).public()
}

fn parse(line: &str) -> Command {
    Command::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Parses `template` with `{}` pairs written both as `--k v` and `--k=v` and checks both.
fn both(name: &str, pairs: &[(&str, &str)], expected: Command) {
    let spaced: String = pairs
        .iter()
        .map(|(k, v)| format!(" --{k} {}", quote(v)))
        .collect();
    let equals: String = pairs
        .iter()
        .map(|(k, v)| format!(" --{k}={}", quote(v)))
        .collect();
    assert_eq!(
        parse(&format!("{name}{spaced}")),
        expected,
        "{name}{spaced}"
    );
    assert_eq!(
        parse(&format!("{name}{equals}")),
        expected,
        "{name}{equals}"
    );
}

fn quote(v: &str) -> String {
    if v.contains(' ') || v.is_empty() {
        format!("\"{v}\"")
    } else {
        v.to_string()
    }
}

fn usage_error(line: &str) -> String {
    let err = Command::parse(line).expect_err(line);
    let usage = err
        .usage
        .unwrap_or_else(|| panic!("{line}: no usage line in {err}"));
    let text = err.to_string();
    assert!(text.ends_with(&format!("Usage: {usage}")), "{text}");
    let name = line.split_whitespace().next().unwrap();
    assert!(usage.starts_with(name), "{usage}");
    text
}

#[test]
fn every_command_parses_with_both_flag_forms() {
    let k = key(1);
    let hex = k.to_hex();
    let addr = k.address();
    both(
        "/add_admin",
        &[("address", &hex)],
        Command::AddAdmin { address: k },
    );
    both(
        "/add_admin",
        &[("address", &addr)],
        Command::AddAdmin { address: k },
    );
    both(
        "/update_admin",
        &[("address", &hex)],
        Command::UpdateAdmin { address: Some(k) },
    );
    both(
        "/update_admin",
        &[("address", "null")],
        Command::UpdateAdmin { address: None },
    );
    both(
        "/add_writer",
        &[("key", &hex)],
        Command::AddWriter { key: k },
    );
    both(
        "/add_indexer",
        &[("key", &addr)],
        Command::AddIndexer { key: k },
    );
    both(
        "/remove_writer",
        &[("key", &hex)],
        Command::RemoveWriter { key: k },
    );
    both(
        "/remove_indexer",
        &[("key", &hex)],
        Command::RemoveIndexer { key: k },
    );
    both(
        "/set_auto_add_writers",
        &[("enabled", "1")],
        Command::SetAutoAddWriters { enabled: true },
    );
    both(
        "/enable_transactions",
        &[("enabled", "false")],
        Command::EnableTransactions { enabled: false },
    );
    both(
        "/set_chat_status",
        &[("enabled", "true")],
        Command::SetChatStatus { enabled: true },
    );
    both(
        "/post",
        &[("message", "hello world"), ("reply_to", "3")],
        Command::Post {
            message: "hello world".into(),
            reply_to: Some(3),
        },
    );
    both(
        "/set_nick",
        &[("nick", "alice"), ("user", &hex)],
        Command::SetNick {
            nick: "alice".into(),
            user: Some(k),
        },
    );
    both(
        "/mute_status",
        &[("user", &hex), ("muted", "1")],
        Command::MuteStatus {
            user: k,
            muted: true,
        },
    );
    both(
        "/set_mod",
        &[("user", &addr), ("mod", "0")],
        Command::SetMod {
            user: k,
            enabled: false,
        },
    );
    both(
        "/delete_message",
        &[("id", "7")],
        Command::DeleteMessage { id: 7 },
    );
    both(
        "/pin_message",
        &[("id", "7"), ("pin", "0")],
        Command::PinMessage {
            id: 7,
            pinned: false,
        },
    );
    both(
        "/unpin_message",
        &[("pin_id", "2")],
        Command::UnpinMessage { pin_id: 2 },
    );
    both(
        "/enable_whitelist",
        &[("enabled", "1")],
        Command::EnableWhitelist { enabled: true },
    );
    both(
        "/set_whitelist_status",
        &[("user", &hex), ("status", "1")],
        Command::SetWhitelistStatus {
            user: k,
            status: true,
        },
    );
    both(
        "/tx",
        &[("command", "ping hello"), ("sim", "1")],
        Command::Tx {
            command: "ping hello".into(),
            sim: true,
        },
    );
    both(
        "/get",
        &[("key", "txl"), ("confirmed", "false")],
        Command::Get {
            key: "txl".into(),
            confirmed: false,
        },
    );
    both(
        "/deploy_contract",
        &[("file", "my dir/app.wasm")],
        Command::DeployContract {
            file: PathBuf::from("my dir/app.wasm"),
        },
    );
    both(
        "/transfer",
        &[("to", &addr), ("amount", "1.5")],
        Command::Transfer {
            to: k,
            amount: parse_amount("1.5").unwrap(),
        },
    );
    both(
        "/balance",
        &[("address", &addr)],
        Command::Balance { address: Some(k) },
    );
    both(
        "/msb_add_whitelist",
        &[("address", &addr)],
        Command::MsbAddWhitelist { address: k },
    );
    both(
        "/msb_add_indexer",
        &[("address", &hex)],
        Command::MsbAddIndexer { address: k },
    );
    both(
        "/msb_remove_indexer",
        &[("address", &addr)],
        Command::MsbRemoveIndexer { address: k },
    );
    both(
        "/msb_remove_validator",
        &[("address", &addr)],
        Command::MsbRemoveValidator { address: k },
    );
    for (line, command) in [
        ("/deploy_subnet", Command::DeploySubnet),
        ("/msb", Command::Msb),
        ("/balance", Command::Balance { address: None }),
        ("/msb_join_validators", Command::MsbJoinValidators),
        ("/msb_leave_validators", Command::MsbLeaveValidators),
        ("/stats", Command::Stats),
        ("/get_keys", Command::GetKeys),
        ("/help", Command::Help),
        ("/exit", Command::Exit),
    ] {
        assert_eq!(parse(line), command);
        assert_eq!(parse(&format!("  {line}  ")), command);
    }
}

#[test]
fn every_builtin_has_a_parser_and_its_name_round_trips() {
    let k = key(2).to_hex();
    for spec in BUILTINS {
        assert!(spec.usage.starts_with(spec.name), "{}", spec.usage);
        // A line with every flag of the spec given a plausible value parses or fails with the
        // usage line, but never panics; the parsed command reports its name back.
        let line: String = spec
            .flags
            .iter()
            .map(|f| {
                let v = match *f {
                    "address" | "key" | "user" | "to" | "owner" | "pubkey" => k.clone(),
                    "amount" | "ttl" => "1".into(),
                    "id" | "reply_to" | "pin_id" => "1".into(),
                    "enabled" | "muted" | "mod" | "status" | "pin" | "sim" | "confirmed" => {
                        "1".into()
                    }
                    "unconfirmed" => "0".into(),
                    _ => "text".into(),
                };
                format!(" --{f} {v}")
            })
            .collect();
        let command = parse(&format!("{}{line}", spec.name));
        assert_eq!(command.name(), spec.name);
        assert_eq!(command.spec(), Some(spec));
    }
}

#[test]
fn bare_flags_are_true_and_do_not_shift_pairs() {
    assert_eq!(
        parse("/tx --sim --command \"ping x\""),
        Command::Tx {
            command: "ping x".into(),
            sim: true,
        }
    );
    assert_eq!(
        parse("/get --unconfirmed --key k"),
        Command::Get {
            key: "k".into(),
            confirmed: false,
        }
    );
    assert_eq!(
        parse("/get --key k"),
        Command::Get {
            key: "k".into(),
            confirmed: true,
        }
    );
    assert_eq!(
        parse("/set_chat_status --enabled"),
        Command::SetChatStatus { enabled: true }
    );
    assert_eq!(
        parse("/pin_message --id 4"),
        Command::PinMessage {
            id: 4,
            pinned: true,
        }
    );
    assert!(Command::parse("/get --key k --confirmed 1 --unconfirmed").is_err());
}

#[test]
fn matching_is_exact() {
    assert_eq!(
        parse("/txfoo --command x"),
        Command::App {
            name: "/txfoo".into(),
            args: vec!["--command".into(), "x".into()],
        }
    );
    assert_eq!(
        parse("/gets --key k"),
        Command::App {
            name: "/gets".into(),
            args: vec!["--key".into(), "k".into()],
        }
    );
    assert!(matches!(parse("/stat"), Command::App { .. }));
    assert!(matches!(parse("/TX --command x"), Command::App { .. }));
    assert!(builtin("/tx").is_some());
    assert!(builtin("/t").is_none());
    assert!(builtin("tx").is_none());
}

#[test]
fn app_commands_keep_their_tokens() {
    assert_eq!(
        parse("/print --text \"hello there\" 'a b' --x=1"),
        Command::App {
            name: "/print".into(),
            args: vec![
                "--text".into(),
                "hello there".into(),
                "a b".into(),
                "--x=1".into()
            ],
        }
    );
    assert_eq!(
        parse("hello"),
        Command::App {
            name: "hello".into(),
            args: vec![],
        }
    );
}

#[test]
fn quoted_values() {
    assert_eq!(
        parse(r#"/post --message "say \"hi\" \\ there""#),
        Command::Post {
            message: r#"say "hi" \ there"#.into(),
            reply_to: None,
        }
    );
    assert_eq!(
        parse("/post --message 'it is \"quoted\"'"),
        Command::Post {
            message: "it is \"quoted\"".into(),
            reply_to: None,
        }
    );
    assert_eq!(
        parse("/post --message=\"a  b\""),
        Command::Post {
            message: "a  b".into(),
            reply_to: None,
        }
    );
    // A quoted value that looks like a flag is a value.
    assert_eq!(
        parse("/post --message \"--not-a-flag\""),
        Command::Post {
            message: "--not-a-flag".into(),
            reply_to: None,
        }
    );
    // `=` inside a --k=v value is part of the value.
    assert_eq!(
        parse("/tx --command=set=1"),
        Command::Tx {
            command: "set=1".into(),
            sim: false,
        }
    );
    assert!(Command::parse("/post --message \"open").is_err());
    assert!(Command::parse("/post --message 'open").is_err());
    let tokens = tokenize("a \"b c\"d 'e'").unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
        ["a", "b cd", "e"]
    );
    assert!(!tokens[0].quoted && tokens[1].quoted && tokens[2].quoted);
    let line = Line::parse("/x --a --b=2 --c 3 pos").unwrap();
    assert_eq!(line.flag("a"), Some(None));
    assert_eq!(line.flag("b"), Some(Some("2")));
    assert_eq!(line.flag("c"), Some(Some("3")));
    assert_eq!(line.positional, ["pos"]);
}

#[test]
fn post_without_a_message_value_is_an_error() {
    for line in [
        "/post --message",
        "/post --message --reply_to 1",
        "/post",
        "/post --message \"\"",
        "/post --message=",
    ] {
        let text = usage_error(line);
        assert!(text.contains("--message"), "{text}");
        assert!(!text.contains("null"), "{text}");
    }
}

#[test]
fn bad_values_give_the_usage_line() {
    let hex = key(3).to_hex();
    for line in [
        "/add_writer",
        "/add_writer --key",
        "/add_writer --key abc",
        "/add_writer --key zz",
        &format!("/add_writer --key {hex} --extra 1"),
        &format!("/add_writer --key {hex} stray"),
        &format!("/add_writer --key {hex} --key {hex}"),
        "/add_admin --address trac1qqqq",
        "/update_admin --address nul",
        "/set_auto_add_writers --enabled yes",
        "/set_auto_add_writers",
        "/post --message hi --reply_to x",
        "/post --message hi --reply_to -1",
        "/delete_message --id 1.5",
        "/unpin_message --pin_id",
        "/mute_status --user",
        &format!("/mute_status --user {hex}"),
        "/tx",
        "/tx --command",
        "/tx --command x --sim 2",
        "/get",
        "/get --key k --confirmed maybe",
        "/deploy_contract",
        "/deploy_contract --file",
        "/transfer --to x --amount 1",
        &format!("/transfer --to {hex}"),
        &format!("/transfer --to {hex} --amount 1.2.3"),
        &format!("/transfer --to {hex} --amount -1"),
        "/balance --address nope",
        "/msb_add_whitelist",
        "/msb_join_validators --now",
        "/stats extra",
        "/exit --force",
        "/help me",
    ] {
        usage_error(line);
    }
    // An all-zero key is not a valid public key.
    let zero = "00".repeat(32);
    let text = usage_error(&format!("/add_writer --key {zero}"));
    assert!(text.contains("not a valid public key"), "{text}");
}

#[test]
fn sanitize_strips_escapes_and_controls() {
    assert_eq!(sanitize("\x1b[31mred\x1b[0m text"), "red text");
    assert_eq!(sanitize("\x1b]0;title\x07after"), "after");
    assert_eq!(sanitize("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
    assert_eq!(sanitize("a\x1b[2J\x1b[Hb"), "ab");
    assert_eq!(sanitize("\u{9b}31mx"), "x");
    assert_eq!(sanitize("bell\x07 nul\0 del\x7f bs\x08"), "bell nul del bs");
    assert_eq!(
        sanitize("line1\nline2\r\nline3\tend"),
        "line1 line2 line3 end"
    );
    assert_eq!(sanitize("héllo 世界 🎉"), "héllo 世界 🎉");
    assert_eq!(sanitize("evil\u{202E}txt.exe"), "eviltxt.exe");
    assert_eq!(sanitize_block("a\r\nb\nc\x1b[1m"), "a\nb\nc");
    let long = "x".repeat(5000);
    let capped = sanitize(&long);
    assert_eq!(capped.chars().count(), 1025);
    assert!(capped.ends_with('…'));
    assert_eq!(sanitize_with_limit("abcdef", 3), "abc…");
    assert_eq!(sanitize_with_limit("abc", 3), "abc");
}

#[test]
fn help_lists_every_builtin_and_the_app_commands() {
    let help = help_text(&[
        ("/print", "/print --text <t>", "Prints the text."),
        ("/evil", "/evil \x1b[2J", "clears\nthe screen"),
        ("/tx", "/tx (app)", "shadowed"),
    ]);
    for spec in BUILTINS {
        assert!(help.contains(spec.usage), "{} missing", spec.usage);
        assert!(help.contains(spec.help), "{} missing", spec.help);
    }
    assert!(help.contains("App commands:"));
    assert!(help.contains("/print --text <t>"));
    assert!(help.contains("Prints the text."));
    assert!(help.contains("clears the screen"));
    assert!(!help.contains('\x1b'));
    assert!(!help.contains("/tx (app)"));
    assert!(!help_text(&[]).contains("App commands:"));
}

#[derive(Default)]
struct Recorder {
    seen: Vec<Command>,
}

impl Executor for Recorder {
    fn execute(&mut self, command: Command) -> Result<String, String> {
        let result = match &command {
            Command::Stats => Ok("--- Stats ---\n\x1b[31mroot\x1b[0m".to_string()),
            Command::App { name, .. } if name == "/print" => Ok("printed".to_string()),
            Command::App { name, .. } => Err(format!("Unknown command {name}")),
            _ => Ok(String::new()),
        };
        self.seen.push(command);
        result
    }

    fn app_commands(&self) -> Vec<(String, String, String)> {
        vec![(
            "/print".into(),
            "/print --text <t>".into(),
            "Prints the text.".into(),
        )]
    }
}

#[test]
fn dispatch_runs_commands_and_reports_failures() {
    let mut ex = Recorder::default();
    let r = dispatch("   ", &mut ex);
    assert_eq!((r.text.as_str(), r.exit), ("", false));
    let r = dispatch("/stats", &mut ex);
    assert_eq!(r.text, "--- Stats ---\nroot");
    let r = dispatch("/print --text hi", &mut ex);
    assert_eq!(r.text, "printed");
    let r = dispatch("/nope", &mut ex);
    assert_eq!(r.text, "Command failed: Unknown command /nope");
    let r = dispatch("/post --message", &mut ex);
    assert!(
        r.text
            .starts_with("Command failed: --message needs a value")
    );
    assert!(r.text.contains("Usage: /post --message"));
    let r = dispatch("/help", &mut ex);
    assert!(r.text.contains("/print --text <t>") && r.text.contains("/tx --command"));
    let r = dispatch("/exit", &mut ex);
    assert!(r.exit);
    assert_eq!(r.text, "Exiting...");
    assert_eq!(ex.seen.len(), 4, "{:?}", ex.seen);
    assert_eq!(ex.seen[3], Command::Exit);
}

#[test]
fn the_editor_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<trac_host::terminal::Editor>();
}

#[test]
fn sidechannel_commands_parse_with_their_flags() {
    let k = key(3);
    both(
        "/sc_join",
        &[
            ("channel", "room"),
            ("invite", "@inv.b64"),
            ("owner", &k.to_hex()),
        ],
        Command::ScJoin {
            channel: "room".into(),
            invite: Some("@inv.b64".into()),
            welcome: None,
            owner: Some(k),
        },
    );
    both(
        "/sc_send",
        &[("channel", "room"), ("message", "hello there")],
        Command::ScSend {
            channel: "room".into(),
            message: "hello there".into(),
            invite: None,
        },
    );
    both(
        "/sc_invite",
        &[("channel", "vip"), ("pubkey", &k.to_hex()), ("ttl", "60")],
        Command::ScInvite {
            channel: "vip".into(),
            pubkey: k,
            ttl: Some(60),
        },
    );
    both(
        "/sc_open",
        &[("channel", "new"), ("via", "0000intercom")],
        Command::ScOpen {
            channel: "new".into(),
            via: Some("0000intercom".into()),
            invite: None,
            welcome: None,
        },
    );
    assert_eq!(parse("/sc_stats"), Command::ScStats);
    assert!(usage_error("/sc_send --channel room").contains("missing --message"));
    assert!(usage_error("/sc_invite --channel vip --pubkey zz").contains("--pubkey"));
    assert!(usage_error("/sc_leave").contains("missing --channel"));
}
