//! The thread that owns the audit log: it chains records, writes them in
//! batches, flushes them to disk as configured, signs checkpoints, rotates
//! files, and survives a disk that fails.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, TryRecvError},
    },
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{
    AuditMetrics, AuditSettings, Durability, Job,
    note::{Checkpoint, NoteSigner, hex},
    timestamp,
};

/// The `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Records taken from the queue per write.
const BATCH: usize = 4096;
/// With interval durability, how long the writer lets records gather after
/// a batch before it looks again. Nobody waits for those records, and a
/// writer that sleeps on a timer instead of on the queue is never woken by
/// a request: under load that saves each request a cross-thread wake-up
/// (measured: ~8% of the gateway's CPU). Idle, the writer blocks on the
/// queue as before, so it costs nothing.
const LINGER: Duration = Duration::from_millis(2);
/// How often writing is retried while it fails and nothing new arrives.
const RETRY: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    settings: AuditSettings,
    signer: NoteSigner,
    file: File,
    /// Bytes in the live file.
    size: u64,
    /// When the live file was started.
    opened: SystemTime,
    /// The `seq` of the live file's first record.
    first_seq: u64,
    /// The next record's `seq`.
    seq: u64,
    /// The hash of the last record written.
    prev: String,
    /// Records since the last checkpoint.
    unsealed: u64,
    last_checkpoint: Instant,
    /// Written but not yet flushed to disk.
    dirty: bool,
    last_fsync: Instant,
    /// Records that could not be written since writing last worked, and why.
    lost: u64,
    lost_error: String,
    /// When the last write failed (a retry waits [`RETRY`] after it).
    failed_at: Instant,
    healthy: Arc<AtomicBool>,
    metrics: Arc<AuditMetrics>,
    /// Writes that fail on purpose (tests of the failure path).
    #[cfg(test)]
    pub(super) fail_writes: Arc<std::sync::atomic::AtomicUsize>,
}

/// Where a log's records left off.
struct Tail {
    seq: u64,
    prev: String,
    /// Whether the last record is a final checkpoint (the gateway stopped cleanly).
    clean: bool,
}

