//! The per-client word filter of the SC-Bridge (reference `intercom.md` §4.5).
//!
//! The filter text is split on `|` into alternatives; each alternative is split on runs of
//! `+`, `,` or whitespace into words, lower-cased; empty alternatives are dropped. A message
//! matches when every word of some alternative occurs in its text (case-insensitive
//! substrings). An empty filter matches everything.

/// A parsed filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    raw: String,
    groups: Vec<Vec<String>>,
}

impl Filter {
    /// Parses `raw` (kept as given for the replies that echo it).
    pub fn parse(raw: &str) -> Filter {
        let groups = raw
            .split('|')
            .map(|group| {
                group
                    .split(|c: char| c == '+' || c == ',' || c.is_whitespace())
                    .filter(|word| !word.is_empty())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .filter(|words| !words.is_empty())
            .collect();
        Filter {
            raw: raw.to_string(),
            groups,
        }
    }

    /// The text it was parsed from.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether it matches everything.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        if self.groups.is_empty() {
            return true;
        }
        let text = text.to_lowercase();
        self.groups
            .iter()
            .any(|words| words.iter().all(|word| text.contains(word.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::Filter;

    #[test]
    fn alternatives_of_words() {
        let filter = Filter::parse("BTC+usd | eth,  sol");
        assert!(filter.matches("btc in USD"));
        assert!(filter.matches("SOL and eth"));
        assert!(!filter.matches("btc only"));
        assert!(!filter.matches("eth only"));
        assert_eq!(filter.raw(), "BTC+usd | eth,  sol");
    }

    #[test]
    fn empty_filters_match_everything() {
        for raw in ["", "  ", "|", " | + , "] {
            let filter = Filter::parse(raw);
            assert!(filter.is_empty(), "{raw:?}");
            assert!(filter.matches("anything"));
        }
    }

    #[test]
    fn words_are_substrings() {
        let filter = Filter::parse("ell");
        assert!(filter.matches("\"Hello\""));
        assert!(!filter.matches("help"));
    }
}
