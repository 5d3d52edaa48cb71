use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    AuditMetrics, AuditSettings, Auditor, Decision, Durability, OnError, PendingDecision, Shared, fingerprint,
    note::{NoteSigner, NoteVerifier, public_path},
    redacted,
    verify::{Options, verify},
    writer::Writer,
};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-audit-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn settings(dir: &Path) -> AuditSettings {
    let mut settings = AuditSettings::new(dir.join("audit.jsonl"));
    settings.durability = Durability::Record;
    settings
}

fn options(settings: &AuditSettings) -> Options {
    let key = fs::read_to_string(public_path(&settings.signing_key)).unwrap();
    Options { key: NoteVerifier::parse(&key).unwrap(), checkpoint: None, partial: false }
}

fn decision(subject: &str) -> Decision {
    Decision {
        kind: "decision",
        subject: subject.into(),
        method: "tools/call".into(),
        outcome: "allowed",
        ..Decision::default()
    }
}

async fn record(auditor: &Auditor, subject: &str) -> bool {
    PendingDecision::new(auditor.clone(), decision(subject)).finish().await
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    // Reversed on purpose: verify puts them in order itself.
    files.sort();
    files.reverse();
    files
}

fn kinds(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn records_are_chained_and_sealed_and_a_restart_continues_the_chain() {
    let dir = dir("chain");
    let settings = settings(&dir);
    let auditor = Auditor::open(settings.clone()).unwrap();
    for i in 0..5 {
        assert!(record(&auditor, &format!("user-{i}")).await);
    }
    auditor.close();
    assert_eq!(
        kinds(&settings.file),
        ["start", "checkpoint", "decision", "decision", "decision", "decision", "decision", "checkpoint"]
    );

    let auditor = Auditor::open(settings.clone()).unwrap();
    assert!(record(&auditor, "after-restart").await);
    auditor.close();
    let report = verify(&files(&dir), &options(&settings)).unwrap();
    assert_eq!(report.records, 12);
    assert_eq!(report.unclean_starts, 0);
    assert_eq!(report.unsealed, 0);
    assert_eq!(report.last_checkpoint.unwrap().0, 11);
    assert!(report.kept_checkpoint.is_some(), "the newest checkpoint is kept beside the log");
}

#[tokio::test]
async fn a_partly_written_record_is_cut_off_and_the_restart_is_marked_unclean() {
    let dir = dir("partial");
    let settings = settings(&dir);
    let auditor = Auditor::open(settings.clone()).unwrap();
    assert!(record(&auditor, "before-crash").await);
    // No close: as if the process died, with half a record written.
    drop(auditor);
    std::thread::sleep(Duration::from_millis(100));
    let mut text = fs::read_to_string(&settings.file).unwrap();
    // Dropping the last sender sealed the log; take that seal away again.
    let lines: Vec<&str> = text.lines().collect();
    let partial = "{\"seq\":99,\"prev\":\"ab";
    text = lines[..lines.len() - 1].join("\n") + "\n" + partial;
    fs::write(&settings.file, &text).unwrap();

    let auditor = Auditor::open(settings.clone()).unwrap();
    auditor.close();
    let start: Value =
        serde_json::from_str(fs::read_to_string(&settings.file).unwrap().lines().nth(3).unwrap()).unwrap();
    assert_eq!(start["kind"], "start");
    assert_eq!(start["unclean"], true);
    assert_eq!(start["discarded_bytes"].as_u64(), Some(partial.len() as u64));
    // The kept checkpoint went with the removed seal, so hold the log to
    // its own checkpoints only.
    let mut options = options(&settings);
    options.checkpoint = None;
    fs::remove_file(super::writer::checkpoint_path(&settings.file)).unwrap();
    let report = verify(&files(&dir), &options).unwrap();
    assert_eq!(report.unclean_starts, 1);
}

#[tokio::test]
async fn rotation_keeps_one_chain_across_files() {
    let dir = dir("rotate");
    let mut settings = settings(&dir);
    settings.rotate_bytes = 2048;
    let auditor = Auditor::open(settings.clone()).unwrap();
    for i in 0..40 {
        assert!(record(&auditor, &format!("user-{i}")).await);
    }
    auditor.close();
    let files = files(&dir);
    assert!(files.len() >= 3, "rotated into {files:?}");
    let report = verify(&files, &options(&settings)).unwrap();
    assert_eq!(report.files, files.len());
    assert_eq!(report.first_seq, 0);
    let lines: usize = files.iter().map(|f| fs::read_to_string(f).unwrap().lines().count()).sum();
    assert_eq!(report.records, lines as u64);

    // A restart after the live file went away continues from the newest rotated one.
    fs::remove_file(&settings.file).unwrap();
    let rotated = self::files(&dir);
    let last = fs::read_to_string(&rotated[0]).unwrap().lines().last().map(str::to_owned).unwrap();
    let last_seq = serde_json::from_str::<Value>(&last).unwrap()["seq"].as_u64().unwrap();
    let auditor = Auditor::open(settings.clone()).unwrap();
    auditor.close();
    let first: Value =
        serde_json::from_str(fs::read_to_string(&settings.file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"].as_u64(), Some(last_seq + 1), "the chain goes on: {first}");
    assert!(verify(&self::files(&dir), &options(&settings)).is_ok());
}

#[tokio::test]
async fn a_failing_disk_refuses_then_marks_the_gap_when_it_recovers() {
    let dir = dir("gap");
    let mut settings = settings(&dir);
    settings.on_error = OnError::Refuse;
    let healthy = Arc::new(AtomicBool::new(true));
    let metrics = Arc::new(AuditMetrics::default());
    let writer = Writer::open(&settings, Arc::clone(&healthy), Arc::clone(&metrics)).unwrap();
    let failing = Arc::clone(&writer.fail_writes);
    let (jobs, receiver) = std::sync::mpsc::sync_channel(16);
    std::thread::spawn(move || writer.run(receiver));
    let auditor = Auditor { inner: Some(Arc::new(Shared { jobs, healthy, settings: settings.clone(), metrics })) };

    assert!(record(&auditor, "fine").await);
    failing.store(2, std::sync::atomic::Ordering::Relaxed);
    assert!(!record(&auditor, "lost-1").await, "a failed write is reported to the request");
    assert!(auditor.refusing(), "and the gateway refuses while it fails");
    assert!(!record(&auditor, "lost-2").await);
    // The disk recovers: the writer retries on its own, and the gap is marked.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while auditor.refusing() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!auditor.refusing());
    assert!(record(&auditor, "after").await);
    auditor.close();
    let metrics = auditor.metrics().unwrap();
    assert_eq!(metrics.lost.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(metrics.write_errors.load(std::sync::atomic::Ordering::Relaxed), 2);
    let report = verify(&files(&dir), &options(&settings)).unwrap();
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(report.gaps[0].1, 2, "the gap counts both lost records");
    let subjects: Vec<String> = fs::read_to_string(&settings.file)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["subject"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(subjects, ["fine", "after"]);
}

#[test]
fn fingerprints_are_of_canonical_json() {
    // RFC 8785: member order and number spelling do not change the bytes.
    assert_eq!(fingerprint(&json!({"b": 1, "a": [1.0, "x"]})), fingerprint(&json!({"a": [1, "x"], "b": 1})));
    assert_ne!(fingerprint(&json!({"a": 1})), fingerprint(&json!({"a": "1"})));
    // SHA-256 of `{"a":1}`.
    assert_eq!(fingerprint(&json!({"a": 1})), "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862");
}

#[test]
fn redaction_reaches_every_depth_and_ignores_case() {
    let keys = vec!["password".to_owned(), "api_key".to_owned()];
    let value = json!({"user": "x", "Password": "p", "nested": [{"API_KEY": "k", "keep": 1}]});
    assert_eq!(
        redacted(&value, &keys),
        json!({"user": "x", "Password": "[redacted]", "nested": [{"API_KEY": "[redacted]", "keep": 1}]})
    );
}

#[test]
fn checkpoints_verify_only_with_their_key() {
    let signer = NoteSigner::generate("test-log").unwrap();
    let other = NoteSigner::generate("test-log").unwrap();
    let checkpoint = super::note::Checkpoint { origin: "test-log".into(), size: 7, head: "ab".repeat(32) };
    let note = signer.checkpoint(&checkpoint);
    assert_eq!(signer.verifier().open(&note).unwrap(), checkpoint);
    assert!(other.verifier().open(&note).is_err());
    let tampered = note.replacen("\n7\n", "\n8\n", 1);
    assert!(signer.verifier().open(&tampered).unwrap_err().contains("forged"));
    // Keys survive their text form.
    let parsed = NoteVerifier::parse(&signer.verifier().text()).unwrap();
    assert_eq!(parsed.open(&note).unwrap(), checkpoint);
}
