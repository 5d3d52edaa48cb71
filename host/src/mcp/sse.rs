//! Server-sent events: an incremental parser (for upstream streams) and the
//! encoder the gateway writes with.

/// One event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `id:`, if any.
    pub id: Option<String>,
    /// `event:`, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined with newlines.
    pub data: String,
    /// `retry:` in milliseconds, if any.
    pub retry: Option<u64>,
}

/// Feeds on byte chunks as they arrive; yields complete events.
#[derive(Default, Debug)]
pub struct Parser {
    buffer: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Parser {
    /// Add bytes; return every event they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data || self.current.id.is_some() || self.current.retry.is_some() {
                    events.push(std::mem::take(&mut self.current));
                }
                self.has_data = false;
                self.current = Event::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "retry" => self.current.retry = value.parse().ok(),
                _ => {}
            }
        }
        events
    }
}

/// Encode one `message` event carrying a JSON-RPC message.
pub fn encode(id: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks() {
        let mut parser = Parser::default();
        assert!(parser.push(b"id: 1\nevent: mess").is_empty());
        let events = parser.push(b"age\ndata: {\"a\":\ndata: 1}\n\n: comment\n\nretry: 500\ndata: x\r\n\r\n");
        assert_eq!(
            events,
            [
                Event { id: Some("1".into()), event: Some("message".into()), data: "{\"a\":\n1}".into(), retry: None },
                Event { id: None, event: None, data: "x".into(), retry: Some(500) },
            ]
        );
    }

    #[test]
    fn a_priming_event_has_an_id_and_no_data() {
        let events = Parser::default().push(b"id: p1\ndata:\n\n");
        assert_eq!(events, [Event { id: Some("p1".into()), data: String::new(), ..Event::default() }]);
    }

    #[test]
    fn encodes_round_trip() {
        let text = encode(Some("7"), "{\"x\":1}");
        assert_eq!(text, "id: 7\nevent: message\ndata: {\"x\":1}\n\n");
        let events = Parser::default().push(text.as_bytes());
        assert_eq!(events[0].data, "{\"x\":1}");
    }
}
