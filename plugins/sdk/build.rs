//! Generates the `export!` macro with the absolute path of the repository's
//! `wit/` folder baked in.
//!
//! `wit_bindgen::generate!` resolves `path` against the manifest folder of the
//! crate that *invokes* it (the plugin), so a macro shipped by this SDK cannot
//! use a relative path; it needs this one. Each hook combination gets its own
//! arm because the world text must reach `generate!` as one string literal.

use std::{env, fmt::Write, fs, path::PathBuf};

const HOOKS: [&str; 4] = ["call", "result", "list", "catalog"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let wit = manifest.join("../../wit").canonicalize().expect("the repository's wit/ folder");
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-changed=build.rs");

    let wit = wit.to_str().expect("a UTF-8 path to wit/").replace('\\', "/");
    let mut arms = String::new();
    // Every non-empty subset of the hooks, in canonical order.
    for mask in 1u8..(1 << HOOKS.len()) {
        let hooks: Vec<&str> = (0..HOOKS.len()).filter(|i| mask & (1 << i) != 0).map(|i| HOOKS[i]).collect();
        let includes: String = hooks.iter().map(|h| format!("include warden:policy/{h}-policy@0.1.1; ")).collect();
        let pattern = hooks.join(", ");
        let impls: String = hooks.iter().map(|h| format!("$crate::__impl_hook!({h}, $ty);\n")).collect();
        let native: String = hooks.iter().map(|h| format!("&$crate::__native_hook!({h}, $ty), ")).collect();
        write!(
            arms,
            r#"
    ($ty:ty : {pattern}) => {{
        // Exported names like `warden:policy/call-hook@0.1.1#on-call` are not
        // valid symbols for native linkers, so the exports exist only in Wasm
        // builds; native builds (unit tests) compile the policy logic alone.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code, clippy::all)]
        mod __warden_export {{
            #[allow(unused_imports)]
            use super::*;
            $crate::__private::wit_bindgen::generate!({{
                path: "{wit}",
                inline: "package warden:plugin; world plugin {{ {includes}}}",
                world: "warden:plugin/plugin",
                with: {{
                    "warden:policy/types@0.1.1": ::warden_policy_sdk::types,
                    "warden:policy/host@0.1.1": ::warden_policy_sdk::__private::host,
                }},
                runtime_path: "::warden_policy_sdk::__private::wit_bindgen::rt",
            }});
            struct Export;
            impl exports::warden::policy::config::Guest for Export {{
                fn validate_config(config: String) -> Result<(), Vec<String>> {{
                    $crate::__private::validate_config::<$ty>(&config)
                }}
            }}
            {impls}
            export!(Export);
        }}
        // Natively there are no exports; referencing each hook keeps the
        // policy's code from being reported as unused.
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub const __WARDEN_HOOKS: &[&dyn ::core::any::Any] = &[
            &($crate::__private::validate_config::<$ty> as fn(&str) -> Result<(), Vec<String>>),
            {native}
        ];
    }};"#
        )
        .unwrap();
    }
    let source = format!(
        r#"/// Exports a policy type as a Warden plugin, with the hooks listed after the colon.
///
/// Hooks are written in the order `call`, `result`, `list`, `catalog`; list only
/// the ones your type implements (`CallPolicy`, `ResultPolicy`, `ListPolicy`,
/// `CatalogPolicy`). Hooks you do not list are absent from the component, and
/// the gateway never calls them.
///
/// ```
/// use warden_policy_sdk::{{Call, CallPolicy, CallVerdict, ListPolicy, ListRequest, ListVerdict, ListedTool, Policy}};
///
/// struct MyPolicy;
/// impl Policy for MyPolicy {{
///     type Config = ();
/// }}
/// impl CallPolicy for MyPolicy {{
///     fn on_call(_: &(), _: &Call) -> CallVerdict {{
///         CallVerdict::Allow
///     }}
/// }}
/// impl ListPolicy for MyPolicy {{
///     fn on_list(_: &(), _: &ListRequest, tools: &[ListedTool]) -> Vec<ListVerdict> {{
///         vec![ListVerdict::Show; tools.len()]
///     }}
/// }}
///
/// warden_policy_sdk::export!(MyPolicy: call, list);
/// ```
#[macro_export]
macro_rules! export {{{arms}
}}
"#
    );
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("export_macro.rs");
    fs::write(out, source).unwrap();
}
