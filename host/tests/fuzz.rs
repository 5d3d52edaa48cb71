//! Fuzz targets for everything that reads untrusted bytes: JSON-RPC
//! messages, the nesting-depth guard, the SSE parser, `Mcp-Param-*` header
//! values and `_meta`, the gateway and chain configs, and pack manifests.
//!
//! Under `cargo test` each target replays its corpus
//! (`tests/__fuzz__/<target>/corpus`, seeded with real messages, streams,
//! configs and manifests) and then runs random inputs for one second;
//! `BOLERO_RANDOM_TEST_TIME_MS` or `BOLERO_RANDOM_ITERATIONS` runs longer
//! (bench/README.md has the command and what a run covered). bolero runs on
//! the stable toolchain. A target fails on a panic or a broken property,
//! never on an input being refused.

use std::path::Path;

use bolero::check;
use serde_json::Value;
use warden::{
    config,
    mcp::{self, jsonrpc, sse},
    pack::{Manifest, Trust},
};

#[test]
fn jsonrpc_messages() {
    check!().for_each(|bytes: &[u8]| {
        // The depth guard is monotonic in its bound and agrees with itself.
        let deep64 = jsonrpc::nests_deeper_than(bytes, 64);
        assert!(!deep64 || jsonrpc::nests_deeper_than(bytes, 63));
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else { return };
        // serde_json refuses past 128 levels: anything it read is at most that deep.
        assert!(!jsonrpc::nests_deeper_than(bytes, 128));
        if let Ok(message) = jsonrpc::Message::parse(value) {
            // What the gateway re-serialises parses back to the same message.
            let again = jsonrpc::Message::parse(message.to_value()).expect("a message's own encoding parses");
            assert_eq!(again.to_value(), message.to_value());
        }
    });
}

#[test]
fn sse_streams() {
    check!().for_each(|bytes: &[u8]| {
        // However the bytes are cut into chunks, the same events come out.
        let whole = sse::Parser::default().push(bytes);
        let cut = bytes.first().map_or(0, |b| usize::from(*b)) % (bytes.len() + 1);
        let mut parser = sse::Parser::default();
        let mut pieces = parser.push(&bytes[..cut]);
        pieces.extend(parser.push(&bytes[cut..]));
        assert_eq!(format!("{whole:?}"), format!("{pieces:?}"));
    });
}

#[test]
fn header_values_and_meta() {
    check!().for_each(|bytes: &[u8]| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        // Any text survives the trip through an Mcp-Param-* header.
        let encoded = mcp::encode_header_value(text);
        assert!(encoded.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()), "{encoded:?}");
        assert_eq!(mcp::decode_header_value(&encoded).as_deref(), Some(text));
        let _ = mcp::decode_header_value(text);
        if let Ok(params) = serde_json::from_str::<Value>(text) {
            let _ = mcp::request_meta(&params);
            let _ = mcp::progress_token(&params);
            for (_, path) in mcp::param_header_specs(&params) {
                let _ = mcp::param_header_value(&params, &path);
            }
        }
    });
}

#[test]
fn gateway_configs() {
    check!().for_each(|bytes: &[u8]| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        let _ = config::gateway::parse(text, Path::new("/nonexistent/warden.toml"));
    });
}

#[test]
fn chain_configs() {
    check!().for_each(|bytes: &[u8]| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        let _ = config::chain::parse(text, Path::new("/nonexistent/chain.toml"), &Trust::default());
    });
}

#[test]
fn pack_manifests() {
    check!().for_each(|bytes: &[u8]| {
        let _ = Manifest::parse(bytes, Path::new("/nonexistent/manifest.toml"));
    });
}
