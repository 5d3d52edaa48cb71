//! Word classes: what each word can mean in an instruction aimed at a model.
//!
//! A `match` on the lowercased word, so the lookup costs a few comparisons and
//! nothing is built at start-up (the plugin runs in a fresh instance per call).
//! A few words of German, French, Spanish and Italian cover the override
//! sentence in those languages.

/// A set of [`Class`] bits.
pub type Classes = u32;

/// What a word can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Class {
    /// ignore, disregard, forget, override…
    OverrideVerb = 1,
    /// previous, prior, above, earlier, all, your, system…
    Prior = 1 << 1,
    /// instructions, prompt, rules, guidelines, task…
    InstructionNoun = 1 << 2,
    /// ai, assistant, model, llm, chatbot, agent, gpt, claude…
    ModelNoun = 1 << 3,
    /// you, your, yourself.
    You = 1 << 4,
    /// A verb whose imperative does harm when a model obeys a stranger:
    /// send, transfer, delete, post, reveal, execute…
    RiskyVerb = 1 << 5,
    /// Any other verb a planted instruction starts with: click, visit, say…
    Verb = 1 << 6,
    /// must, should, shall, need, have.
    Modal = 1 << 7,
    /// instead, rather.
    Instead = 1 << 8,
    /// new, updated, real, actual, true, only, primary.
    Fresh = 1 << 9,
    /// important, urgent, attention, mandatory, critical…
    Urgent = 1 << 10,
    /// Words that may open an imperative without changing it: please, now,
    /// then, also, first, finally, next, immediately, kindly, just, and.
    Lead = 1 << 11,
    /// don't, never, not, without.
    Negation = 1 << 12,
    /// tell, inform, mention, notify, alert, show, ask (with a negation: secrecy).
    Inform = 1 << 13,
    /// user, human, operator, owner.
    User = 1 << 14,
    /// todo, task, note, action, objective, instruction as a label before `:`.
    Label = 1 << 15,
    /// respond, reply, answer, output, print, say, return (with `only`: redirect).
    Respond = 1 << 16,
    /// Secretly, silently, quietly.
    Stealth = 1 << 17,
    /// password, credentials, secrets, token, api key, ssh, id_rsa, env…
    Secret = 1 << 18,
    /// admin, developer, system_message, whoever, anyone: words with no
    /// other class that can still make a sentence an address to the model.
    Role = 1 << 19,
    /// summarizing, processing, reading…: a model at work on the text.
    Working = 1 << 20,
}

impl Class {
    /// Whether `classes` includes this class.
    pub fn of(self, classes: Classes) -> bool {
        classes & self as u32 != 0
    }
}

use Class::*;

const fn set(classes: &[Class]) -> Classes {
    let mut out = 0;
    let mut i = 0;
    while i < classes.len() {
        out |= classes[i] as u32;
        i += 1;
    }
    out
}

