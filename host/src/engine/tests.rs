//! The engine against real components: the hostile test plugin, built from
//! `plugins/testing/hostile` by the build script, misbehaves on request and
//! every misbehaviour must come back as a clear, contained error.

use std::{sync::OnceLock, time::Duration};

use serde_json::{Value, json};

use super::*;

pub(crate) fn hostile_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(concat!(env!("WARDEN_PLUGIN_DIR"), "/hostile.wasm")).unwrap())
}

pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(&EngineSettings::default()).unwrap())
}

fn hostile(limits: Limits) -> Plugin {
    engine().load("hostile", hostile_bytes(), limits).unwrap()
}

pub(crate) fn call(arguments: Value) -> Call {
    Call {
        request_id: "req-1".into(),
        session_id: Some("sess-1".into()),
        principal: Principal {
            subject: "alice".into(),
            tenant: Some("acme".into()),
            roles: vec!["analyst".into()],
            scopes: vec!["tools:read".into()],
            claims: r#"{"sub":"alice"}"#.into(),
        },
        target: Target {
            kind: TargetKind::Tool,
            server: "analytics".into(),
            name: "query_analytics_db".into(),
            annotations: ToolAnnotations {
                title: None,
                read_only_hint: Some(true),
                destructive_hint: Some(false),
                idempotent_hint: None,
                open_world_hint: None,
            },
        },
        arguments: arguments.to_string(),
        history: vec![PastCall {
            kind: TargetKind::Tool,
            server: "secrets".into(),
            name: "read_secrets".into(),
            timestamp_ms: 1_700_000_000_000,
        }],
        timestamp_ms: 1_700_000_060_000,
    }
}

fn behave(behavior: &str) -> String {
    json!({ "behavior": behavior, "name": "h" }).to_string()
}

fn on_call_failure(plugin: &Plugin, behavior: &str) -> PluginError {
    plugin.on_call(&behave(behavior), &call(json!({}))).expect_err("the plugin must fail")
}

/// After any failure the same plugin must still serve a well-behaved call.
fn still_serves(plugin: &Plugin) {
    let ok = plugin.on_call(&behave("allow"), &call(json!({}))).unwrap();
    assert_eq!(ok.value, CallVerdict::Allow);
}

#[test]
fn deadline_rounds_up_to_whole_ticks() {
    assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
    assert_eq!(deadline_ticks(Duration::from_micros(1500)), 3);
    assert_eq!(deadline_ticks(Duration::from_millis(100)), 101);
}

#[test]
fn detects_every_exported_hook() {
    let plugin = hostile(Limits::default());
    for hook in [Hook::OnCall, Hook::OnResult, Hook::OnList, Hook::ValidateConfig] {
        assert!(plugin.hooks().has(hook), "{hook} should be detected");
    }
    assert_eq!(plugin.digest().len(), 64);
}

#[test]
fn well_behaved_calls_report_their_cost() {
    let plugin = hostile(Limits::default());
    let out = plugin.on_call(&behave("allow"), &call(json!({"q": 1}))).unwrap();
    assert_eq!(out.value, CallVerdict::Allow);
    assert!(out.fuel_used > 0 && out.fuel_used < Limits::default().fuel);
}

#[test]
fn the_call_record_reaches_the_plugin_intact() {
    let plugin = hostile(Limits::default());
    let out = plugin.on_call(&behave("echo"), &call(json!({"query": "SELECT 1"}))).unwrap();
    let CallVerdict::Rewrite(rewrite) = out.value else { panic!("expected a rewrite, got {:?}", out.value) };
    let seen: Value = serde_json::from_str(&rewrite.json).unwrap();
    assert_eq!(
        seen,
        json!({
            "request_id": "req-1",
            "session_id": "sess-1",
            "subject": "alice",
            "tenant": "acme",
            "roles": ["analyst"],
            "scopes": ["tools:read"],
            "claims": {"sub": "alice"},
            "kind": "tool",
            "server": "analytics",
            "name": "query_analytics_db",
            "destructive": false,
            "arguments": {"query": "SELECT 1"},
            "history": ["secrets/read_secrets"],
            "timestamp_ms": 1_700_000_060_000u64,
        })
    );
}

