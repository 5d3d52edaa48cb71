//! Prometheus' text exposition format, written by hand: a handful of
//! counters and gauges that `GET /admin/metrics` serves.

use std::fmt::Write as _;

/// One sample: its label set (`""` or `{name="value",…}`) and value.
pub(crate) type Sample<'a> = (&'a str, u64);

/// Append a metric family with its `HELP` and `TYPE` lines.
pub(crate) fn write(out: &mut String, name: &str, kind: &str, help: &str, samples: &[Sample<'_>]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}