impl Writer {
    /// Open the log (continuing its chain if it has records) and write a
    /// `start` record. Errors are what a config error would be: the key
    /// cannot be read or the file cannot be opened. A failing write is not
    /// one: it is the failure path, counted and reported at run time.
    pub(super) fn open(
        settings: &AuditSettings,
        healthy: Arc<AtomicBool>,
        metrics: Arc<AuditMetrics>,
    ) -> Result<Self, String> {
        let (signer, created) = NoteSigner::load_or_create(&settings.signing_key, &settings.origin)?;
        if created {
            tracing::warn!(
                key = %settings.signing_key.display(),
                public = %super::note::public_path(&settings.signing_key).display(),
                "created a new audit signing key; keep its .pub to verify the log"
            );
        }
        let live = &settings.file;
        if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let regular = fs::metadata(live).map(|m| m.is_file()).unwrap_or(false);
        let mut discarded = 0;
        let (tail, first_seq) = if regular && fs::metadata(live).map(|m| m.len() > 0).unwrap_or(false) {
            let (tail, cut) = read_tail(live)?;
            discarded = cut;
            let first = first_seq(live)?.unwrap_or(tail.as_ref().map_or(0, |t| t.seq));
            (tail, Some(first))
        } else {
            match newest_rotated(live) {
                Some(rotated) => (read_tail(&rotated)?.0, None),
                None => (None, None),
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(live)
            .map_err(|e| format!("cannot open the audit log {}: {e}", live.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (seq, prev, clean) = match &tail {
            Some(t) => (t.seq + 1, t.prev.clone(), t.clean),
            None => (0, GENESIS.to_owned(), true),
        };
        let now = Instant::now();
        let mut writer = Self {
            settings: settings.clone(),
            signer,
            file,
            size,
            opened: SystemTime::now(),
            first_seq: first_seq.unwrap_or(seq),
            seq,
            prev,
            unsealed: 0,
            last_checkpoint: now,
            dirty: false,
            last_fsync: now,
            lost: 0,
            lost_error: String::new(),
            failed_at: now,
            healthy,
            metrics,
            #[cfg(test)]
            fail_writes: Arc::default(),
        };
        if discarded > 0 {
            tracing::warn!(file = %live.display(), bytes = discarded, "dropped a partly written last audit record");
        }
        let start = json!({
            "kind": "start",
            "time": timestamp(SystemTime::now()),
            "version": env!("CARGO_PKG_VERSION"),
            "resumed": tail.is_some(),
            "unclean": !clean,
            "discarded_bytes": discarded,
        });
        writer.write(vec![start.to_string()], true);
        // Sealed from the start: a log without a checkpoint can only be a
        // forgery (or one whose checkpoints were removed).
        writer.seal(false);
        Ok(writer)
    }

    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        let mut linger = false;
        loop {
            let job = if linger {
                std::thread::sleep(LINGER.min(self.next_deadline()));
                jobs.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                jobs.recv_timeout(self.next_deadline())
            };
            let mut records = Vec::new();
            let mut acks = Vec::new();
            let mut stop = None;
            let mut take = |job: Job| match job {
                Job::Record(line, ack) => {
                    records.push(line);
                    acks.extend(ack);
                    None
                }
                Job::Stop(done) => Some(done),
            };
            match job {
                Ok(job) => stop = take(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.seal(true);
                    return;
                }
            }
            let mut taken = 1;
            while taken < BATCH
                && stop.is_none()
                && let Ok(job) = jobs.try_recv()
            {
                stop = take(job);
                taken += 1;
            }
            linger = !records.is_empty() && matches!(self.settings.durability, Durability::Interval(_));
            if !records.is_empty() || (self.lost > 0 && self.failed_at.elapsed() >= RETRY) {
                let durable = self.settings.durability == Durability::Record;
                let ok = self.write(records, durable && !acks.is_empty());
                for ack in acks {
                    let _ = ack.send(ok);
                }
            }
            if let Some(done) = stop {
                self.seal(true);
                let _ = done.send(());
                return;
            }
            self.tick();
        }
    }

    /// How long the writer may sleep before something is due.
    fn next_deadline(&self) -> Duration {
        let mut wait = Duration::from_secs(3600);
        if self.dirty
            && let Durability::Interval(every) = self.settings.durability
        {
            wait = wait.min(every.saturating_sub(self.last_fsync.elapsed()));
        }
        if self.unsealed > 0 {
            wait = wait.min(self.settings.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed()));
        }
        if self.lost > 0 {
            wait = wait.min(RETRY);
        }
        wait.max(Duration::from_millis(1))
    }

    /// Flush, checkpoint and rotate by time, as due.
    fn tick(&mut self) {
        if self.dirty
            && let Durability::Interval(every) = self.settings.durability
            && self.last_fsync.elapsed() >= every
        {
            self.fsync();
        }
        if self.unsealed > 0 && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval {
            self.seal(false);
        }
        let old = self.settings.rotate_age.is_some_and(|age| self.opened.elapsed().unwrap_or_default() >= age);
        if old && self.size > 0 {
            self.rotate();
        }
    }

    /// Rotate if `records` would not fit in the live file, then
    /// [`commit`](Self::commit) them.
    fn write(&mut self, records: Vec<String>, durable: bool) -> bool {
        let estimate: u64 = records.iter().map(|l| l.len() as u64 + 100).sum();
        if self.size > 0 && self.size + estimate > self.settings.rotate_bytes {
            self.rotate();
        }
        self.commit(records, durable)
    }

    /// Chain `records` (JSON objects without `seq`/`prev`) and append them,
    /// after a `gap` record if earlier ones were lost; flush them to disk if
    /// `durable`. On failure nothing of the batch stays in the file, the
    /// records count as lost, and the gateway is told (it may refuse
    /// requests until writing works again).
    fn commit(&mut self, records: Vec<String>, durable: bool) -> bool {
        let count = records.len() as u64;
        let mut lines = Vec::with_capacity(records.len() + 1);
        if self.lost > 0 {
            let gap = json!({
                "kind": "gap",
                "time": timestamp(SystemTime::now()),
                "lost": self.lost,
                "error": self.lost_error,
            });
            lines.push(gap.to_string());
        }
        let total = lines.len() as u64 + count;
        lines.extend(records);
        let (seq, prev) = (self.seq, self.prev.clone());
        let mut buffer = Vec::with_capacity(lines.iter().map(|l| l.len() + 100).sum());
        for body in &lines {
            let line = chained(self.seq, &self.prev, body);
            self.prev = hex(&Sha256::digest(line.as_bytes()));
            self.seq += 1;
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
        }
        let written = self.append(&buffer).and_then(|()| if durable { self.sync() } else { Ok(()) });
        match written {
            Ok(()) => {
                if self.lost > 0 {
                    tracing::warn!(lost = self.lost, "audit log writable again; the lost records are marked by a gap");
                }
                self.lost = 0;
                self.size += buffer.len() as u64;
                self.unsealed += total;
                self.dirty = !durable;
                self.metrics.records.fetch_add(total, Ordering::Relaxed);
                self.metrics.bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                self.healthy.store(true, Ordering::Relaxed);
                true
            }
            Err(error) => {
                // Leave the file as it was before this batch, so the chain on
                // disk stays whole.
                let _ = self.file.set_len(self.size);
                (self.seq, self.prev) = (seq, prev);
                if self.lost == 0 {
                    tracing::error!(file = %self.settings.file.display(), %error, "cannot write the audit log");
                }
                self.lost += count;
                self.lost_error = error.to_string();
                self.metrics.lost.fetch_add(count, Ordering::Relaxed);
                self.metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                self.healthy.store(false, Ordering::Relaxed);
                self.failed_at = Instant::now();
                false
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_writes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device (test)"));
        }
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        let synced = self.file.sync_data();
        self.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.metrics.fsync_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.last_fsync = Instant::now();
        synced
    }

    fn fsync(&mut self) {
        match self.sync() {
            Ok(()) => self.dirty = false,
            Err(error) => {
                self.metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "cannot flush the audit log to disk");
            }
        }
    }

    /// Append a signed checkpoint over everything so far, flush, and keep a
    /// copy beside the log. `last`: the gateway is stopping.
    fn seal(&mut self, last: bool) {
        if self.unsealed == 0 && !last {
            return;
        }
        let checkpoint = Checkpoint { origin: self.settings.origin.clone(), size: self.seq, head: self.prev.clone() };
        let note = self.signer.checkpoint(&checkpoint);
        let record = json!({
            "kind": "checkpoint",
            "time": timestamp(SystemTime::now()),
            "size": checkpoint.size,
            "head": checkpoint.head,
            "final": last,
            "note": note,
        });
        if !self.commit(vec![record.to_string()], true) {
            return;
        }
        self.unsealed = 0;
        self.last_checkpoint = Instant::now();
        self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        let copy = checkpoint_path(&self.settings.file);
        let temporary = copy.with_extension("checkpoint.tmp");
        if let Err(error) = fs::write(&temporary, &note).and_then(|()| fs::rename(&temporary, &copy)) {
            tracing::error!(file = %copy.display(), %error, "cannot keep the latest audit checkpoint");
        }
    }

    /// Seal the live file and start a new one; the chain goes on.
    fn rotate(&mut self) {
        self.seal(false);
        let rotated = rotated_path(&self.settings.file, self.first_seq);
        let reopened = fs::rename(&self.settings.file, &rotated)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&self.settings.file));
        match reopened {
            Ok(file) => {
                self.file = file;
                self.size = 0;
                self.first_seq = self.seq;
                self.opened = SystemTime::now();
            }
            Err(error) => tracing::error!(file = %self.settings.file.display(), %error, "cannot rotate the audit log"),
        }
    }
}

