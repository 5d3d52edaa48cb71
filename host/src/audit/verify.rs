//! `warden audit verify`: walk the chain and the checkpoints, and report the
//! first broken link with its position.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    note::{NoteVerifier, hex},
    writer::{GENESIS, checkpoint_path},
};

/// What an intact log holds.
#[derive(Debug, Default)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// Files checked.
    pub files: usize,
    /// The first record's `seq`.
    pub first_seq: u64,
    /// The last checkpoint: its `seq` and time.
    pub last_checkpoint: Option<(u64, String)>,
    /// Records after the last checkpoint (not yet sealed by a signature).
    pub unsealed: u64,
    /// Gaps the gateway marked: (`seq` of the gap record, records lost).
    pub gaps: Vec<(u64, u64)>,
    /// Starts after a run that did not stop cleanly.
    pub unclean_starts: u64,
    /// The kept checkpoint checked against the log, if one was.
    pub kept_checkpoint: Option<PathBuf>,
    /// Bytes of a half-written newest record (a crash mid-write), not counted.
    pub cut_short: usize,
}

/// The first broken link.
#[derive(Debug)]
pub struct Break {
    /// Where: a file and line (1-based), or the file alone (line 0).
    pub file: PathBuf,
    /// The line, from 1; 0 when the problem is the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file.display(), self.what),
            line => write!(f, "{}:{line}: {}", self.file.display(), self.what),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.first_seq + self.records.saturating_sub(1);
        write!(f, "intact: {} records in {} file(s), seq {}–{last}", self.records, self.files, self.first_seq)?;
        if let Some((seq, time)) = &self.last_checkpoint {
            write!(f, "; last checkpoint at seq {seq} ({time})")?;
        }
        if self.unsealed > 0 {
            write!(f, "; {} record(s) after it not yet sealed", self.unsealed)?;
        }
        if let Some(kept) = &self.kept_checkpoint {
            write!(f, "; matches {}", kept.display())?;
        }
        for (seq, lost) in &self.gaps {
            write!(f, "; gap at seq {seq}: {lost} record(s) could not be written")?;
        }
        if self.cut_short > 0 {
            write!(f, "; the newest record is cut short ({} bytes, never acknowledged)", self.cut_short)?;
        }
        if self.unclean_starts > 0 {
            write!(f, "; {} start(s) after an unclean stop", self.unclean_starts)?;
        }
        Ok(())
    }
}

/// How to verify.
pub struct Options {
    /// The key the checkpoints must be signed by.
    pub key: NoteVerifier,
    /// A copy of the newest checkpoint to hold the log to (default: the
    /// `<stem>.checkpoint` beside the live file, if present).
    pub checkpoint: Option<PathBuf>,
    /// Accept a log whose first record is not the first ever (older files
    /// were removed); it must still reach a checkpoint.
    pub partial: bool,
}

struct File {
    path: PathBuf,
    text: String,
    first_seq: u64,
}