#[test]
fn the_sandbox_grants_nothing() {
    let plugin = hostile(Limits::default());
    let out = plugin.on_call(&behave("probe-sandbox"), &call(json!({}))).unwrap();
    let CallVerdict::Deny(report) = out.value else { panic!("expected the probe's report") };
    let seen: Value = serde_json::from_str(&report.reason).unwrap();
    assert!(seen["read_file"]["Err"].is_string(), "file read must fail: {seen}");
    assert!(seen["list_root"]["Err"].is_string(), "directory listing must fail: {seen}");
    assert!(seen["connect"]["Err"].is_string(), "network must fail: {seen}");
    assert_eq!(seen["env_vars"], 0);
    assert_eq!(seen["args"], 0);
    // The clock is frozen at the call's timestamp.
    assert_eq!(seen["now_ms"], 1_700_000_060_000u64);
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let plugin = hostile(Limits { fuel: 5_000_000, deadline: Duration::from_secs(30), ..Limits::default() });
    let err = on_call_failure(&plugin, "spin");
    assert_eq!(err.failure, Failure::OutOfFuel { limit: 5_000_000 });
    assert_eq!(err.to_string(), "policy \"hostile\" on-call ran out of fuel (limit 5000000)");
    still_serves(&plugin);
}

#[test]
fn a_slow_loop_passes_its_deadline() {
    let plugin = hostile(Limits { fuel: u64::MAX / 2, deadline: Duration::from_millis(20), ..Limits::default() });
    let err = on_call_failure(&plugin, "spin");
    assert_eq!(err.failure, Failure::Deadline { limit: Duration::from_millis(20) });
    assert_eq!(err.to_string(), "policy \"hostile\" on-call passed its deadline (20 ms)");
    still_serves(&plugin);
}

/// Without fuel metering a plugin is bounded by its deadline alone: a tiny
/// fuel limit is not enforced, a spin still ends at the deadline, and
/// calls report no fuel.
#[test]
fn without_fuel_metering_the_deadline_still_bounds_a_plugin() {
    let settings = EngineSettings { fuel: false, cache: CompileCache::Off, ..EngineSettings::default() };
    let engine = Engine::new(&settings).unwrap();
    let limits = Limits { fuel: 1, deadline: Duration::from_millis(20), ..Limits::default() };
    let plugin = engine.load("hostile", hostile_bytes(), limits).unwrap();
    let err = on_call_failure(&plugin, "spin");
    assert_eq!(err.failure, Failure::Deadline { limit: Duration::from_millis(20) });
    let allowed = plugin.on_call(&behave("allow"), &call(json!({}))).unwrap();
    assert_eq!(allowed.value, CallVerdict::Allow);
    assert_eq!(allowed.fuel_used, 0);
}

/// An idle engine's ticker rests (an idle gateway no longer wakes 1000
/// times a second), and the next hook call wakes it: a plugin that spins
/// still ends at its deadline, not never.
#[test]
fn the_ticker_rests_when_idle_and_the_next_call_wakes_it() {
    let settings = EngineSettings { cache: CompileCache::Off, ..EngineSettings::default() };
    let engine = Engine::new(&settings).unwrap();
    let limits = Limits { fuel: u64::MAX / 2, deadline: Duration::from_millis(50), ..Limits::default() };
    let plugin = engine.load("hostile", hostile_bytes(), limits).unwrap();
    let ticker = &engine.inner.ticker;
    std::thread::sleep(super::ticker::LINGER + Duration::from_millis(300));
    let before = ticker.ticks();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticker.ticks(), before, "the ticker ticked with no hook running");

    let started = std::time::Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(on_call_failure(&plugin, "spin")));
    let err = finished.recv_timeout(Duration::from_secs(5)).expect("the spinning plugin was never stopped");
    assert_eq!(err.failure, Failure::Deadline { limit: Duration::from_millis(50) });
    assert!(started.elapsed() < Duration::from_millis(700), "the deadline came late: {:?}", started.elapsed());
    assert!(ticker.ticks() > before);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let plugin = hostile(Limits { memory_bytes: 16 << 20, ..Limits::default() });
    let err = on_call_failure(&plugin, "memory-bomb");
    assert_eq!(err.failure, Failure::Memory { limit: 16 << 20 });
    assert!(err.to_string().contains("exceeded its memory limit (16777216 bytes)"), "{err}");
    still_serves(&plugin);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let plugin = hostile(Limits::default());
    let err = on_call_failure(&plugin, "deep-recursion");
    assert_eq!(err.failure, Failure::StackOverflow);
    still_serves(&plugin);
}