/// Every known word and its classes, sorted by byte order (a test checks) so
/// that a word appears once.
const WORDS: &[(&str, Classes)] = &[
    ("abandon", set(&[OverrideVerb])),
    ("above", set(&[Prior])),
    ("accept", set(&[Verb])),
    ("act", set(&[Verb])),
    ("action", set(&[Label])),
    ("actual", set(&[Fresh])),
    ("add", set(&[Verb])),
    ("additionally", set(&[Lead])),
    ("admin", set(&[Role])),
    ("afterwards", set(&[Lead])),
    ("agent", set(&[ModelNoun])),
    ("agents", set(&[ModelNoun])),
    ("agree", set(&[Verb])),
    ("ai", set(&[ModelNoun])),
    ("alert", set(&[Inform])),
    ("alerting", set(&[Inform])),
    ("all", set(&[Prior])),
    ("alle", set(&[Prior])),
    ("also", set(&[Lead])),
    ("analyses", set(&[Working])),
    ("analysing", set(&[Working])),
    ("analyzes", set(&[Working])),
    ("analyzing", set(&[Working])),
    ("and", set(&[Lead])),
    ("answer", set(&[Verb, Respond])),
    ("answering", set(&[Working])),
    ("anteriores", set(&[Prior])),
    ("anweisungen", set(&[InstructionNoun])),
    ("any", set(&[Prior])),
    ("anybody", set(&[Role])),
    ("anyone", set(&[Role])),
    ("apikey", set(&[Secret])),
    ("append", set(&[RiskyVerb])),
    ("approve", set(&[RiskyVerb])),
    ("asistente", set(&[ModelNoun])),
    ("ask", set(&[Inform])),
    ("asking", set(&[Inform])),
    ("assistant", set(&[ModelNoun])),
    ("assistants", set(&[ModelNoun])),
    ("assistent", set(&[ModelNoun])),
    ("assistente", set(&[ModelNoun])),
    ("assistenten", set(&[ModelNoun])),
    ("attach", set(&[Verb])),
    ("attention", set(&[Urgent])),
    ("automated", set(&[ModelNoun])),
    ("avisar", set(&[Inform])),
    ("bard", set(&[ModelNoun])),
    ("benutzer", set(&[User])),
    ("bisherigen", set(&[Prior])),
    ("book", set(&[Verb])),
    ("borra", set(&[RiskyVerb])),
    ("bot", set(&[ModelNoun])),
    ("bots", set(&[ModelNoun])),
    ("browse", set(&[Verb])),
    ("buy", set(&[RiskyVerb])),
    ("bypass", set(&[OverrideVerb])),
    ("call", set(&[RiskyVerb])),
    ("cancel", set(&[RiskyVerb])),
    ("categorise", set(&[Verb])),
    ("categorize", set(&[Verb])),
    ("change", set(&[RiskyVerb])),
    ("chatbot", set(&[ModelNoun])),
    ("chatbots", set(&[ModelNoun])),
    ("chatgpt", set(&[ModelNoun])),
    ("claim", set(&[Verb])),
    ("classify", set(&[Verb])),
    ("claude", set(&[ModelNoun])),
    ("click", set(&[Verb])),
    ("close", set(&[RiskyVerb])),
    ("commands", set(&[InstructionNoun])),
    ("complete", set(&[Verb])),
    ("concatenate", set(&[RiskyVerb])),
    ("confirm", set(&[Verb])),
    ("consider", set(&[Verb])),
    ("consignes", set(&[InstructionNoun])),
    ("constraints", set(&[InstructionNoun])),
    ("contact", set(&[Verb])),
    ("context", set(&[InstructionNoun])),
    ("cookie", set(&[Secret])),
    ("cookies", set(&[Secret])),
    ("copilot", set(&[ModelNoun])),
    ("copy", set(&[Verb])),
    ("covertly", set(&[Stealth])),
    ("create", set(&[Verb])),
    ("credential", set(&[Secret])),
    ("credentials", set(&[Secret])),
    ("criteria", set(&[InstructionNoun])),
    ("critical", set(&[Urgent])),
    ("curl", set(&[RiskyVerb])),
    ("decline", set(&[RiskyVerb])),
    ("delete", set(&[RiskyVerb])),
    ("describe", set(&[Verb])),
    ("developer", set(&[Role])),
    ("dimentica", set(&[OverrideVerb])),
    ("directions", set(&[InstructionNoun])),
    ("directive", set(&[InstructionNoun])),
    ("directives", set(&[InstructionNoun])),
    ("disable", set(&[RiskyVerb])),
    ("disclose", set(&[RiskyVerb])),
    ("discreetly", set(&[Stealth])),
    ("disregard", set(&[OverrideVerb])),
    ("do", set(&[Verb])),
    ("don't", set(&[Negation])),
    ("dont", set(&[Negation])),
    ("download", set(&[Verb])),
    ("drop", set(&[RiskyVerb])),
    ("dump", set(&[RiskyVerb])),
    ("e-mail", set(&[RiskyVerb])),
    ("earlier", set(&[Prior])),
    ("elimina", set(&[RiskyVerb])),
    ("email", set(&[RiskyVerb])),
    ("ensure", set(&[Verb])),
    ("enter", set(&[Verb])),
    ("env", set(&[Secret])),
    ("envia", set(&[RiskyVerb])),
    ("envoie", set(&[RiskyVerb])),
    ("envía", set(&[RiskyVerb])),
    ("erase", set(&[RiskyVerb])),
    ("evaluates", set(&[Working])),
    ("evaluating", set(&[Working])),
    ("every", set(&[Prior])),
    ("everything", set(&[Prior])),
    ("execute", set(&[RiskyVerb])),
    ("exfiltrate", set(&[RiskyVerb])),
    ("existing", set(&[Prior])),
    ("expected", set(&[Modal])),
    ("export", set(&[RiskyVerb])),
    ("fetch", set(&[Verb])),
    ("finally", set(&[Lead])),
    ("find", set(&[Verb])),
    ("first", set(&[Lead])),
    ("fixme", set(&[Label])),
    ("flag", set(&[Inform])),
    ("follow", set(&[Verb])),
    ("forget", set(&[OverrideVerb])),
    ("former", set(&[Prior])),
    ("forward", set(&[RiskyVerb])),
    ("gemini", set(&[ModelNoun])),
    ("generating", set(&[Working])),
    ("get", set(&[Verb])),
    ("give", set(&[Verb])),
    ("go", set(&[Verb])),
    ("goal", set(&[InstructionNoun, Label])),
    ("gpt", set(&[ModelNoun])),
    ("grant", set(&[RiskyVerb])),
    ("guardrails", set(&[InstructionNoun])),
    ("guidance", set(&[InstructionNoun])),
    ("guidelines", set(&[InstructionNoun])),
    ("have", set(&[Modal])),
    ("hinweis", set(&[Label])),
    ("hire", set(&[Verb])),
    ("human", set(&[User])),
    ("ia", set(&[ModelNoun])),
    ("id_rsa", set(&[Secret])),
    ("ignora", set(&[OverrideVerb])),
    ("ignorar", set(&[OverrideVerb])),
    ("ignore", set(&[OverrideVerb])),
    ("ignorez", set(&[OverrideVerb])),
    ("ignoriere", set(&[OverrideVerb])),
    ("ignorieren", set(&[OverrideVerb])),
    ("immediately", set(&[Urgent])),
    ("important", set(&[Urgent])),
    ("include", set(&[Verb])),
    ("inform", set(&[Inform])),
    ("informar", set(&[Inform])),
    ("informieren", set(&[Inform])),
    ("informing", set(&[Inform])),
    ("initial", set(&[Prior])),
    ("insert", set(&[RiskyVerb])),
    ("insist", set(&[Verb])),
    ("install", set(&[RiskyVerb])),
    ("instead", set(&[Instead])),
    ("instrucciones", set(&[InstructionNoun])),
    ("instructed", set(&[Modal])),
    ("instruction", set(&[InstructionNoun])),
    ("instructions", set(&[InstructionNoun])),
    ("invite", set(&[RiskyVerb])),
    ("invoke", set(&[RiskyVerb])),
    ("istruzioni", set(&[InstructionNoun])),
    ("its", set(&[Prior])),
    ("iunstructions", set(&[InstructionNoun])),
    ("just", set(&[Lead])),
    ("keys", set(&[Secret])),
    ("ki", set(&[ModelNoun])),
    ("kindly", set(&[Lead])),
    ("label", set(&[Verb])),
    ("lastly", set(&[Lead])),
    ("latest", set(&[Fresh])),
    ("leak", set(&[RiskyVerb])),
    ("leite", set(&[RiskyVerb])),
    ("let", set(&[Inform])),
    ("letting", set(&[Inform])),
    ("list", set(&[Verb])),
    ("llama", set(&[ModelNoun])),
    ("llm", set(&[ModelNoun])),
    ("llms", set(&[ModelNoun])),
    ("lösche", set(&[RiskyVerb])),
    ("main", set(&[Fresh])),
    ("make", set(&[Verb])),
    ("mandatory", set(&[Urgent])),
    ("mark", set(&[Verb])),
    ("mention", set(&[Inform])),
    ("mentioning", set(&[Inform])),
    ("merge", set(&[RiskyVerb])),
    ("messages", set(&[InstructionNoun])),
    ("mission", set(&[InstructionNoun, Label])),
    ("mistral", set(&[ModelNoun])),
    ("model", set(&[ModelNoun])),
    ("models", set(&[ModelNoun])),
    ("modify", set(&[RiskyVerb])),
    ("move", set(&[Verb])),
    ("must", set(&[Modal])),
    ("navigate", set(&[Verb])),
    ("need", set(&[Modal])),
    ("needs", set(&[Modal])),
    ("neglect", set(&[OverrideVerb])),
    ("never", set(&[Negation])),
    ("new", set(&[Fresh])),
    ("next", set(&[Lead])),
    ("nobody", set(&[Negation])),
    ("not", set(&[Negation])),
    ("nota", set(&[Label])),
    ("note", set(&[Label])),
    ("notice", set(&[Urgent])),
    ("notify", set(&[Inform])),
    ("notifying", set(&[Inform])),
    ("now", set(&[Lead, Urgent])),
    ("nutzer", set(&[User])),
    ("objective", set(&[InstructionNoun, Label])),
    ("obliged", set(&[Modal])),
    ("ohne", set(&[Negation])),
    ("olvida", set(&[OverrideVerb])),
    ("olvide", set(&[OverrideVerb])),
    ("only", set(&[Fresh])),
    ("open", set(&[Verb])),
    ("operator", set(&[User])),
    ("ordered", set(&[Modal])),
    ("orders", set(&[InstructionNoun])),
    ("original", set(&[Prior])),
    ("oublie", set(&[OverrideVerb])),
    ("oubliez", set(&[OverrideVerb])),
    ("output", set(&[Verb, Respond])),
    ("override", set(&[OverrideVerb])),
    ("overrule", set(&[OverrideVerb])),
    ("owner", set(&[User])),
    ("parses", set(&[Working])),
    ("parsing", set(&[Working])),
    ("passport", set(&[Secret])),
    ("passwd", set(&[Secret])),
    ("password", set(&[Secret])),
    ("passwords", set(&[Secret])),
    ("paste", set(&[RiskyVerb])),
    ("pay", set(&[RiskyVerb])),
    ("perform", set(&[Verb])),
    ("please", set(&[Lead])),
    ("post", set(&[RiskyVerb])),
    ("precedentes", set(&[Prior])),
    ("precedenti", set(&[Prior])),
    ("preceding", set(&[Prior])),
    ("pretend", set(&[Verb])),
    ("previous", set(&[Prior])),
    ("primary", set(&[Fresh])),
    ("print", set(&[Verb, Respond])),
    ("prior", set(&[Prior])),
    ("priority", set(&[Urgent])),
    ("processes", set(&[Working])),
    ("processing", set(&[Working])),
    ("programming", set(&[InstructionNoun])),
    ("prompt", set(&[InstructionNoun])),
    ("prompts", set(&[InstructionNoun])),
    ("provide", set(&[Verb])),
    ("précédentes", set(&[Prior])),
    ("prévenir", set(&[Inform])),
    ("publish", set(&[RiskyVerb])),
    ("purchase", set(&[RiskyVerb])),
    ("push", set(&[RiskyVerb])),
    ("put", set(&[Verb])),
    ("quietly", set(&[Stealth])),
    ("rank", set(&[Verb])),
    ("rate", set(&[Verb])),
    ("rather", set(&[Instead])),
    ("read", set(&[Verb])),
    ("reading", set(&[Working])),
    ("reads", set(&[Working])),
    ("real", set(&[Fresh])),
    ("recommend", set(&[Verb])),
    ("reenvía", set(&[RiskyVerb])),
    ("refund", set(&[RiskyVerb])),
    ("reject", set(&[Verb])),
    ("remove", set(&[RiskyVerb])),
    ("repeat", set(&[Verb, Respond])),
    ("reply", set(&[Verb, Respond])),
    ("replying", set(&[Working])),
    ("report", set(&[Verb])),
    ("required", set(&[Modal])),
    ("reserve", set(&[Verb])),
    ("reset", set(&[RiskyVerb])),
    ("respond", set(&[Verb, Respond])),
    ("responding", set(&[Working])),
    ("restrictions", set(&[InstructionNoun])),
    ("retrieve", set(&[Verb])),
    ("return", set(&[Verb, Respond])),
    ("reveal", set(&[RiskyVerb])),
    ("reviewing", set(&[Working])),
    ("revised", set(&[Fresh])),
    ("rm", set(&[RiskyVerb])),
    ("rules", set(&[InstructionNoun])),
    ("run", set(&[RiskyVerb])),
    ("sans", set(&[Negation])),
    ("save", set(&[Verb])),
    ("say", set(&[Verb, Respond])),
    ("schedule", set(&[Verb])),
    ("schicke", set(&[RiskyVerb])),
    ("score", set(&[Verb])),
    ("search", set(&[Verb])),
    ("secret", set(&[Secret])),
    ("secretly", set(&[Stealth])),
    ("secrets", set(&[Secret])),
    ("send", set(&[RiskyVerb])),
    ("sende", set(&[RiskyVerb])),
    ("set", set(&[Verb])),
    ("shall", set(&[Modal])),
    ("share", set(&[RiskyVerb])),
    ("should", set(&[Modal])),
    ("show", set(&[Verb, Inform])),
    ("silently", set(&[Stealth])),
    ("simply", set(&[Lead])),
    ("sin", set(&[Negation])),
    ("skip", set(&[OverrideVerb])),
    ("so", set(&[Lead])),
    ("ssh", set(&[Secret])),
    ("start", set(&[Verb])),
    ("state", set(&[Verb])),
    ("stop", set(&[Urgent])),
    ("subsequently", set(&[Lead])),
    ("sudo", set(&[RiskyVerb])),
    ("summarises", set(&[Working])),
    ("summarising", set(&[Working])),
    ("summarize", set(&[Verb])),
    ("summarizes", set(&[Working])),
    ("summarizing", set(&[Working])),
    ("supprime", set(&[RiskyVerb])),
    ("system", set(&[Prior])),
    ("system_message", set(&[Role])),
    ("task", set(&[InstructionNoun, Label])),
    ("tasks", set(&[InstructionNoun, Label])),
    ("tell", set(&[Verb, Inform])),
    ("telling", set(&[Inform])),
    ("then", set(&[Lead])),
    ("to", set(&[Lead])),
    ("todas", set(&[Prior])),
    ("todo", set(&[Label])),
    ("token", set(&[Secret])),
    ("tokens", set(&[Secret])),
    ("toutes", set(&[Prior])),
    ("transfer", set(&[RiskyVerb])),
    ("transfère", set(&[RiskyVerb])),
    ("translate", set(&[Verb])),
    ("translating", set(&[Working])),
    ("treat", set(&[Verb])),
    ("true", set(&[Fresh])),
    ("tutte", set(&[Prior])),
    ("type", set(&[Verb])),
    ("update", set(&[Verb])),
    ("updated", set(&[Fresh])),
    ("upload", set(&[RiskyVerb])),
    ("urgent", set(&[Urgent])),
    ("use", set(&[Verb])),
    ("user", set(&[User])),
    ("user's", set(&[User])),
    ("users", set(&[User])),
    ("usuario", set(&[User])),
    ("utente", set(&[User])),
    ("utilisateur", set(&[User])),
    ("vergessen", set(&[OverrideVerb])),
    ("vergiss", set(&[OverrideVerb])),
    ("visit", set(&[Verb])),
    ("vorherigen", set(&[Prior])),
    ("warn", set(&[Inform])),
    ("warning", set(&[Urgent])),
    ("wget", set(&[RiskyVerb])),
    ("whoever", set(&[Role])),
    ("wipe", set(&[RiskyVerb])),
    ("wire", set(&[RiskyVerb])),
    ("without", set(&[Negation])),
    ("write", set(&[Verb, Respond])),
    ("you", set(&[You])),
    ("you'll", set(&[You])),
    ("you're", set(&[You])),
    ("you've", set(&[You])),
    ("your", set(&[You, Prior])),
    ("youre", set(&[You])),
    ("yourself", set(&[You])),
];