/// Verify `files` (in any order: they are put in `seq` order).
pub fn verify(paths: &[PathBuf], options: &Options) -> Result<Report, Break> {
    let at = |path: &Path, line: usize, what: String| Break { file: path.to_owned(), line, what };
    let mut files = Vec::new();
    for path in paths {
        let bytes = fs::read(path).map_err(|e| at(path, 0, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| at(path, 0, "not UTF-8 text".into()))?;
        let first = text.lines().next().unwrap_or_default();
        let first_seq = serde_json::from_str::<Value>(first)
            .ok()
            .and_then(|r| r["seq"].as_u64())
            .ok_or_else(|| at(path, 1, "not a record with a seq: edited or cut".into()))?;
        files.push(File { path: path.clone(), text, first_seq });
    }
    if files.is_empty() {
        return Err(at(Path::new("-"), 0, "no files given".into()));
    }
    files.sort_by_key(|f| f.first_seq);

    let kept = options.checkpoint.clone().or_else(|| {
        let beside = checkpoint_path(&live_name(&files.last().expect("not empty").path));
        beside.exists().then_some(beside)
    });
    // Checked after the records, so that a broken link in them is the one reported.
    let kept_checkpoint = match &kept {
        Some(path) => {
            let note = fs::read_to_string(path).map_err(|e| at(path, 0, format!("cannot read: {e}")))?;
            Some(options.key.open(&note).map_err(|e| at(path, 0, e)))
        }
        None => None,
    };

    let mut report = Report { files: files.len(), first_seq: files[0].first_seq, ..Report::default() };
    let mut expected: Option<(u64, String)> = None;
    let mut origin: Option<String> = None;
    let mut kept_head = None;
    let mut last_place = (files[0].path.clone(), 0);
    for file in &files {
        let ends_cleanly = file.text.ends_with('\n');
        let newest = std::ptr::eq(file, files.last().expect("not empty"));
        let lines: Vec<&str> = file.text.split_terminator('\n').collect();
        for (index, line) in lines.iter().enumerate() {
            let number = index + 1;
            let here = |what: String| at(&file.path, number, what);
            if index + 1 == lines.len() && !ends_cleanly {
                // A crash mid-write leaves the newest record half written; it
                // was never acknowledged. The kept checkpoint (below) still
                // catches a cut into records it seals.
                if newest {
                    report.cut_short = line.len();
                    break;
                }
                return Err(here("the last record is cut short (no end of line): truncated".into()));
            }
            let record: Value =
                serde_json::from_str(line).map_err(|e| here(format!("not a JSON record ({e}): edited or cut")))?;
            let seq = record["seq"].as_u64().ok_or_else(|| here("no seq: edited".into()))?;
            let prev = record["prev"].as_str().ok_or_else(|| here("no prev: edited".into()))?;
            match &expected {
                None if seq == 0 && prev != GENESIS => {
                    return Err(here("the first record does not start a chain (prev is not all zeros)".into()));
                }
                None if seq > 0 && !options.partial => {
                    return Err(here(format!(
                        "the log starts at seq {seq}: the {seq} record(s) before it are missing \
                         (give the earlier files, or --partial)"
                    )));
                }
                None => {}
                Some((next, _)) if seq > *next => {
                    return Err(here(format!(
                        "{} record(s) missing before this one (seq {seq}, expected {next}): deleted or reordered",
                        seq - next
                    )));
                }
                Some((next, _)) if seq < *next => {
                    return Err(here(format!("out of order (seq {seq}, expected {next}): reordered or inserted")));
                }
                Some((_, hash)) if prev != hash => {
                    let (before, before_line) = &last_place;
                    return Err(at(
                        before,
                        *before_line,
                        format!("record {} was altered: its hash is not the prev of the record after it", seq - 1),
                    ));
                }
                Some(_) => {}
            }
            match record["kind"].as_str() {
                Some("checkpoint") => {
                    let note = record["note"].as_str().ok_or_else(|| here("a checkpoint without a note".into()))?;
                    let checkpoint = options.key.open(note).map_err(|e| here(format!("checkpoint: {e}")))?;
                    if checkpoint.size != seq || checkpoint.head != prev {
                        return Err(here(format!(
                            "the checkpoint is signed but does not seal the records before it (it covers {} records)",
                            checkpoint.size
                        )));
                    }
                    if let Some(first) = &origin
                        && *first != checkpoint.origin
                    {
                        return Err(here(format!(
                            "a checkpoint of another log ({:?}, not {first:?})",
                            checkpoint.origin
                        )));
                    }
                    origin.get_or_insert(checkpoint.origin);
                    report.last_checkpoint = Some((seq, record["time"].as_str().unwrap_or_default().to_owned()));
                    report.unsealed = 0;
                }
                Some("gap") => {
                    report.gaps.push((seq, record["lost"].as_u64().unwrap_or(0)));
                    report.unsealed += 1;
                }
                Some("start") => {
                    report.unclean_starts += u64::from(record["unclean"] == Value::Bool(true));
                    report.unsealed += 1;
                }
                Some(_) => report.unsealed += 1,
                None => return Err(here("no kind: edited".into())),
            }
            let hash = hex(&Sha256::digest(line.as_bytes()));
            if let Some(Ok(kept)) = &kept_checkpoint
                && kept.size == seq + 1
            {
                kept_head = Some(hash.clone());
            }
            expected = Some((seq + 1, hash));
            report.records += 1;
            last_place = (file.path.clone(), number);
        }
    }
    let (end, end_line) = last_place;
    if report.last_checkpoint.is_none() {
        return Err(at(
            &end,
            0,
            "no checkpoint signed by the key: the log cannot be tied to it (replaced, or its checkpoints removed)"
                .into(),
        ));
    }
    if let (Some(path), Some(kept)) = (&kept, kept_checkpoint) {
        let kept = kept?;
        let next = expected.as_ref().map_or(0, |(next, _)| *next);
        if kept.size > next {
            return Err(at(
                &end,
                end_line,
                format!(
                    "truncated: {} seals {} records, the log ends at seq {}",
                    path.display(),
                    kept.size,
                    next.saturating_sub(1)
                ),
            ));
        }
        if kept_head.as_deref().is_some_and(|h| *h != kept.head) {
            return Err(at(path, 0, "the kept checkpoint seals another log (its head does not match)".into()));
        }
        report.kept_checkpoint = Some(path.clone());
    }
    Ok(report)
}

/// The live file's name for `path`, which may be a rotated file
/// (`<stem>.<12 digits>.<ext>`).
fn live_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parts: Vec<&str> = name.split('.').collect();
    let rotated =
        parts.len() >= 2 && super::rotation_seq(parts[parts.len() - if parts.len() >= 3 { 2 } else { 1 }]).is_some();
    if !rotated {
        return path.to_owned();
    }
    let mut kept: Vec<&str> = parts.clone();
    kept.remove(if parts.len() >= 3 { parts.len() - 2 } else { parts.len() - 1 });
    path.with_file_name(kept.join("."))
}
