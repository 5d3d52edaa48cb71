//! `warden audit query`: the decisions that match a filter, as a table or as
//! JSON Lines, from files or following the live one.

use std::{
    fs,
    io::{self, Read as _, Seek as _, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use globset::{Glob, GlobMatcher};
use serde_json::Value;

/// What to show.
#[derive(Debug, Default)]
pub struct Filter {
    /// Records at or after this time.
    pub since: Option<SystemTime>,
    /// Records before this time.
    pub until: Option<SystemTime>,
    /// Records of this tenant.
    pub tenant: Option<String>,
    /// Records of this subject.
    pub subject: Option<String>,
    /// Records whose target (tool, prompt or resource URI) matches this glob.
    pub target: Option<GlobMatcher>,
    /// Records with one of these outcomes.
    pub outcomes: Vec<String>,
    /// Records in which this plugin ran.
    pub plugin: Option<String>,
}

impl Filter {
    /// Parse a time: RFC 3339 (`2026-12-02T10:00:00Z`) or an age (`15m`, `2h`, `1d`).
    pub fn time(text: &str) -> Result<SystemTime, String> {
        if let Ok(time) = humantime::parse_rfc3339_weak(text) {
            return Ok(time);
        }
        let age = humantime::parse_duration(text)
            .map_err(|_| format!("{text:?} is neither a time (2026-12-02T10:00:00Z) nor an age (15m, 2h)"))?;
        Ok(SystemTime::now() - age)
    }

    /// A glob over targets.
    pub fn target(pattern: &str) -> Result<GlobMatcher, String> {
        Glob::new(pattern).map(|g| g.compile_matcher()).map_err(|e| format!("{pattern:?}: {e}"))
    }

    /// Whether `record` is a decision this filter keeps.
    pub fn matches(&self, record: &Value) -> bool {
        if record["kind"] != "decision" {
            return false;
        }
        let text = |key: &str| record[key].as_str();
        let time = text("time").and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        if let Some(since) = self.since
            && time.is_none_or(|t| t < since)
        {
            return false;
        }
        if let Some(until) = self.until
            && time.is_none_or(|t| t >= until)
        {
            return false;
        }
        let same = |wanted: &Option<String>, key: &str| wanted.as_deref().is_none_or(|w| text(key) == Some(w));
        if !same(&self.tenant, "tenant") || !same(&self.subject, "subject") {
            return false;
        }
        if let Some(target) = &self.target
            && !text("target").is_some_and(|t| target.is_match(t))
        {
            return false;
        }
        if !self.outcomes.is_empty() && !text("outcome").is_some_and(|o| self.outcomes.iter().any(|w| w == o)) {
            return false;
        }
        if let Some(plugin) = &self.plugin {
            let steps = record["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
            if !steps.iter().any(|s| s["plugin"].as_str() == Some(plugin)) {
                return false;
            }
        }
        true
    }
}

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The matching records, one JSON object per line, as written.
    Json,
}

const HEADER: &str = "TIME                      OUTCOME              SUBJECT          TENANT       METHOD           TARGET                         MICROS  REASON";

fn row(record: &Value) -> String {
    let text = |key: &str| record[key].as_str().unwrap_or("-");
    let target = match record["server"].as_str() {
        Some(server) => format!("{server}/{}", text("target")),
        None => text("target").to_owned(),
    };
    format!(
        "{:<25} {:<20} {:<16} {:<12} {:<16} {:<30} {:>6}  {}",
        text("time"),
        text("outcome"),
        text("subject"),
        text("tenant"),
        text("method"),
        target,
        record["micros"].as_u64().unwrap_or(0),
        record["reason"].as_str().unwrap_or(""),
    )
}

/// Print what matches in `files`, in order; with `follow`, then keep reading
/// the last file as it grows (and reopen it when it is rotated) until `out`
/// fails. Returns how many records matched.
pub fn query(files: &[PathBuf], filter: &Filter, format: Format, follow: bool, out: &mut dyn Write) -> io::Result<u64> {
    let mut matched = 0;
    if format == Format::Table {
        writeln!(out, "{HEADER}")?;
    }
    let mut emit = |line: &str, out: &mut dyn Write| -> io::Result<()> {
        let Ok(record) = serde_json::from_str::<Value>(line) else { return Ok(()) };
        if filter.matches(&record) {
            matched += 1;
            match format {
                Format::Json => writeln!(out, "{line}")?,
                Format::Table => writeln!(out, "{}", row(&record))?,
            }
        }
        Ok(())
    };
    for file in files {
        let text =
            fs::read_to_string(file).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        for line in text.lines() {
            emit(line, out)?;
        }
    }
    if follow && let Some(live) = files.last() {
        out.flush()?;
        let mut offset = fs::metadata(live).map(|m| m.len()).unwrap_or(0);
        let mut pending = String::new();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let grown = read_from(live, &mut offset)?;
            pending.push_str(&grown);
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                emit(line.trim_end(), out)?;
            }
            out.flush()?;
        }
    }
    Ok(matched)
}

/// What `path` holds past `offset`; a file that shrank was rotated, so it
/// is read again from its start.
fn read_from(path: &Path, offset: &mut u64) -> io::Result<String> {
    let Ok(mut file) = fs::File::open(path) else { return Ok(String::new()) };
    let len = file.metadata()?.len();
    if len < *offset {
        *offset = 0;
    }
    file.seek(SeekFrom::Start(*offset))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    *offset += text.len() as u64;
    Ok(text)
}
