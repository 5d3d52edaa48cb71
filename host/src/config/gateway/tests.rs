//! Gateway configs: what loads, and how every problem is reported.

use super::*;

fn parse_str(text: &str) -> Result<GatewayConfig, ConfigError> {
    parse(text, Path::new("/etc/warden/warden.toml"))
}

fn messages(error: ConfigError) -> Vec<String> {
    error.problems.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
}

const KEY: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[test]
fn a_minimal_config_takes_safe_defaults() {
    let config = parse_str(&format!(
        "[[api_key]]\nsubject = \"ci\"\nsha256 = \"{KEY}\"\n\n[[upstream]]\nname = \"time\"\ncommand = \"mcp-server-time\"\n"
    ))
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap(), "loopback by default");
    assert_eq!(config.server.path, "/mcp");
    assert_eq!(config.server.max_body_bytes, 4 << 20);
    assert_eq!(config.naming, Naming::default());
    assert_eq!(config.chain, None);
    assert_eq!(config.api_keys[0].principal.subject, "ci");
    assert!(!config.api_keys[0].loopback_only);
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.prefix, "time");
    assert_eq!(upstream.spec.timeout, Duration::from_secs(30));
    assert_eq!(
        upstream.spec.transport,
        Transport::Stdio {
            command: "mcp-server-time".into(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: Some(PathBuf::from("/etc/warden/"))
        }
    );
}

