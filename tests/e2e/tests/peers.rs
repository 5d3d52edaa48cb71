//! The gateway with real peers from the package registries: the official
//! Python MCP client, the MCP Inspector CLI, `server-everything` (npm) and
//! `mcp-server-time` (PyPI) as upstreams, and the official conformance suite
//! run through the gateway and compared with the fixture run directly.
//!
//! Needs the peers `cargo xtask peers` installs (`cargo xtask test` does).

use std::{path::Path, process::Command};

use e2e::{Helper, Warden, free_port, listening, peers, quickstart_config, root, tool_names};
use serde_json::json;

fn output(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn node() -> std::path::PathBuf {
    peers().join("node/node_modules/.bin/node")
}

#[tokio::test]
async fn the_python_sdk_client_sees_the_quick_start_story_in_both_eras() {
    let warden = Warden::start(&quickstart_config());
    let python = peers().join("venv/bin/python");
    let script = root().join("tests/e2e/quickstart_story.py");
    for mode in ["legacy", "auto", "2026-07-28"] {
        let (ok, text) = output(Command::new(&python).arg(&script).arg(&warden.url).arg(mode));
        assert!(ok, "mode {mode}:\n{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("ok ")).count(), 10, "mode {mode}:\n{text}");
    }
}

#[tokio::test]
async fn the_inspector_cli_gets_the_filtered_view() {
    let warden = Warden::start(&quickstart_config());
    let inspector = peers().join("npm/node_modules/@modelcontextprotocol/inspector");
    let cli = |args: &[&str]| {
        let mut command = Command::new(node());
        command
            .arg(inspector.join("clients/launcher/build/index.js"))
            .arg("--cli")
            .arg(&warden.url)
            .args(["--header", "Authorization: Bearer demo-acme-analyst"])
            .args(args)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    peers().join("node/node_modules/.bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        output(&mut command)
    };
    let (ok, text) = cli(&["--method", "tools/list"]);
    assert!(ok, "{text}");
    assert!(text.contains("query_analytics_db") && !text.contains("write_workspace_file"), "{text}");
    let (ok, text) = cli(&[
        "--method",
        "tools/call",
        "--tool-name",
        "query_analytics_db",
        "--tool-arg",
        "query=SELECT * FROM sales",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("[redacted by warden]") && !text.contains("globex"), "{text}");
}

#[tokio::test]
async fn server_everything_behind_the_gateway() {
    let port = free_port();
    let package = peers().join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let preload = root().join("tests/e2e/fakes/loopback.cjs");
    let mut command = Command::new(node());
    command
        .arg("--require")
        .arg(&preload)
        .arg(&package)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _everything = Helper::from_command(command);
    listening(port).await;
    let warden = Warden::start(&format!(
        "[anonymous]\nsubject = \"t\"\n[[upstream]]\nname = \"everything\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n"
    ));
    let session = warden.initialize("", "2025-11-25").await;
    let tools = tool_names(&warden.call("", &session, 1, "tools/list", json!({})).await);
    assert!(tools.contains(&"echo".to_owned()), "{tools:?}");
    let echo = warden
        .call("", &session, 2, "tools/call", json!({"name": "echo", "arguments": {"message": "through warden"}}))
        .await;
    assert!(echo["result"]["content"][0]["text"].as_str().unwrap().contains("through warden"), "{echo}");
    let prompts = warden.call("", &session, 3, "prompts/list", json!({})).await;
    assert!(!prompts["result"]["prompts"].as_array().unwrap().is_empty(), "{prompts}");
    let resources = warden.call("", &session, 4, "resources/list", json!({})).await;
    let first = resources["result"]["resources"][0]["uri"].as_str().unwrap().to_owned();
    let read = warden.call("", &session, 5, "resources/read", json!({"uri": first})).await;
    assert!(read["result"]["contents"].is_array(), "{read}");
}

#[tokio::test]
async fn mcp_server_time_from_pypi_as_a_stdio_upstream() {
    let time = peers().join("venv/bin/mcp-server-time");
    let warden = Warden::start(&format!(
        "[anonymous]\nsubject = \"t\"\n[[upstream]]\nname = \"time\"\ncommand = \"{}\"\nargs = [\"--local-timezone\", \"UTC\"]\n",
        time.display()
    ));
    let session = warden.initialize("", "2025-06-18").await;
    let tools = tool_names(&warden.call("", &session, 1, "tools/list", json!({})).await);
    assert_eq!(tools, ["get_current_time", "convert_time"]);
    let now = warden
        .call(
            "",
            &session,
            2,
            "tools/call",
            json!({"name": "get_current_time", "arguments": {"timezone": "Europe/Warsaw"}}),
        )
        .await;
    let text = now["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{now}"));
    assert!(text.contains("Europe/Warsaw"), "{text}");
    // And statelessly, through era bridging (the server speaks the legacy era).
    let modern = warden
        .modern(
            &[],
            3,
            "tools/call",
            json!({"name": "convert_time", "arguments": {
        "source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}}),
        )
        .await;
    assert!(modern.json()["result"]["content"][0]["text"].as_str().unwrap().contains("Asia/Tokyo"), "{modern:?}");
}

/// Run one requirement set; (exit ok, scenario → passed). A scenario with a
/// warning (an unmet SHOULD, such as relaying `list_changed`) counts as not
/// passed, so a warning through Warden where there was none directly fails too.
fn conformance(url: &str, set: &str, out: &Path) -> (bool, Vec<(String, bool)>) {
    let (ok, text) = output(
        Command::new("sh")
            .arg(root().join("tests/conformance/run_suite.sh"))
            .args([url, set])
            .arg(out)
            .env("WARDEN_PEERS", peers()),
    );
    let scenarios = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, verdict) = (words.next()?, words.next()?);
            matches!(verdict, "pass" | "FAIL")
                .then(|| (name.to_owned(), verdict == "pass" && !line.contains("warning")))
        })
        .collect::<Vec<_>>();
    assert!(!scenarios.is_empty(), "the suite reported nothing:\n{text}");
    eprintln!("{set} at {url}:\n{text}");
    (ok, scenarios)
}

#[tokio::test]
async fn the_conformance_suite_passes_through_the_gateway_wherever_it_passes_directly() {
    let port = free_port();
    let python = peers().join("venv/bin/python");
    let fixture = root().join("tests/conformance/fixture_server.py");
    let _fixture = Helper::spawn(python.to_str().unwrap(), &[fixture.to_str().unwrap(), "--port", &port.to_string()]);
    listening(port).await;
    let warden = Warden::start(&format!(
        "[anonymous]\nsubject = \"conformance\"\n[[upstream]]\nname = \"fixture\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n"
    ));
    let direct_url = format!("http://127.0.0.1:{port}/mcp");
    let out = e2e::Scratch::new("conformance");
    for set in ["2025-11-25", "2026-07-28"] {
        let (_, direct) = conformance(&direct_url, set, &out.path().join(format!("direct-{set}")));
        let (ok, through) = conformance(&warden.url, set, &out.path().join(format!("warden-{set}")));
        assert!(ok, "every scored {set} scenario passes through Warden");
        for (scenario, passed) in direct.iter().filter(|(_, passed)| *passed) {
            let verdict = through.iter().find(|(s, _)| s == scenario).map(|(_, p)| *p);
            assert_eq!(verdict, Some(*passed), "{scenario} ({set}) passes directly but not through Warden");
        }
    }
}
