//! A plugin built against `wit/policy.wit` as it was released at
//! `warden:policy@0.1.0` (the copy beside this file, never edited), without
//! the SDK, which follows the current contract. The gateway's tests load it
//! to show that a plugin built for 0.1.0 keeps loading and deciding the same
//! way: it denies calls to tools named `forbidden` and hides tools named
//! `hidden`.

#![cfg(target_arch = "wasm32")]
#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    path: "wit",
    world: "warden:policy/policy",
});

use exports::warden::policy::{call_hook, config, list_hook, result_hook};
use warden::policy::types::{Call, CallVerdict, Denial, ListRequest, ListVerdict, ListedTool, ResultVerdict};

struct Contract010;

impl config::Guest for Contract010 {
    fn validate_config(config: String) -> Result<(), Vec<String>> {
        if config.trim().is_empty() || config.trim() == "{}" { Ok(()) } else { Err(vec!["takes no config".into()]) }
    }
}

impl call_hook::Guest for Contract010 {
    fn on_call(_config: String, call: Call) -> CallVerdict {
        if call.target.name == "forbidden" {
            return CallVerdict::Deny(Denial { code: "v010".into(), reason: "denied by a 0.1.0 plugin".into() });
        }
        CallVerdict::Allow
    }
}

impl result_hook::Guest for Contract010 {
    fn on_result(_config: String, _call: Call, _output: String) -> ResultVerdict {
        ResultVerdict::Allow
    }
}

impl list_hook::Guest for Contract010 {
    fn on_list(_config: String, _request: ListRequest, tools: Vec<ListedTool>) -> Vec<ListVerdict> {
        tools
            .iter()
            .map(|t| {
                if t.name == "hidden" {
                    ListVerdict::Hide("hidden by a 0.1.0 plugin".into())
                } else {
                    ListVerdict::Show
                }
            })
            .collect()
    }
}

export!(Contract010);