#[test]
fn a_bare_config_file_name_resolves_against_the_working_folder() {
    // `warden serve` reads `warden.toml` by default: its parent is "", and
    // a process cannot be started in "".
    let text =
        format!("[[api_key]]\nsubject = \"ci\"\nsha256 = \"{KEY}\"\n[[upstream]]\nname = \"t\"\ncommand = \"t\"\n");
    let config = parse(&text, Path::new("warden.toml")).unwrap();
    let Transport::Stdio { cwd, .. } = &config.upstreams[0].spec.transport else { panic!() };
    assert_eq!(cwd.as_deref(), Some(Path::new(".")));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let config = parse_str(&format!(
        "[[api_key]]\nsubject = \"ci\"\nsha256 = \"{KEY}\"\n\
         [[upstream]]\nname = \"demo\"\ncommand = \"./bin/server\"\ncwd = \"work\"\n\
         [[upstream]]\nname = \"web\"\nurl = \"http://127.0.0.1:3001/mcp\"\nera = \"legacy\"\n"
    ))
    .unwrap();
    let Transport::Stdio { command, cwd, .. } = &config.upstreams[0].spec.transport else { panic!() };
    assert_eq!(command, "/etc/warden/./bin/server");
    assert_eq!(cwd.as_deref(), Some(Path::new("/etc/warden/work")));
    assert_eq!(
        config.upstreams[1].spec.transport,
        Transport::Http { url: "http://127.0.0.1:3001/mcp".into(), era: Some(EraChoice::Legacy), credentials: None }
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let error = parse_str(
        r#"
        [server]
        listen = "localhost"
        path = "mcp"
        colour = "blue"

        [naming]
        mode = "fancy"

        [[api_key]]
        subject = ""
        sha256 = "abc"

        [[upstream]]
        name = "a"

        [[upstream]]
        name = "a"
        command = "x"
        url = "http://y"

        [[upstream]]
        name = "b"
        url = "ws://example.com/mcp"
        args = ["--x"]
        timeout_ms = 0

        [policy]
        chain = "missing.toml"
        "#,
    )
    .unwrap_err();
    assert_eq!(
        messages(error),
        [
            "server.listen: \"localhost\" is not an address like 127.0.0.1:8080: invalid socket address syntax",
            "server.path: must start with '/'",
            "server.colour: unknown field; expected one of `listen`, `path`, `max_body_kib`, `allowed_origins`, \
             `allowed_hosts`, `max_connections`, `header_timeout_s`, `body_timeout_s`, `keep_alive_s`, \
             `max_connections_per_ip`, `max_batch`, `max_json_depth`",
            "policy.chain: /etc/warden/missing.toml is not a readable file",
            "naming.mode: \"fancy\" is not \"bare\" or \"prefix\"",
            "api_key[0].sha256: must be 64 hex digits (warden hash-key <key> prints them)",
            "api_key[0].subject: must not be empty",
            "upstream[0].command: give command (a process to spawn) or url (an HTTP endpoint)",
            "upstream[1].name: \"a\" is used by an earlier upstream",
            "upstream[1].command: give either command or url, not both",
            "upstream[2].timeout_ms: must be above zero",
            "upstream[2].args: applies to command upstreams only",
            "upstream[2].url: \"ws://example.com/mcp\" must be an http:// or https:// URL",
        ]
    );
}

#[test]
fn a_config_without_credentials_is_refused() {
    let messages = messages(parse_str("[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap_err());
    assert_eq!(messages, ["api_key: no credentials are configured, so every request would be refused"]);
}

#[test]
fn anonymous_access_needs_a_loopback_listener() {
    let config = parse_str("[anonymous]\nsubject = \"dev\"\nroles = [\"analyst\"]\n").unwrap();
    assert_eq!(config.anonymous.unwrap().roles, ["analyst"]);
    let messages =
        messages(parse_str("[server]\nlisten = \"0.0.0.0:8080\"\n[anonymous]\nsubject = \"dev\"\n").unwrap_err());
    assert_eq!(messages, ["anonymous: anonymous access is allowed only on a loopback listener"]);
}

#[test]
fn duplicate_keys_are_refused() {
    let messages = messages(
        parse_str(&format!(
            "[[api_key]]\nsubject = \"a\"\nsha256 = \"{KEY}\"\n[[api_key]]\nsubject = \"b\"\nsha256 = \"{KEY}\"\n"
        ))
        .unwrap_err(),
    );
    assert_eq!(messages, ["api_key[1].sha256: the same key is configured twice"]);
}

#[test]
fn identity_settings_load() {
    let config = parse_str(
        "[oauth]\nresource = \"https://mcp.example.com/mcp\"\n\
         [[oauth.issuer]]\nissuer = \"https://idp.example.com\"\njwks_url = \"http://idp.internal/jwks\"\n\
         algorithms = [\"RS256\", \"ES256\"]\nroles_claims = [\"realm_access.roles\"]\n\
         [[required_scopes]]\ntools = \"files/write_*\"\nscopes = [\"files:write\"]\n\
         [[upstream]]\nname = \"files\"\nurl = \"http://127.0.0.1:3001/mcp\"\n",
    )
    .unwrap();
    let oauth = config.oauth.unwrap();
    assert_eq!(oauth.issuers[0].algorithms.len(), 2);
    assert_eq!(oauth.issuers[0].claims.roles, ["realm_access.roles"]);
    assert!(config.required_scopes[0].covers("files", "write_file"));
    assert!(!config.required_scopes[0].covers("files", "read_file"));
}

#[test]
fn identity_problems_are_reported_with_their_paths() {
    let error = parse_str(
        "[tls]\nca_files = [\"missing-ca.pem\"]\n[oauth]\nresource = \"not a url\"\n\
         [[oauth.issuer]]\nissuer = \"a\"\njwks_url = \"ftp://idp.example.com/jwks\"\nalgorithms = [\"HS256\", \"none\"]\n\
         [[oauth.issuer]]\nissuer = \"b\"\njwks_file = \"missing.json\"\n\
         [[required_scopes]]\ntools = [\"x/*\"]\nscopes = []\n\
         [[upstream]]\nname = \"p\"\ncommand = \"server\"\n[upstream.auth]\nbearer_env = \"WARDEN_TEST_UNSET_VARIABLE\"\n\
         [[upstream]]\nname = \"h\"\nurl = \"http://127.0.0.1:1/mcp\"\n[upstream.auth]\ntoken_url = \"http://idp/token\"\n",
    )
    .unwrap_err();
    let messages = messages(error);
    let expect = [
        "tls.ca_files: /etc/warden/missing-ca.pem: No such file",
        "oauth.resource: \"not a url\" must be an absolute http(s) URL",
        "oauth.issuer[0].algorithms: HS256 is an HMAC algorithm",
        "oauth.issuer[0].algorithms: \"none\" is not a JWS algorithm",
        "oauth.issuer[0].jwks_url: \"ftp://idp.example.com/jwks\" must be an http:// or https:// URL",
        "oauth.issuer[1].jwks_file: /etc/warden/missing.json:",
        "required_scopes[0].scopes: name at least one scope",
        "upstream[0].auth.bearer_env: the environment variable WARDEN_TEST_UNSET_VARIABLE is not set",
        "upstream[0].auth: applies to HTTP upstreams only",
        "upstream[1].auth.client_secret_env: client credentials need client_secret_env or client_secret_file",
        "upstream[1].auth.client_id: is required with token_url",
    ];
    for expected in expect {
        assert!(messages.iter().any(|m| m.starts_with(expected)), "missing {expected:?} in {messages:#?}");
    }
}

#[test]
fn the_trust_policy_and_compile_cache_load_and_their_problems_are_reported() {
    let dir = std::env::temp_dir().join(format!("warden-trust-config-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("chain.toml"), "").unwrap();
    let key = crate::pack::keygen(&dir.join("acme"), None).unwrap();
    let head = format!("[[api_key]]\nsubject = \"ci\"\nsha256 = \"{KEY}\"\n[policy]\nchain = \"chain.toml\"\n");
    let digest = "AB".repeat(32);

    let good = format!(
        "{head}require_signed = true\ntrusted_keys = [\"acme.pub\"]\nrevoked_packs = [\"sha256:{digest}\"]\n\
         [engine]\ncache_dir = \"compiled\"\nfuel = false\n"
    );
    let config = parse(&good, &dir.join("warden.toml")).unwrap();
    assert!(!config.engine.fuel);
    assert!(config.trust.require_signed);
    assert_eq!(config.trust.keys[0].id, key.key_id);
    assert_eq!(config.trust.revoked_packs.iter().next().unwrap(), &digest.to_ascii_lowercase());
    assert_eq!(config.engine.cache, CompileCache::Dir(dir.join("compiled")));
    let defaults = parse_str(&format!("[[api_key]]\nsubject = \"ci\"\nsha256 = \"{KEY}\"\n")).unwrap().engine;
    assert_eq!(defaults.cache, CompileCache::User);
    assert!(defaults.fuel, "fuel is metered unless turned off");

    let bad = format!(
        "{head}require_signed = true\ntrusted_keys = [\"acme.pub\", \"missing.pub\", \"chain.toml\"]\n\
         revoked_keys = [\"abc\", \"{}\"]\nrevoked_packs = [\"md5:x\"]\n[engine]\ncache = false\ncache_dir = \"x\"\nfuel = \"off\"\n",
        key.key_id.to_ascii_lowercase()
    );
    let found = messages(parse(&bad, &dir.join("warden.toml")).unwrap_err());
    let expected = [
        "policy.trusted_keys: cannot read",
        "policy.trusted_keys: ",
        "policy.revoked_keys: \"abc\" is not a key id (16 hex digits)",
        "policy.revoked_packs: \"md5:x\" is not a pack digest",
        "policy.trusted_keys: require_signed is on but no key is trusted (and not revoked)",
        "engine.cache_dir: is set but cache = false",
        "engine.fuel: ",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(found.starts_with(expected), "{found:?} should start with {expected:?}");
    }
    assert!(found[1].ends_with("chain.toml is not a minisign public key"), "{found:?}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn connection_and_session_bounds_have_safe_defaults_and_are_checked() {
    let minimal = format!("[[api_key]]\nsubject = \"ci\"\nsha256 = \"{KEY}\"\n");
    let config = parse_str(&minimal).unwrap();
    let limits = &config.server.limits;
    assert!(limits.header_timeout <= Duration::from_secs(30) && limits.body_timeout <= Duration::from_secs(30));
    assert_eq!(*limits, ConnectionLimits::default());
    assert_eq!(config.sessions, SessionSettings::default());

    let config = parse_str(&format!(
        "{minimal}[server]\nheader_timeout_s = 2\nkeep_alive_s = 5\nmax_connections = 10\nmax_connections_per_ip = 4\n\
         [sessions]\nmax = 50\nmax_per_principal = 3\nreplay_kib = 64\n"
    ))
    .unwrap();
    assert_eq!(config.server.limits.header_timeout, Duration::from_secs(2));
    assert_eq!(config.server.limits.max_connections_per_ip, 4);
    assert_eq!((config.sessions.max_per_principal, config.sessions.replay_bytes), (3, 64 << 10));

    // Lowering a total alone lowers the per-caller default with it.
    let config = parse_str(&format!("{minimal}[server]\nmax_connections = 100\n[sessions]\nmax = 50\n")).unwrap();
    assert_eq!((config.server.limits.max_connections_per_ip, config.sessions.max_per_principal), (100, 50));

    let problems = messages(
        parse_str(&format!(
            "{minimal}[server]\nbody_timeout_s = 0\nmax_connections = 8\nmax_connections_per_ip = 9\nmax_batch = 0\n\
             [sessions]\nmax = 5\nmax_per_principal = 6\nmax_client_requests = 0\n"
        ))
        .unwrap_err(),
    );
    assert_eq!(
        problems,
        [
            "server.body_timeout_s: must be above zero",
            "server.max_batch: must be above zero",
            "server.max_connections_per_ip: must not exceed max_connections (8)",
            "sessions.max_client_requests: must be above zero",
            "sessions.max_per_principal: must not exceed max (5)",
        ]
    );
}
