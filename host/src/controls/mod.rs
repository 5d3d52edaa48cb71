//! Operator controls: what an operator decides while the gateway runs,
//! apart from its config and its policies: kill switches, the approved pins
//! of tool definitions, and answers to calls a policy asked a person
//! about; and what config says of a tool's future (deprecation).
//!
//! A control lives in the state store ([`crate::state::StateStore::put_control`]):
//! in memory it is saved to `[state] file` and read back at start, with
//! Redis every replica shares it. Every change bumps one generation number;
//! a replica that sees a newer one (in the limit check's own Redis call, or
//! by polling) reads the controls again, so a switch set on one replica
//! holds on every other by their next call.

pub mod approvals;
pub mod deprecation;
pub mod pins;
pub mod switches;

pub use approvals::{ApprovalSettings, Approvals, Ask, Via};
pub use deprecation::Deprecation;
pub use pins::{Finding, LockFile, OnChange, PinSettings, Pins};
pub use switches::{Switch, SwitchKind, SwitchSet, Switches};