#[test]
fn a_panic_is_a_trap_that_quotes_the_message() {
    let plugin = hostile(Limits::default());
    let err = on_call_failure(&plugin, "panic");
    let Failure::Trap(message) = &err.failure else { panic!("expected a trap, got {err}") };
    assert!(message.contains("hostile plugin panicked on purpose"), "{message}");
    still_serves(&plugin);
}

#[test]
fn enormous_output_is_refused() {
    let plugin = hostile(Limits { memory_bytes: 256 << 20, max_output_bytes: 1 << 20, ..Limits::default() });
    let config = json!({ "behavior": "huge-output", "huge_bytes": 4 << 20 }).to_string();
    let err = plugin.on_call(&config, &call(json!({}))).unwrap_err();
    assert_eq!(err.failure, Failure::BadOutput(format!("a rewrite of {} bytes (limit {})", 4 << 20, 1 << 20)));
    still_serves(&plugin);
}

#[test]
fn a_rewrite_that_is_not_json_is_refused() {
    let plugin = hostile(Limits::default());
    let err = on_call_failure(&plugin, "invalid-json");
    let Failure::BadOutput(message) = &err.failure else { panic!("expected bad output, got {err}") };
    assert!(message.starts_with("arguments that are not valid JSON"), "{message}");

    let output = json!({"content": []}).to_string();
    let err = plugin.on_result(&behave("invalid-json"), &call(json!({})), &output).unwrap_err();
    assert!(
        err.to_string().starts_with("policy \"hostile\" on-result returned result that are not valid JSON"),
        "{err}"
    );
    still_serves(&plugin);
}

#[test]
fn a_rewrite_that_is_not_an_object_is_refused() {
    let plugin = hostile(Limits::default());
    let err = on_call_failure(&plugin, "not-an-object");
    assert_eq!(err.failure, Failure::BadOutput("arguments that are not a JSON object".into()));
    let output = json!({"content": []}).to_string();
    let err = plugin.on_result(&behave("not-an-object"), &call(json!({})), &output).unwrap_err();
    assert_eq!(err.failure, Failure::BadOutput("result that are not a JSON object".into()));
    still_serves(&plugin);
}

#[test]
fn a_listing_of_the_wrong_length_is_refused() {
    let plugin = hostile(Limits::default());
    let request = ListRequest { request_id: "r".into(), session_id: None, principal: call(json!({})).principal };
    let tools = vec![ListedTool {
        server: "s".into(),
        name: "t".into(),
        description: None,
        annotations: call(json!({})).target.annotations,
        input_schema: "{}".into(),
    }];
    let err = plugin.on_list(&behave("wrong-length"), &request, &tools, 0).unwrap_err();
    assert_eq!(err.failure, Failure::BadOutput("2 verdicts for 1 tools".into()));
    let ok = plugin.on_list(&behave("tag"), &request, &tools, 0).unwrap();
    assert_eq!(ok.value, vec![ListVerdict::Flag("h flags".into())]);
}

