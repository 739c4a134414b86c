//! The flag grammar of terminal lines: `/cmd --k v --k=v --bool`.
//!
//! A line is split into tokens like a shell does it: whitespace separates tokens, `"…"` quotes
//! with backslash escapes (`\"`, `\\`; any other backslash is kept), `'…'` quotes literally, and
//! quotes may appear inside a token (`--text="a b"`). The first token is the command; the rest
//! are flags:
//!
//! - `--k=v` gives `k` the value `v` (possibly empty);
//! - `--k v` gives `k` the value `v` when the next token is not itself an unquoted flag;
//! - `--k` alone (followed by another flag or the end of the line) is a *bare* flag.
//!
//! A value that starts with `--` must be quoted (`--message "--not a flag"`). Unlike the
//! reference, a bare flag never shifts the pairs after it, and a repeated flag is an error.

use std::fmt;

/// One token of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text with quotes and escapes resolved.
    pub text: String,
    /// Whether quoting began within its first two characters, so that its `--` (if any) is
    /// not a flag marker: `"--x"` is a value, while `--k="a b"` is still a flag.
    pub quoted: bool,
}

/// Why a line could not be tokenised or its flags read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyntaxError {}

/// Splits `line` into tokens (see the module documentation).
pub fn tokenize(line: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(tokens);
        }
        let mut text = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted |= text.chars().count() < 2;
                    loop {
                        match chars.next() {
                            None => return Err(SyntaxError("unterminated \" quote".into())),
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                None => return Err(SyntaxError("unterminated \" quote".into())),
                                Some(e @ ('"' | '\\')) => text.push(e),
                                Some(other) => {
                                    text.push('\\');
                                    text.push(other);
                                }
                            },
                            Some(other) => text.push(other),
                        }
                    }
                }
                '\'' => {
                    quoted |= text.chars().count() < 2;
                    loop {
                        match chars.next() {
                            None => return Err(SyntaxError("unterminated ' quote".into())),
                            Some('\'') => break,
                            Some(other) => text.push(other),
                        }
                    }
                }
                other => text.push(other),
            }
        }
        tokens.push(Token { text, quoted });
    }
}

/// A parsed line: the command name and its flags in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    /// The first token, e.g. `/tx` (empty for a blank line).
    pub name: String,
    /// The tokens after the name, quotes resolved (what an app's run-command receives).
    pub rest: Vec<String>,
    /// `(name, value)` pairs; `None` for a bare flag.
    pub flags: Vec<(String, Option<String>)>,
    /// Tokens that are neither flags nor flag values.
    pub positional: Vec<String>,
}

impl Line {
    /// Tokenises `line` and reads its flags.
    pub fn parse(line: &str) -> Result<Line, SyntaxError> {
        let tokens = tokenize(line)?;
        let mut iter = tokens.into_iter().peekable();
        let Some(first) = iter.next() else {
            return Ok(Line::default());
        };
        let mut out = Line {
            name: first.text,
            ..Line::default()
        };
        while let Some(token) = iter.next() {
            out.rest.push(token.text.clone());
            let flag = if token.quoted {
                None
            } else {
                token.text.strip_prefix("--")
            };
            let Some(flag) = flag else {
                out.positional.push(token.text);
                continue;
            };
            let (key, value) = match flag.split_once('=') {
                Some((key, value)) => (key.to_string(), Some(value.to_string())),
                None => {
                    let takes_next = iter
                        .peek()
                        .is_some_and(|next| next.quoted || !next.text.starts_with("--"));
                    let value = if takes_next {
                        let next = iter.next().expect("peeked");
                        out.rest.push(next.text.clone());
                        Some(next.text)
                    } else {
                        None
                    };
                    (flag.to_string(), value)
                }
            };
            if key.is_empty() {
                return Err(SyntaxError(format!("empty flag name in {:?}", token.text)));
            }
            if out.flags.iter().any(|(k, _)| *k == key) {
                return Err(SyntaxError(format!("--{key} given more than once")));
            }
            out.flags.push((key, value));
        }
        Ok(out)
    }

    /// The flag `key`: `None` if absent, `Some(None)` if bare, `Some(Some(v))` with a value.
    pub fn flag(&self, key: &str) -> Option<Option<&str>> {
        self.flags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }
}