/// Slots of the lookup table: a power of two, over three times the words.
const SLOTS: usize = 1024;

/// FNV-1a, usable in a constant.
const fn hash(bytes: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h as usize
}

/// An open-addressing table over `WORDS`, built at compile time: slot →
/// index into `WORDS` plus one (0: empty). A lookup hashes the word and
/// compares it with one entry, most often none.
const TABLE: [u16; SLOTS] = {
    let mut table = [0u16; SLOTS];
    let mut i = 0;
    while i < WORDS.len() {
        let mut slot = hash(WORDS[i].0.as_bytes()) & (SLOTS - 1);
        while table[slot] != 0 {
            slot = (slot + 1) & (SLOTS - 1);
        }
        table[slot] = (i + 1) as u16;
        i += 1;
    }
    table
};

/// The longest known word, in bytes: longer ones are not looked up.
const LONGEST: usize = {
    let (mut longest, mut i) = (0, 0);
    while i < WORDS.len() {
        if WORDS[i].0.len() > longest {
            longest = WORDS[i].0.len();
        }
        i += 1;
    }
    longest
};

/// The classes of a lowercased word.
pub fn classes(word: &str) -> Classes {
    lookup(word.as_bytes(), |b| b)
}

/// The classes of an ASCII word as `map` reads it (after lowercasing), with
/// no copy: `map` is the identity, or rot13.
pub fn classes_ascii(word: &[u8], map: impl Fn(u8) -> u8) -> Classes {
    lookup(word, |b| map(b.to_ascii_lowercase()))
}

fn lookup(word: &[u8], map: impl Fn(u8) -> u8) -> Classes {
    if word.len() > LONGEST {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for &b in word {
        h ^= map(b) as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut slot = h as usize & (SLOTS - 1);
    loop {
        match TABLE[slot] {
            0 => return 0,
            i => {
                let (known, classes) = WORDS[i as usize - 1];
                let known = known.as_bytes();
                if known.len() == word.len() && known.iter().zip(word).all(|(k, &w)| *k == map(w)) {
                    return classes;
                }
                slot = (slot + 1) & (SLOTS - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_words_appear_once() {
        assert!(WORDS.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()), "sort WORDS by byte order");
        assert_eq!(classes("ignore"), Class::OverrideVerb as u32);
        assert_eq!(classes("your"), Class::You as u32 | Class::Prior as u32);
        assert_eq!(classes("zebra"), 0);
    }
}
