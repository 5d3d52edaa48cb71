//! Wildcard patterns over `server/name` pairs, for configs that name tools.
//!
//! A plugin is instantiated afresh for every call, so whatever it builds from
//! its config is rebuilt every time. These patterns need no compilation step
//! (unlike regular expressions or a glob-to-regex crate): matching walks the
//! pattern directly, in time linear in the name for the patterns people write.

use std::fmt;

/// A pattern for `server/name`: `*` matches any run of characters, `?` any
/// single character. Without a `/` the pattern applies to the name on every
/// server: `delete_*` is the same as `*/delete_*`. The server part ends at the
/// first `/`, so names may contain slashes (resource URIs do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    server: String,
    name: String,
    source: String,
}

/// Why a pattern was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pattern {:?}: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Parse `server/name`, `name`, `*` and the like.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        let error = |reason| PatternError { pattern: source.to_owned(), reason };
        if source.is_empty() {
            return Err(error("is empty"));
        }
        let (server, name) = match source.split_once('/') {
            Some((server, name)) => (server, name),
            None => ("*", source),
        };
        if server.is_empty() || name.is_empty() {
            return Err(error("needs both a server and a name around '/'"));
        }
        Ok(Self { server: server.to_owned(), name: name.to_owned(), source: source.to_owned() })
    }

    /// Whether the pattern matches a tool (or resource, or prompt) on a server.
    pub fn matches(&self, server: &str, name: &str) -> bool {
        wildcard(self.server.as_bytes(), server.as_bytes()) && wildcard(self.name.as_bytes(), name.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::parse(&source).map_err(serde::de::Error::custom)
    }
}

/// Iterative wildcard match with single-star backtracking: O(n·m) worst case,
/// linear for patterns with one `*`.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, server: &str, name: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(server, name)
    }

    #[test]
    fn bare_names_match_on_every_server() {
        assert!(m("query_analytics_db", "analytics", "query_analytics_db"));
        assert!(m("query_analytics_db", "other", "query_analytics_db"));
        assert!(!m("query_analytics_db", "analytics", "query_analytics_db2"));
    }

    #[test]
    fn server_part_restricts_the_server() {
        assert!(m("analytics/*", "analytics", "anything"));
        assert!(!m("analytics/*", "mail", "anything"));
        assert!(m("*/send_*", "mail", "send_email"));
    }

    #[test]
    fn wildcards() {
        assert!(m("*", "s", ""));
        assert!(m("*", "s", "x"));
        assert!(m("read_*", "s", "read_"));
        assert!(m("*_secrets", "s", "read_secrets"));
        assert!(m("r?ad", "s", "read"));
        assert!(!m("r?ad", "s", "rad"));
        assert!(m("a*b*c", "s", "aXXbYYc"));
        assert!(!m("a*b*c", "s", "aXXbYY"));
        assert!(m("*a*a*a*", "s", "banana_a"));
    }

    #[test]
    fn resource_uris_keep_their_slashes_in_the_name() {
        assert!(m("files/file:///*", "files", "file:///etc/passwd"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("/x").is_err());
        assert!(Pattern::parse("x/").is_err());
    }
}
