//! The line editor: rustyline (line editing, history in a file) on a terminal, plain lines
//! from standard input otherwise.
//!
//! [`Editor::read_line`] blocks until a line is entered: run it on a blocking thread (for
//! example `tokio::task::spawn_blocking` or a dedicated `std::thread`) and send the lines to the
//! node over a channel, never on a runtime worker thread.

use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};

/// Most history entries kept.
pub const HISTORY_SIZE: usize = 1000;

enum Input {
    Tty(Box<DefaultEditor>),
    Lines(io::Stdin),
}

/// Reads terminal lines (see the module documentation).
pub struct Editor {
    input: Input,
    history: Option<PathBuf>,
}

impl Editor {
    /// An editor keeping its history in `history` (loaded now if it exists, saved after each
    /// line; `None`: no history file). When standard input is not a terminal, lines are read
    /// as they come, without prompt or history.
    pub fn new(history: Option<PathBuf>) -> io::Result<Editor> {
        if !io::stdin().is_terminal() {
            return Ok(Editor {
                input: Input::Lines(io::stdin()),
                history: None,
            });
        }
        let config = Config::builder()
            .max_history_size(HISTORY_SIZE)
            .map_err(to_io)?
            .history_ignore_space(true)
            .auto_add_history(false)
            .build();
        let mut editor = DefaultEditor::with_config(config).map_err(to_io)?;
        if let Some(path) = &history
            && path.exists()
        {
            editor.load_history(path).map_err(to_io)?;
        }
        Ok(Editor {
            input: Input::Tty(Box::new(editor)),
            history,
        })
    }

    /// Whether lines come from an interactive terminal.
    pub fn is_interactive(&self) -> bool {
        matches!(self.input, Input::Tty(_))
    }

    /// The next line, without its line ending; `None` at end of input (Ctrl-D), on Ctrl-C
    /// (which stops the node as it would outside the editor) or when input fails.
    pub fn read_line(&mut self, prompt: &str) -> Option<String> {
        match &mut self.input {
            Input::Lines(stdin) => {
                let mut line = String::new();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => {
                        let trimmed = line.trim_end_matches(['\n', '\r']).len();
                        line.truncate(trimmed);
                        Some(line)
                    }
                }
            }
            Input::Tty(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty()
                        && editor.add_history_entry(line.as_str()).is_ok()
                        && let Some(path) = &self.history
                    {
                        // History is a convenience: failing to save it must not stop the node.
                        let _ = editor.save_history(path);
                    }
                    Some(line)
                }
                Err(ReadlineError::Eof | ReadlineError::Interrupted) => None,
                Err(_) => None,
            },
        }
    }
}

fn to_io(error: ReadlineError) -> io::Error {
    match error {
        ReadlineError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
