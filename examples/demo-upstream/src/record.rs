//! `--record`: a log of every MCP message the server receives.
//!
//! Standard input is read here, line by line, and each line is recorded before
//! it is handed on to the MCP service through an in-process pipe. A line that
//! never reaches this process (because a gateway refused it) is never recorded,
//! which is what tests use the file for.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, DuplexStream};

/// Size of the in-process pipe between the recorder and the MCP service.
const PIPE_CAPACITY: usize = 64 * 1024;

/// Opens (creating or appending to) the record file.
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts copying `input` to the returned stream, recording each message to `file` on the way.
///
/// When `input` ends, the returned stream ends too.
pub(crate) fn tee<R>(input: R, mut file: File) -> DuplexStream
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (mut to_service, from_recorder) = tokio::io::duplex(PIPE_CAPACITY);
    tokio::spawn(async move {
        let mut input = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("warden-demo-upstream: reading stdin failed: {e}");
                    break;
                }
            }
            for entry in entries(&line) {
                let mut text = entry.to_string();
                text.push('\n');
                if let Err(e) = file.write_all(text.as_bytes()) {
                    eprintln!("warden-demo-upstream: writing the record file failed: {e}");
                }
            }
            if to_service.write_all(&line).await.is_err() {
                break;
            }
        }
        // Dropping `to_service` closes the pipe, which ends the MCP service.
    });
    from_recorder
}

/// The record entries for one received line: one per request or notification in it.
///
/// Each entry holds the `method`, the `params` (or null) and, for a request, its `id`.
/// A line that is not JSON is recorded as `{"unparsed": "<line>"}`; responses are skipped.
pub(crate) fn entries(line: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(line);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    let messages = match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(batch)) => batch,
        Ok(message) => vec![message],
        Err(_) => {
            let mut entry = Map::new();
            entry.insert("unparsed".into(), Value::String(trimmed.to_owned()));
            return vec![Value::Object(entry)];
        }
    };
    messages
        .into_iter()
        .filter_map(|message| {
            let method = message.get("method")?.clone();
            let mut entry = Map::new();
            if let Some(id) = message.get("id") {
                entry.insert("id".into(), id.clone());
            }
            entry.insert("method".into(), method);
            entry.insert("params".into(), message.get("params").cloned().unwrap_or(Value::Null));
            Some(Value::Object(entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn records_requests_and_notifications_but_not_responses() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"a@b.c"}}}
"#;
        assert_eq!(
            entries(line),
            vec![
                json!({"id": 7, "method": "tools/call", "params": {"name": "send_email", "arguments": {"to": "a@b.c"}}})
            ]
        );
        assert_eq!(
            entries(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            vec![json!({"method": "notifications/initialized", "params": null})]
        );
        assert!(entries(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_empty());
        assert!(entries(b"\n").is_empty());
        assert_eq!(entries(b"not json\n"), vec![json!({"unparsed": "not json"})]);
    }

    #[tokio::test]
    async fn tee_passes_bytes_through_and_records() {
        use tokio::io::AsyncReadExt;

        let tmp = TempDir::new("record");
        let path = tmp.path().join("record.jsonl");
        let input: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}\n";
        let mut out = tee(input, open(&path).unwrap());
        let mut passed = Vec::new();
        out.read_to_end(&mut passed).await.unwrap();
        assert_eq!(passed, input);
        let recorded = std::fs::read_to_string(&path).unwrap();
        let methods: Vec<String> = recorded
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["method"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(methods, ["ping", "tools/list"]);
    }
}
