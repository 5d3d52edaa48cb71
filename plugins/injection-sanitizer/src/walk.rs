//! The strings of a JSON text, edited where they stand.
//!
//! A result reaches the plugin as JSON text. Parsing it into a tree, and
//! writing the tree back when a span was redacted, cost more than the scan
//! itself (most of it allocation). This reads the text with `jiter`, a pull
//! parser, hands each string value to the scanner, and splices back only the
//! strings that changed: the rest of the text, its layout and key order
//! included, is copied as it stands.

use jiter::{Jiter, JiterError, Peek};

/// Text that is not JSON (or nests deeper than [`MAX_DEPTH`]).
#[derive(Debug)]
pub struct NotJson(pub String);

impl From<JiterError> for NotJson {
    fn from(e: JiterError) -> Self {
        Self(e.to_string())
    }
}

/// Deeper than this is refused (and a text item that deep is scanned as
/// text). Above `serde_json`'s own limit of 128, so whatever the gateway or
/// the SDK parsed is always read.
const MAX_DEPTH: usize = 512;

/// Which string values are read.
pub struct Keys<'a> {
    /// Values under these keys are skipped whole.
    pub skip: &'a [String],
}

impl Keys<'_> {
    fn skipped(&self, key: &str) -> bool {
        self.skip.iter().any(|s| s == key)
    }
}

/// `clean` each string value of the JSON text `src` (not keys; not values
/// under skipped keys; not the `data` of an object with a `mimeType`, which
/// is binary). `clean` returns the new text of a string it changed. The
/// result is the text with those strings replaced, or `None` if none was.
pub fn strings(
    src: &str,
    keys: &Keys,
    clean: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Option<String>, NotJson> {
    let mut edits = Vec::new();
    let mut parser = Jiter::new(src.as_bytes());
    let peek = parser.peek()?;
    Walk { src, keys, clean, edits: &mut edits, offset: 0 }.value(&mut parser, peek, 0)?;
    parser.finish()?;
    if edits.is_empty() {
        return Ok(None);
    }
    let mut text = String::with_capacity(src.len());
    let mut at = 0;
    for (start, end, new) in edits {
        text.push_str(&src[at..start]);
        text.push_str(&new);
        at = end;
    }
    text.push_str(&src[at..]);
    Ok(Some(text))
}

struct Walk<'w, 's> {
    /// The text the parser reads; `offset` is where it starts in the whole.
    src: &'s str,
    offset: usize,
    keys: &'w Keys<'w>,
    clean: &'w mut dyn FnMut(&str) -> Option<String>,
    /// Replacements, in order, as byte ranges of the whole text.
    edits: &'w mut Vec<(usize, usize, String)>,
}

impl Walk<'_, '_> {
    fn value(&mut self, parser: &mut Jiter, peek: Peek, depth: usize) -> Result<(), NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        match peek {
            Peek::String => {
                let start = parser.current_index();
                let new = (self.clean)(parser.known_str()?);
                if let Some(new) = new {
                    let quoted = serde_json::to_string(&new).expect("a string always serialises");
                    self.edits.push((self.offset + start, self.offset + parser.current_index(), quoted));
                }
            }
            Peek::Array => {
                let mut next = parser.known_array()?;
                while let Some(peek) = next {
                    self.value(parser, peek, depth + 1)?;
                    next = parser.array_step()?;
                }
            }
            Peek::Object => self.object(parser, depth)?,
            _ => parser.known_skip(peek)?,
        }
        Ok(())
    }

    fn object(&mut self, parser: &mut Jiter, depth: usize) -> Result<(), NotJson> {
        let mut binary = false;
        // A `data` value read before its object's `mimeType`: judged at the end.
        let mut data = None;
        let mut member = parser.known_object()?.map(|key| self.member(key));
        while let Some((skipped, is_data, is_mime)) = member {
            binary |= is_mime;
            let peek = parser.peek()?;
            if skipped || (is_data && binary) {
                parser.known_skip(peek)?;
            } else if is_data {
                let start = parser.current_index();
                parser.known_skip(peek)?;
                data = Some((start, parser.current_index()));
            } else {
                self.value(parser, peek, depth + 1)?;
            }
            member = parser.next_key()?.map(|key| self.member(key));
        }
        if let (Some((start, end)), false) = (data, binary) {
            // Read again on its own; the edits it makes come after the
            // object's others only if it was last, so keep them in order.
            let mut sub = Jiter::new(&self.src.as_bytes()[start..end]);
            let peek = sub.peek()?;
            let mut edits = Vec::new();
            Walk {
                src: &self.src[start..end],
                offset: self.offset + start,
                keys: self.keys,
                clean: self.clean,
                edits: &mut edits,
            }
            .value(&mut sub, peek, depth + 1)?;
            let at = self.edits.partition_point(|(s, _, _)| *s < self.offset + start);
            self.edits.splice(at..at, edits);
        }
        Ok(())
    }

    /// Whether a member's value is skipped, is `data`, or is `mimeType`.
    fn member(&self, key: &str) -> (bool, bool, bool) {
        (self.keys.skipped(key), key == "data", key == "mimeType")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper-case every string that holds "bad"; the rewritten text.
    fn shout(src: &str, skip: &[&str]) -> Result<Option<String>, NotJson> {
        let skip: Vec<String> = skip.iter().map(|s| s.to_string()).collect();
        strings(src, &Keys { skip: &skip }, &mut |s| s.contains("bad").then(|| s.to_uppercase()))
    }

    #[test]
    fn only_changed_strings_are_written_back() {
        let src = "{ \"b\" : [1, \"bad\\n\",\n  {\"k\": \"fine\"}], \"a\":\"\\u00e9 bad\" }";
        assert_eq!(
            shout(src, &[]).unwrap().unwrap(),
            "{ \"b\" : [1, \"BAD\\n\",\n  {\"k\": \"fine\"}], \"a\":\"É BAD\" }"
        );
        assert_eq!(shout("{\"a\": \"fine\"}", &[]).unwrap(), None);
        // Keys are not values.
        assert_eq!(shout("{\"bad\": 1}", &[]).unwrap(), None);
    }

    #[test]
    fn skipped_keys_and_binary_data_are_left_alone() {
        let skipped = "{\"uri\": \"bad\", \"blob\": {\"x\": \"bad\"}, \"t\": \"bad\"}";
        assert_eq!(
            shout(skipped, &["uri", "blob"]).unwrap().unwrap(),
            "{\"uri\": \"bad\", \"blob\": {\"x\": \"bad\"}, \"t\": \"BAD\"}"
        );
        // `data` is binary when its object has a `mimeType`, before or after it.
        for binary in
            ["{\"data\": \"bad\", \"mimeType\": \"image/png\"}", "{\"mimeType\": \"image/png\", \"data\": \"bad\"}"]
        {
            assert_eq!(shout(binary, &[]).unwrap(), None, "{binary}");
        }
        // Otherwise it is read, and its edits keep their place among the others.
        let text = "[{\"a\": \"bad\", \"data\": {\"d\": \"bad\"}, \"z\": \"bad\"}, \"bad\"]";
        assert_eq!(
            shout(text, &[]).unwrap().unwrap(),
            "[{\"a\": \"BAD\", \"data\": {\"d\": \"BAD\"}, \"z\": \"BAD\"}, \"BAD\"]"
        );
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        let deep = format!("{}{}", "[".repeat(600), "]".repeat(600));
        for bad in ["{\"a\": ", "{} {}", "plain words", deep.as_str()] {
            assert!(shout(bad, &[]).is_err(), "{bad}");
        }
    }
}
