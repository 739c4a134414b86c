//! Making text that came from the network safe to print on a terminal.
//!
//! Chat messages, nicks, contract output and error texts of remote origin may carry ANSI escape
//! sequences (cursor moves, screen clears, hyperlinks, window titles), other control characters
//! or bidirectional overrides that make the printed text lie about itself. Everything printed
//! from such a source goes through [`sanitize`] (one-line fields) or [`sanitize_block`]
//! (multi-line output).

/// Longest one-line field printed, in characters (longer ones are cut and end with `…`).
pub const MAX_FIELD_CHARS: usize = 1024;

/// Longest multi-line output printed, in characters.
pub const MAX_BLOCK_CHARS: usize = 64 * 1024;

/// A one-line field: escape sequences and control characters removed, newlines and tabs
/// turned into spaces, printable Unicode kept, at most [`MAX_FIELD_CHARS`] characters.
pub fn sanitize(text: &str) -> String {
    clean(text, false, MAX_FIELD_CHARS)
}

/// Like [`sanitize`] with another length cap (in characters).
pub fn sanitize_with_limit(text: &str, max_chars: usize) -> String {
    clean(text, false, max_chars)
}

/// Multi-line output: like [`sanitize`] but newlines are kept (`\r\n` and lone `\r` become
/// `\n`) and the cap is [`MAX_BLOCK_CHARS`].
pub fn sanitize_block(text: &str) -> String {
    clean(text, true, MAX_BLOCK_CHARS)
}

/// Bidirectional embedding, override and isolate characters (U+202A–U+202E, U+2066–U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn clean(text: &str, keep_newlines: bool, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let mut count = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let replacement = match c {
            '\u{1b}' => {
                skip_escape(&mut chars);
                continue;
            }
            // The 8-bit CSI introducer.
            '\u{9b}' => {
                skip_csi(&mut chars);
                continue;
            }
            '\r' => {
                chars.next_if_eq(&'\n');
                if keep_newlines { '\n' } else { ' ' }
            }
            '\n' => {
                if keep_newlines {
                    '\n'
                } else {
                    ' '
                }
            }
            '\t' => ' ',
            c if c.is_control() || is_bidi_control(c) => continue,
            c => c,
        };
        if count == max_chars {
            out.push('…');
            return out;
        }
        out.push(replacement);
        count += 1;
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Skips what follows an ESC: a CSI sequence, an OSC/DCS/SOS/PM/APC string, or one character.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | 'P' | 'X' | '^' | '_') => {
            // A string ended by BEL or ST (ESC \).
            while let Some(c) = chars.next() {
                match c {
                    '\u{7}' | '\u{9c}' => return,
                    '\u{1b}' => {
                        chars.next_if_eq(&'\\');
                        return;
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Skips a CSI sequence's parameter and intermediate bytes and its final byte.
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) || !(' '..='\u{7e}').contains(&c) {
            return;
        }
    }
}
