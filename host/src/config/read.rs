//! A strict, field-by-field reader over a TOML table that records every
//! problem with its path and keeps going.
//!
//! serde's `deny_unknown_fields` stops at the first problem; eserde (the crate
//! that collects several) stops at an unknown top-level key and misnames paths
//! inside arrays of tables. So structure is walked here, and serde is used for
//! each leaf value, where one error per value is all there is.

use serde::de::DeserializeOwned;

use super::Problems;

/// One table of a config file, read key by key.
pub(crate) struct Table<'a> {
    table: &'a toml::Table,
    path: String,
    known: Vec<&'static str>,
}

impl<'a> Table<'a> {
    /// The file's top-level table.
    pub(crate) fn root(table: &'a toml::Table) -> Self {
        Self { table, path: String::new(), known: Vec::new() }
    }

    /// The table itself, as it is.
    pub(crate) fn inner(&self) -> &'a toml::Table {
        self.table
    }

    /// The path of `key` in this table, as problems name it.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn value(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.known.push(key);
        self.table.get(key)
    }

    /// An optional value: `None` if absent or invalid (the problem is recorded).
    pub(crate) fn get<T: DeserializeOwned>(&mut self, key: &'static str, problems: &mut Problems) -> Option<T> {
        let value = self.value(key)?;
        match value.clone().try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(self.path_of(key), e.message().trim());
                None
            }
        }
    }

    /// A required value: a missing one is a problem too.
    pub(crate) fn require<T: DeserializeOwned>(&mut self, key: &'static str, problems: &mut Problems) -> Option<T> {
        if !self.table.contains_key(key) {
            self.known.push(key);
            problems.push(self.path_of(key), "is required");
            return None;
        }
        self.get(key, problems)
    }

    /// A value handed on as it is (a plugin's own config, say).
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.value(key)
    }

    /// A sub-table, if present.
    pub(crate) fn table(&mut self, key: &'static str, problems: &mut Problems) -> Option<Table<'a>> {
        let path = self.path_of(key);
        match self.value(key)? {
            toml::Value::Table(table) => Some(Table { table, path, known: Vec::new() }),
            other => {
                problems.push(path, format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), empty if absent.
    pub(crate) fn tables(&mut self, key: &'static str, problems: &mut Problems) -> Vec<Table<'a>> {
        let path = self.path_of(key);
        match self.value(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    toml::Value::Table(table) => Some(Table { table, path: format!("{path}[{i}]"), known: Vec::new() }),
                    other => {
                        problems.push(format!("{path}[{i}]"), format!("expected a table, found {}", other.type_str()));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                problems.push(path, format!("expected an array of tables, found {}", other.type_str()));
                Vec::new()
            }
        }
    }

    /// Report every key that was never asked for.
    pub(crate) fn finish(self, problems: &mut Problems) {
        for key in self.table.keys() {
            if !self.known.contains(&key.as_str()) {
                let expected = self.known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                problems.push(self.path_of(key), format!("unknown field; expected one of {expected}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_every_problem_and_keeps_reading() {
        let table: toml::Table =
            toml::from_str("a = 'x'\nb = 1\nzz = 2\n[[t]]\nn = true\n[[t]]\nn = 'no'\nq = 1\n").unwrap();
        let mut problems = Problems::new("f.toml");
        let mut root = Table::root(&table);
        assert_eq!(root.get::<u64>("a", &mut problems), None);
        assert_eq!(root.get::<u64>("b", &mut problems), Some(1));
        assert_eq!(root.require::<String>("c", &mut problems), None);
        let items = root.tables("t", &mut problems);
        for mut item in items {
            item.get::<bool>("n", &mut problems);
            item.finish(&mut problems);
        }
        root.finish(&mut problems);
        let found: Vec<String> =
            problems.into_error().problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
        assert_eq!(
            found,
            [
                "a: invalid type: string \"x\", expected u64",
                "c: is required",
                "t[1].n: invalid type: string \"no\", expected a boolean",
                "t[1].q: unknown field; expected one of `n`",
                "zz: unknown field; expected one of `a`, `b`, `c`, `t`",
            ]
        );
    }
}
