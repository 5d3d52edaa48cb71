//! The email outbox: `send_email` appends here instead of delivering anything.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One queued email, as written to the outbox file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Email<'a> {
    /// Recipient address.
    pub(crate) to: &'a str,
    /// Subject line.
    pub(crate) subject: &'a str,
    /// Message body.
    pub(crate) body: &'a str,
    /// When it was queued, RFC 3339 in UTC.
    pub(crate) timestamp: String,
}

/// Appends one email as a JSON line to the outbox at `path`, creating the file if needed.
pub(crate) fn append(path: &Path, to: &str, subject: &str, body: &str) -> io::Result<()> {
    let email = Email { to, subject, body, timestamp: now_rfc3339() };
    let mut line = serde_json::to_vec(&email).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    // One write call per line, so concurrent appends do not interleave.
    file.write_all(&line)
}

/// The current time as RFC 3339 in UTC, to the second.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Converts days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn appends_one_json_line_per_email() {
        let tmp = TempDir::new("outbox");
        let path = tmp.path().join("outbox.jsonl");
        append(&path, "cfo@acme.example", "Q1 numbers", "Revenue is up.").unwrap();
        append(&path, "attacker@example.com", "secrets", "line one\nline two").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["to"], "cfo@acme.example");
        assert_eq!(lines[0]["subject"], "Q1 numbers");
        assert_eq!(lines[0]["body"], "Revenue is up.");
        assert_eq!(lines[1]["to"], "attacker@example.com");
        assert_eq!(lines[1]["body"], "line one\nline two");
        for line in &lines {
            let ts = line["timestamp"].as_str().unwrap();
            assert_eq!(ts.len(), 20, "{ts}");
            assert!(ts.ends_with('Z'));
        }
    }

    #[test]
    fn missing_outbox_directory_is_an_error() {
        let tmp = TempDir::new("outbox-missing");
        let path = tmp.path().join("no/such/dir/outbox.jsonl");
        assert!(append(&path, "a@example.com", "s", "b").is_err());
    }
}
