//! Custom phrases: word sequences a deployment adds to the built-in rules,
//! such as `launch (the)? missiles`.

/// One word of a phrase, borrowed from its source text: `ignore` or
/// `(all|any)?`. Nothing is copied or lowercased: the plugin runs in a fresh
/// instance per call, so parsing must cost next to nothing; matching compares
/// case-insensitively instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word<'p> {
    /// The alternatives, separated by `|`; each one or more words.
    choices: &'p str,
    optional: bool,
}

impl<'p> Word<'p> {
    fn choices(self) -> impl Iterator<Item = &'p str> {
        self.choices.split('|')
    }
}

/// A parsed phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase<'p> {
    words: Vec<Word<'p>>,
    /// Every word a match can start with: only text words equal to one of
    /// these are tried as a start, which skips almost every position.
    anchors: Vec<&'p str>,
}

/// Split a phrase on white space outside parentheses, so a choice may hold
/// several words: `(you were told|rules)`.
fn tokens(source: &str) -> Vec<&str> {
    let (mut out, mut start, mut depth) = (Vec::new(), None, 0i32);
    for (i, c) in source.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth <= 0 {
            if let Some(s) = start.take() {
                out.push(&source[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    out.extend(start.map(|s| &source[s..]));
    out
}

impl<'p> Phrase<'p> {
    /// Parse a phrase; `check` validates each word (done once, when the
    /// gateway loads the config, not on every call).
    pub fn parse(source: &'p str, check: bool) -> Result<Self, String> {
        let mut words = Vec::new();
        for token in tokens(source) {
            let (token, optional) = match token.strip_suffix('?') {
                Some(t) => (t, true),
                None => (token, false),
            };
            let choices = match token.strip_prefix('(') {
                Some(rest) => {
                    rest.strip_suffix(')').ok_or_else(|| format!("{source:?}: unbalanced '(' in {token:?}"))?
                }
                None => token,
            };
            let word = Word { choices, optional };
            let valid = |choice: &str| {
                choice.split_whitespace().next().is_some()
                    && choice.split_whitespace().all(|w| w.chars().all(char::is_alphanumeric))
            };
            if check && !word.choices().all(valid) {
                return Err(format!("{source:?}: {token:?} must be letters and digits, or (a|b) choices of them"));
            }
            words.push(word);
        }
        let Some(first_required) = words.iter().position(|w| !w.optional) else {
            return Err(format!("{source:?}: needs at least one required word"));
        };
        let anchors = words[..=first_required]
            .iter()
            .flat_map(|w| w.choices().filter_map(|c| c.split_whitespace().next()))
            .collect();
        Ok(Self { words, anchors })
    }

    /// Whether the phrase occurs in `words` (spans into `text`).
    pub fn occurs(&self, text: &str, words: &[(usize, usize)]) -> bool {
        let word = |i: usize| &text[words[i].0..words[i].1];
        (0..words.len()).any(|i| {
            self.anchors.iter().any(|a| a.eq_ignore_ascii_case(word(i)))
                && match_at(&self.words, text, words, i).is_some_and(|end| end > i)
        })
    }
}

/// If `pattern` matches the words starting at `i`, the index after the last
/// matched word. A choice may span several words ("you were told").
fn match_at(pattern: &[Word<'_>], text: &str, words: &[(usize, usize)], i: usize) -> Option<usize> {
    let Some((word, rest)) = pattern.split_first() else { return Some(i) };
    for choice in word.choices() {
        let mut len = 0;
        let fits = choice.split_whitespace().all(|part| {
            len += 1;
            words.get(i + len - 1).is_some_and(|&(s, e)| part.eq_ignore_ascii_case(&text[s..e]))
        });
        if fits && let Some(end) = match_at(rest, text, words, i + len) {
            return Some(end);
        }
    }
    if word.optional { match_at(rest, text, words, i) } else { None }
}
