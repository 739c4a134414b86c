//! The interactive terminal's command layer: the commands of the reference peer's terminal
//! (`reference/trac-peer.md` §5, `reference/intercom.md` §2.6, with the sidechannel commands)
//! parsed into a typed [`Command`], the help text, output sanitising and the line editor. It does not depend on the node: the node implements [`Executor`].
//!
//! Fixed against the reference: names are matched exactly (no prefix matching), `--k=v` works,
//! a bare flag never shifts the pairs after it, and a flag that needs a value is an error
//! without one (`/post --message` never posts "null").
//!
//! - [`parse`]: the flag grammar;
//! - [`commands`]: the built-ins, their usage lines and [`help_text`];
//! - [`sanitize`](mod@sanitize): making remote text safe to print;
//! - [`editor`]: the line editor (runs on a blocking thread).

pub mod commands;
pub mod editor;
pub mod parse;
pub mod sanitize;

pub use commands::{BUILTINS, Command, CommandError, Spec, builtin, help_text, parse_key};
pub use editor::Editor;
pub use sanitize::{sanitize, sanitize_block, sanitize_with_limit};

/// What runs commands: implemented by the node.
///
/// `execute` is synchronous; a node whose work is async can instead call [`Command::parse`],
/// run the command itself and print [`failure`] or [`sanitize_block`]ed output, as
/// [`dispatch`] does.
pub trait Executor {
    /// Runs a command other than `/help` (which [`dispatch`] answers from
    /// [`Executor::app_commands`]) and returns its output, or the failure message. `/exit` is
    /// passed on so that the node can stop; [`Command::App`] goes to the app's run-command.
    fn execute(&mut self, command: Command) -> Result<String, String>;

    /// The app's terminal commands as `(name, usage, help)`.
    fn app_commands(&self) -> Vec<(String, String, String)>;
}

/// The result of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What to print (possibly empty; no trailing newline needed).
    pub text: String,
    /// `/exit` was run: stop reading lines.
    pub exit: bool,
}

/// `Command failed: <message>` with the message sanitised (it may come from the network).
pub fn failure(message: &str) -> String {
    format!("Command failed: {}", sanitize_block(message))
}

/// What one line gave, before it is turned into printed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The command's output (unsanitised), or why it failed (a parse error with its usage
    /// line, or the command's failure message).
    pub result: Result<String, String>,
    /// `/exit` was run.
    pub exit: bool,
}

/// Parses `line` and runs it on `executor`: the one dispatcher behind the terminal
/// ([`dispatch`]) and the SC-Bridge's `cli` messages. Blank lines give empty output;
/// `/help` gives [`help_text`]; `/exit` is passed on and sets [`Outcome::exit`].
pub fn run_line<E: Executor + ?Sized>(line: &str, executor: &mut E) -> Outcome {
    let done = |result: Result<String, String>| Outcome {
        result,
        exit: false,
    };
    if line.trim().is_empty() {
        return done(Ok(String::new()));
    }
    let command = match Command::parse(line) {
        Ok(command) => command,
        Err(error) => return done(Err(error.to_string())),
    };
    match command {
        Command::Help => {
            let app = executor.app_commands();
            let app: Vec<(&str, &str, &str)> = app
                .iter()
                .map(|(n, u, h)| (n.as_str(), u.as_str(), h.as_str()))
                .collect();
            done(Ok(help_text(&app)))
        }
        Command::Exit => Outcome {
            result: executor.execute(Command::Exit),
            exit: true,
        },
        command => done(executor.execute(command)),
    }
}

/// Parses `line` and runs it on `executor` ([`run_line`]) and formats the reply: bad input
/// gives `Command failed: <why>` and the usage line; `/exit` adds `Exiting...` and sets
/// [`Reply::exit`]. Command output is printed through [`sanitize_block`].
pub fn dispatch<E: Executor + ?Sized>(line: &str, executor: &mut E) -> Reply {
    let outcome = run_line(line, executor);
    let text = match (outcome.result, outcome.exit) {
        (Ok(out), false) => sanitize_block(&out),
        (Err(message), false) => failure(&message),
        (Ok(out), true) if !out.is_empty() => format!("{}\nExiting...", sanitize_block(&out)),
        (Ok(_), true) => "Exiting...".to_string(),
        (Err(message), true) => format!("{}\nExiting...", failure(&message)),
    };
    Reply {
        text,
        exit: outcome.exit,
    }
}
