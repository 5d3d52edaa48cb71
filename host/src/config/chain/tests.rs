//! Chain files: what loads, and how every problem is reported.

use std::path::Path;

use super::*;
use crate::engine::tests::engine;

fn parse_str(text: &str) -> Result<ChainSpec, ConfigError> {
    parse(text, Path::new("/etc/warden/chain.toml"), &Trust::default())
}

fn messages(error: ConfigError) -> Vec<String> {
    error.problems.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
}

#[test]
fn a_chain_of_builtins_loads_in_order_with_limits_overlaid() {
    let spec = parse_str(
        r#"
        [limits]
        fuel = 1_000_000
        deadline_ms = 20

        [[plugin]]
        name = "rbac"
        source = "builtin:rbac"
        [plugin.config.roles.analyst]
        allow = ["*/query_*"]

        [[plugin]]
        name = "sanitizer"
        source = "builtin:injection-sanitizer"
        fail_open = true
        limits = { fuel = 2_000_000, memory_mib = 16 }
        "#,
    )
    .unwrap();
    assert_eq!(spec.plugins.len(), 2);
    let (rbac, sanitizer) = (&spec.plugins[0], &spec.plugins[1]);
    assert_eq!(rbac.source, Source::Builtin("rbac".into()));
    assert_eq!(rbac.limits.fuel, 1_000_000);
    assert_eq!(rbac.limits.deadline, Duration::from_millis(20));
    assert_eq!(rbac.config_json, r#"{"roles":{"analyst":{"allow":["*/query_*"]}}}"#);
    assert!(sanitizer.fail_open);
    assert_eq!(sanitizer.limits.fuel, 2_000_000);
    assert_eq!(sanitizer.limits.deadline, Duration::from_millis(20), "inherited from [limits]");
    assert_eq!(sanitizer.limits.memory_bytes, 16 << 20);
    assert_eq!(sanitizer.config_json, "{}");

    let chain = build(engine(), &spec).unwrap();
    let names: Vec<&str> = chain.plugin_names().collect();
    assert_eq!(names, ["rbac", "sanitizer"]);
}

#[test]
fn every_structural_problem_is_reported_at_once() {
    let error = parse_str(
        r#"
        bogus = 1
        [limits]
        fuel = "lots"

        [[plugin]]
        name = "a"
        sorce = "builtin:rbac"

        [[plugin]]
        name = 7
        source = "builtin:rbac"
        fail_open = "yes"
        "#,
    )
    .unwrap_err();
    assert_eq!(
        messages(error),
        [
            "limits.fuel: invalid type: string \"lots\", expected u64",
            "plugin[0].source: is required (or `pack`)",
            "plugin[0].sorce: unknown field; expected one of `name`, `source`, `pack`, `pack_plugin`, `fail_open`, `limits`, `config`",
            "plugin[1].name: invalid type: integer `7`, expected a string",
            "plugin[1].fail_open: invalid type: string \"yes\", expected a boolean",
            "bogus: unknown field; expected one of `limits`, `plugin`",
        ]
    );
}

#[test]
fn semantic_problems_name_their_fields() {
    let error = parse_str(
        r#"
        [[plugin]]
        name = "rbac"
        source = "builtin:nope"
        limits = { fuel = 0, deadline_ms = 999999 }

        [[plugin]]
        name = "rbac"
        source = "missing.wasm"

        [[plugin]]
        name = "bad name!"
        source = "builtin:rbac"
        "#,
    )
    .unwrap_err();
    assert_eq!(
        messages(error),
        [
            "plugin[0].source: no builtin \"nope\" (known: rbac, chain-detect, injection-sanitizer, tenant-filter)",
            "plugin[0].limits.fuel: must be above zero",
            "plugin[0].limits.deadline_ms: 999999 is above the maximum of 60000",
            "plugin[1].name: \"rbac\" is used by an earlier plugin",
            "plugin[1].source: cannot read /etc/warden/missing.wasm: No such file or directory (os error 2)",
            "plugin[2].name: \"bad name!\" must be letters, digits, '-' or '_'",
        ]
    );
}

#[test]
fn plugins_validate_their_own_config_and_all_are_reported() {
    let spec = parse_str(
        r#"
        [[plugin]]
        name = "rbac"
        source = "builtin:rbac"
        config = { rolez = {} }

        [[plugin]]
        name = "tenants"
        source = "builtin:tenant-filter"
        config = { fields = [] }
        "#,
    )
    .unwrap();
    let messages = messages(build(engine(), &spec).unwrap_err());
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(messages[0].starts_with("plugin[0].config: rolez: unknown field `rolez`"), "{}", messages[0]);
    assert_eq!(messages[1], "plugin[1].config: fields: must name at least one field");
}

#[test]
fn a_file_that_is_not_a_component_is_reported_with_its_plugin() {
    let dir = std::env::temp_dir().join(format!("warden-chain-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("junk.wasm"), b"not wasm").unwrap();
    let spec =
        parse("[[plugin]]\nname = \"junk\"\nsource = \"junk.wasm\"\n", &dir.join("chain.toml"), &Trust::default())
            .unwrap();
    assert_eq!(spec.watched_files(), [dir.join("chain.toml"), dir.join("junk.wasm")]);
    let messages = messages(build(engine(), &spec).unwrap_err());
    assert!(
        messages[0].starts_with("plugin[0]: plugin \"junk\": not a loadable WebAssembly component"),
        "{messages:?}"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn syntax_errors_say_where() {
    let messages = messages(parse_str("[[plugin]]\nname = \n").unwrap_err());
    assert_eq!(messages.len(), 1);
    assert!(messages[0].starts_with(": not valid TOML: "), "{messages:?}");
    assert!(messages[0].contains("line 2, column"), "{messages:?}");
}

#[test]
fn toml_values_become_json() {
    let table: toml::Table = toml::from_str("a = 1\nb = [true, 1.5]\nc = { d = 1979-05-27T07:32:00Z }").unwrap();
    assert_eq!(to_json(&table), serde_json::json!({"a": 1, "b": [true, 1.5], "c": {"d": "1979-05-27T07:32:00Z"}}));
}

#[test]
fn a_plugin_comes_from_a_source_or_a_pack_not_both() {
    let error = parse_str("[[plugin]]\nname = \"a\"\nsource = \"builtin:rbac\"\npack = \"packs/acme\"\n").unwrap_err();
    assert_eq!(messages(error), ["plugin[0].pack: give `source` or `pack`, not both"]);
    let error = parse_str("[[plugin]]\nname = \"a\"\npack = \"no-such-pack\"\n").unwrap_err();
    let found = messages(error);
    assert_eq!(found[0], "plugin[0].pack: /etc/warden/no-such-pack refused:");
    assert!(found[1].starts_with(": cannot read the pack manifest"), "{found:?}");
}