/// A record's line: `seq` and `prev` first, then the record's own fields.
fn chained(seq: u64, prev: &str, body: &str) -> String {
    let fields = body.strip_prefix('{').unwrap_or(body);
    format!("{{\"seq\":{seq},\"prev\":\"{prev}\",{fields}")
}

/// Where the newest checkpoint is kept: `<stem>.checkpoint` beside the log.
pub fn checkpoint_path(live: &Path) -> PathBuf {
    live.with_extension("checkpoint")
}

/// The name a live file is rotated to: `<stem>.<first seq, 12 digits>.<ext>`.
fn rotated_path(live: &Path, first_seq: u64) -> PathBuf {
    let stem = live.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match live.extension() {
        Some(ext) => format!("{stem}.{first_seq:0width$}.{}", ext.to_string_lossy(), width = super::ROTATION_DIGITS),
        None => format!("{stem}.{first_seq:0width$}", width = super::ROTATION_DIGITS),
    };
    live.with_file_name(name)
}

/// The most recently rotated file of `live`, if any.
fn newest_rotated(live: &Path) -> Option<PathBuf> {
    let dir = live.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = live.file_stem()?.to_string_lossy().into_owned();
    let ext = live.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            let digits = name.strip_prefix(&format!("{stem}."))?.strip_suffix(&ext)?;
            Some((super::rotation_seq(digits)?, dir.join(&name)))
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, path)| path)
}