#[test]
fn validate_config_lists_every_problem() {
    let plugin = hostile(Limits::default());
    plugin.validate_config(&behave("allow")).unwrap();
    let err = plugin.validate_config(&json!({"reject": ["a is wrong", "b is wrong"]}).to_string()).unwrap_err();
    assert_eq!(
        err,
        LoadError::Config { plugin: "hostile".into(), problems: vec!["a is wrong".into(), "b is wrong".into()] }
    );
    let err = plugin.validate_config(r#"{"behavior": "allow", "typo": 1}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `typo`"), "{err}");
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let err = engine().load("junk", b"definitely not wasm", Limits::default()).unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    // A core module is WebAssembly, but not a component.
    let core_module = b"\0asm\x01\0\0\0";
    let err = engine().load("core", core_module, Limits::default()).unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
}

#[test]
fn limits_the_engine_cannot_honour_are_refused() {
    let too_big = Limits { memory_bytes: 2 << 30, ..Limits::default() };
    let err = engine().load("big", hostile_bytes(), too_big).unwrap_err();
    assert!(err.to_string().contains("above the engine's max_memory_mib"), "{err}");
    let zero = Limits { fuel: 0, ..Limits::default() };
    assert!(engine().load("zero", hostile_bytes(), zero).is_err());
}

#[test]
fn an_exhausted_instance_pool_refuses_at_once_and_names_the_setting() {
    let settings = EngineSettings { max_instances: 1, cache: CompileCache::Off, ..EngineSettings::default() };
    let engine = Engine::new(&settings).unwrap();
    let limits = Limits { fuel: u64::MAX / 2, deadline: Duration::from_millis(400), ..Limits::default() };
    let plugin = engine.load("hostile", hostile_bytes(), limits).unwrap();
    let spinner = {
        let plugin = plugin.clone();
        std::thread::spawn(move || on_call_failure(&plugin, "spin"))
    };
    // Wait until the spinner holds the only instance.
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let err = on_call_failure(&plugin, "allow");
    assert_eq!(err.failure, Failure::Busy { limit: 1 }, "{err}");
    assert!(started.elapsed() < Duration::from_millis(200), "refused at once, not after a wait");
    assert!(err.to_string().contains("engine.max_instances = 1"), "{err}");
    assert_eq!(spinner.join().unwrap().failure, Failure::Deadline { limit: Duration::from_millis(400) });
    still_serves(&plugin);
}

#[test]
fn a_plugin_built_for_the_0_1_0_contract_keeps_loading_and_deciding() {
    let bytes = std::fs::read(concat!(env!("WARDEN_PLUGIN_DIR"), "/contract_0_1_0.wasm")).unwrap();
    let plugin = engine().load("v010", &bytes, Limits::default()).unwrap();
    assert!(plugin.hooks().has(Hook::OnCall) && plugin.hooks().has(Hook::OnResult) && plugin.hooks().has(Hook::OnList));
    assert!(!plugin.hooks().has(Hook::OnCatalog), "0.1.0 had no catalog hook");
    plugin.validate_config("{}").unwrap();

    let mut forbidden = call(json!({}));
    forbidden.target.name = "forbidden".into();
    let verdict = plugin.on_call("{}", &forbidden).unwrap().value;
    assert_eq!(verdict, CallVerdict::Deny(Denial { code: "v010".into(), reason: "denied by a 0.1.0 plugin".into() }));
    assert_eq!(plugin.on_call("{}", &call(json!({}))).unwrap().value, CallVerdict::Allow);

    let request = ListRequest { request_id: "r".into(), session_id: None, principal: call(json!({})).principal };
    let tool = |name: &str| ListedTool {
        server: "s".into(),
        name: name.into(),
        description: None,
        annotations: ToolAnnotations::default(),
        input_schema: "{}".into(),
    };
    let verdicts = plugin.on_list("{}", &request, &[tool("shown"), tool("hidden")], 0).unwrap().value;
    assert_eq!(verdicts, [ListVerdict::Show, ListVerdict::Hide("hidden by a 0.1.0 plugin".into())]);
}

/// On a runtime thread, wasmtime-wasi's own synchronous streams block on the
/// runtime to write, which panics: a plugin's stderr must never need that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_the_async_runtime_is_still_a_quoted_trap() {
    let plugin = hostile(Limits::default());
    let err = tokio::spawn(async move { on_call_failure(&plugin, "panic") }).await.expect("the task survives");
    let Failure::Trap(message) = &err.failure else { panic!("expected a trap, got {err}") };
    assert!(message.contains("hostile plugin panicked on purpose"), "{message}");
}
