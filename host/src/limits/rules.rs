//! The rules as configured: what a `[[limit]]` or `[[quota]]` covers, how
//! it keys its counts, and its windows.

use std::time::Duration;

use globset::GlobSet;

use crate::{
    auth::Principal,
    engine::{Target, TargetKind},
};

/// The live `[[limit]]` and `[[quota]]` rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Rate limits, in config order.
    pub rates: Vec<RateRule>,
    /// Quotas, in config order.
    pub quotas: Vec<QuotaRule>,
}

impl Limits {
    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty() && self.quotas.is_empty()
    }
}

/// One `[[limit]]`: `count` calls per `period`, up to `burst` at once.
#[derive(Clone, Debug, PartialEq)]
pub struct RateRule {
    /// Its name (in errors, headers, metrics and the audit log).
    pub name: String,
    /// Calls per period.
    pub count: u64,
    /// The period.
    pub period: Duration,
    /// Microseconds between calls at the sustained rate.
    pub interval_us: u64,
    /// Calls that may come at once.
    pub burst: u64,
    /// What one bucket counts.
    pub key: KeyBy,
    /// Which calls it covers.
    pub scope: Scope,
    /// Count and audit, never refuse.
    pub shadow: bool,
}

/// One `[[quota]]`: calls and/or upstream time per window.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaRule {
    /// Its name.
    pub name: String,
    /// Calls per window.
    pub calls: Option<u64>,
    /// Upstream time per window, milliseconds.
    pub upstream_ms: Option<u64>,
    /// The window.
    pub window: Window,
    /// What one counter counts.
    pub key: KeyBy,
    /// Which calls it covers.
    pub scope: Scope,
    /// Count and audit, never refuse.
    pub shadow: bool,
}

/// Whose calls one bucket or counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBy {
    /// Everyone's, together.
    Global,
    /// Each tenant's (principals without a tenant share one, `""`).
    Tenant,
    /// Each subject's (within its tenant).
    Subject,
    /// Each tenant's, per tool, resource or prompt.
    TenantTool,
}

impl KeyBy {
    /// The words config accepts.
    pub const NAMES: [&str; 4] = ["global", "tenant", "subject", "tenant-tool"];

    /// By its config word.
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "global" => Self::Global,
            "tenant" => Self::Tenant,
            "subject" => Self::Subject,
            "tenant-tool" => Self::TenantTool,
            _ => return None,
        })
    }

    /// The key part for a call. Parts are length-prefixed, so no tenant,
    /// subject or tool name can make two keys collide.
    pub fn of(&self, principal: &Principal, target: &Target) -> String {
        let part = |s: &str| format!("{}:{s}", s.len());
        let tenant = principal.tenant.as_deref().unwrap_or_default();
        match self {
            Self::Global => "*".into(),
            Self::Tenant => part(tenant),
            Self::Subject => format!("{}{}", part(tenant), part(&principal.subject)),
            Self::TenantTool => format!("{}{}", part(tenant), part(&format!("{}/{}", target.server, target.name))),
        }
    }
}

/// A quota's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Fixed lengths aligned to the Unix epoch (so a day is a UTC day).
    Fixed(Duration),
    /// UTC calendar months.
    Month,
}

impl Window {
    /// The window `now_ms` falls in: start and end, ms since the epoch.
    pub fn bounds(&self, now_ms: u64) -> (u64, u64) {
        match self {
            Self::Fixed(length) => {
                let length = (length.as_millis() as u64).max(1);
                let start = now_ms - now_ms % length;
                (start, start + length)
            }
            Self::Month => {
                let (year, month) = year_month(now_ms / 86_400_000);
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                (days_from_civil(year, month, 1) * 86_400_000, days_from_civil(next_year, next_month, 1) * 86_400_000)
            }
        }
    }

    /// The window's length in seconds, for the `RateLimit-Policy` header.
    pub fn length_s(&self, now_ms: u64) -> u64 {
        let (start, end) = self.bounds(now_ms);
        (end - start) / 1000
    }
}

/// Days since 1970-01-01 of a civil (proleptic Gregorian) date; after
/// H. Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as u64
}

/// The year and month of a day since 1970-01-01.
fn year_month(days: u64) -> (i64, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Which calls a rule covers: each given field must match (absent: any).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// The patterns as written, by field, for comparison and display.
    pub written: Vec<(&'static str, Vec<String>)>,
    pub(crate) tenants: Option<GlobSet>,
    pub(crate) subjects: Option<GlobSet>,
    /// The principal must hold one of these roles (empty: any).
    pub roles: Vec<String>,
    pub(crate) servers: Option<GlobSet>,
    /// `server/name` patterns per kind; if any kind is given, only calls of
    /// the kinds given match.
    pub(crate) tools: Option<GlobSet>,
    pub(crate) resources: Option<GlobSet>,
    pub(crate) prompts: Option<GlobSet>,
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Scope {
    /// Whether a call of `principal` to `target` is covered.
    pub fn covers(&self, principal: &Principal, target: &Target) -> bool {
        let matches = |set: &Option<GlobSet>, value: &str| set.as_ref().is_none_or(|s| s.is_match(value));
        if !matches(&self.tenants, principal.tenant.as_deref().unwrap_or_default())
            || !matches(&self.subjects, &principal.subject)
            || !matches(&self.servers, &target.server)
            || !(self.roles.is_empty() || self.roles.iter().any(|r| principal.roles.contains(r)))
        {
            return false;
        }
        if self.tools.is_none() && self.resources.is_none() && self.prompts.is_none() {
            return true;
        }
        let patterns = match target.kind {
            TargetKind::Tool => &self.tools,
            TargetKind::Resource => &self.resources,
            TargetKind::Prompt => &self.prompts,
        };
        patterns.as_ref().is_some_and(|set| set.is_match(format!("{}/{}", target.server, target.name)))
    }
}

#[cfg(test)]
pub(super) fn civil(days: u64) -> (i64, u32) {
    year_month(days)
}

#[cfg(test)]
pub(super) fn days(year: i64, month: u32, day: u32) -> u64 {
    days_from_civil(year, month, day)
}