/// The last complete record of `path`, cutting off a partly written line
/// after it (a crash mid-write: never acknowledged, so nothing is lost that
/// a client was told about). Returns the tail and the bytes cut.
fn read_tail(path: &Path) -> Result<(Option<Tail>, u64), String> {
    let failed = |e: io::Error| format!("cannot read the audit log {}: {e}", path.display());
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(failed)?;
    let len = file.metadata().map_err(failed)?.len();
    // Read backwards until the last complete line is in hand.
    let mut chunk = 64 << 10;
    let (text, start) = loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start)).map_err(failed)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(failed)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map(|end| &bytes[..end]);
        let found = complete.is_some_and(|c| start == 0 || c.contains(&b'\n'));
        if found || start == 0 {
            break (bytes, start);
        }
        chunk *= 4;
    };
    let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
        // Not one complete line: all of it was cut short.
        file.set_len(0).map_err(failed)?;
        return Ok((None, len));
    };
    let cut = len - (start + end as u64 + 1);
    if cut > 0 {
        file.set_len(start + end as u64 + 1).map_err(failed)?;
    }
    let line_start = text[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = &text[line_start..end];
    let record: Value = serde_json::from_slice(line).map_err(|e| {
        format!("the last record of {} is not JSON ({e}): check it with `warden audit verify`", path.display())
    })?;
    let seq = record["seq"].as_u64().ok_or_else(|| format!("the last record of {} has no seq", path.display()))?;
    let clean = record["kind"] == "checkpoint" && record["final"] == json!(true);
    Ok((Some(Tail { seq, prev: hex(&Sha256::digest(line)), clean }), cut))
}

/// The `seq` of the first record of `path`.
fn first_seq(path: &Path) -> Result<Option<u64>, String> {
    let failed = |e: io::Error| format!("cannot read {}: {e}", path.display());
    let mut first = Vec::new();
    io::BufRead::read_until(&mut io::BufReader::new(File::open(path).map_err(failed)?), b'\n', &mut first)
        .map_err(failed)?;
    Ok(serde_json::from_slice::<Value>(&first).ok().and_then(|r| r["seq"].as_u64()))
}
