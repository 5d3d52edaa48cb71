//! Deprecated tools: config marks a tool deprecated with a message and a
//! sunset; agents are told through the protocol before it goes, and after
//! the sunset a call to it can be refused.
//!
//! Before the sunset (or after it, with `after_sunset = "warn"`) the tool is
//! listed and callable, and both its listing entry and every result carry
//! `_meta["dev.warden/deprecation"] = {"message", "sunset"}`; the call's audit
//! record says so. After the sunset, with `after_sunset = "refuse"` (the
//! default), it leaves the listing and a call answers -32032.

use globset::GlobSet;
use serde_json::{Value, json};

/// One `[[deprecation]]`.
#[derive(Clone, Debug)]
pub struct Deprecation {
    /// The `tools` patterns as written (`server/name` globs).
    pub written: Vec<String>,
    /// Those patterns, compiled.
    pub tools: GlobSet,
    /// What agents and operators are told (the replacement, usually).
    pub message: String,
    /// When it is retired: RFC 3339, and milliseconds since the epoch.
    pub sunset: Option<(String, u64)>,
    /// Refuse calls after the sunset (else only warn).
    pub refuse_after_sunset: bool,
}

impl PartialEq for Deprecation {
    fn eq(&self, other: &Self) -> bool {
        (&self.written, &self.message, &self.sunset, self.refuse_after_sunset)
            == (&other.written, &other.message, &other.sunset, other.refuse_after_sunset)
    }
}

impl Deprecation {
    /// Whether it is retired at `now_ms`: past its sunset, and refused then.
    pub fn retired(&self, now_ms: u64) -> bool {
        self.refuse_after_sunset && self.sunset.as_ref().is_some_and(|(_, at)| now_ms >= *at)
    }

    /// What goes in `_meta["dev.warden/deprecation"]`.
    pub fn note(&self) -> Value {
        json!({ "message": self.message, "sunset": self.sunset.as_ref().map(|(text, _)| text) })
    }

    /// One line for the audit record and the refusal.
    pub fn describe(&self) -> String {
        match &self.sunset {
            Some((sunset, _)) => format!("deprecated, sunset {sunset}: {}", self.message),
            None => format!("deprecated: {}", self.message),
        }
    }
}

/// The `_meta` key a deprecation is told under.
pub const META: &str = "dev.warden/deprecation";

/// The first deprecation covering the tool `name` of `server`.
pub fn covering<'a>(deprecations: &'a [Deprecation], server: &str, name: &str) -> Option<&'a Deprecation> {
    let path = format!("{server}/{name}");
    deprecations.iter().find(|d| d.tools.is_match(&path))
}

/// `2027-01-31` (the start of that day, UTC) or an RFC 3339 time, as
/// (RFC 3339, milliseconds since the epoch).
pub fn parse_sunset(text: &str) -> Result<(String, u64), String> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    let at = humantime::parse_rfc3339(&full)
        .map_err(|_| format!("{text:?} is not a date (2027-01-31) or an RFC 3339 time (2027-01-31T12:00:00Z)"))?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Ok((humantime::format_rfc3339_seconds(at).to_string(), ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deprecation(sunset: Option<&str>, refuse: bool) -> Deprecation {
        let mut tools = globset::GlobSetBuilder::new();
        tools.add(globset::Glob::new("demo/old_*").unwrap());
        Deprecation {
            written: vec!["demo/old_*".into()],
            tools: tools.build().unwrap(),
            message: "use new_report".into(),
            sunset: sunset.map(|s| parse_sunset(s).unwrap()),
            refuse_after_sunset: refuse,
        }
    }

    #[test]
    fn a_sunset_retires_a_tool_only_when_refusing_and_only_from_that_moment() {
        let (_, at) = parse_sunset("2027-01-31").unwrap();
        assert_eq!(parse_sunset("2027-01-31").unwrap().0, "2027-01-31T00:00:00Z");
        let refusing = deprecation(Some("2027-01-31"), true);
        assert!(!refusing.retired(at - 1) && refusing.retired(at));
        assert!(!deprecation(Some("2027-01-31"), false).retired(at + 1), "warn only");
        assert!(!deprecation(None, true).retired(u64::MAX), "no sunset, never retired");
        assert!(parse_sunset("next tuesday").unwrap_err().contains("not a date"));
    }

    #[test]
    fn the_first_deprecation_covering_a_tool_is_its_own() {
        let all = [deprecation(None, true)];
        assert!(covering(&all, "demo", "old_report").is_some());
        assert!(covering(&all, "demo", "new_report").is_none());
        assert!(covering(&all, "other", "old_report").is_none());
        assert_eq!(all[0].note(), json!({ "message": "use new_report", "sunset": null }));
    }
}
