//! The reference policies, compiled into the gateway binary so a chain config
//! can name them as `builtin:<name>` without shipping `.wasm` files.
//!
//! The build script builds them from `plugins/` for `wasm32-wasip2`.

/// Reference policy names and their components.
const BUILTINS: [(&str, &[u8]); 4] = [
    ("rbac", include_bytes!(concat!(env!("WARDEN_PLUGIN_DIR"), "/rbac.wasm"))),
    ("chain-detect", include_bytes!(concat!(env!("WARDEN_PLUGIN_DIR"), "/chain_detect.wasm"))),
    ("injection-sanitizer", include_bytes!(concat!(env!("WARDEN_PLUGIN_DIR"), "/injection_sanitizer.wasm"))),
    ("tenant-filter", include_bytes!(concat!(env!("WARDEN_PLUGIN_DIR"), "/tenant_filter.wasm"))),
];

/// The component of a built-in policy.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of the built-in policies.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}
