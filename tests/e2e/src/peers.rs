//! Real servers from the Debian packages the test set-up installs
//! (`cargo xtask test` puts `redis-server` and `haproxy` on the machine):
//! a Redis on a free loopback port, and haproxy balancing round robin over
//! several gateways. A missing binary fails the test: nothing is skipped.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use crate::{Helper, Scratch, free_port, listening};

/// Where a Debian package's binary is, or a failure naming the fix.
fn installed(name: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| panic!("{name} is not installed: `cargo xtask test` installs it (apt-get install {name})"))
}

/// A `redis-server` on loopback, with nothing persisted; stopped when dropped.
pub struct Redis {
    /// Its port.
    pub port: u16,
    process: Option<Helper>,
    extra: Vec<String>,
    _certificates: Option<Scratch>,
}

impl Redis {
    /// Start one on a free port and wait until it accepts connections.
    pub async fn start() -> Self {
        Self::start_with(Vec::new(), None).await
    }

    /// One that wants `password` (`AUTH`) and speaks only TLS, with a
    /// certificate for 127.0.0.1 from a fresh test CA, whose certificate
    /// (PEM) is written to `ca_file`.
    pub async fn start_tls(password: &str, ca_file: &std::path::Path) -> Self {
        let dir = Scratch::new("redis-tls");
        let (leaf, leaf_key) = crate::loopback_certificate(ca_file);
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        let port = free_port();
        let extra = [
            "--requirepass",
            password,
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-ca-cert-file",
            &ca_file.display().to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec();
        let mut redis = Self { port, process: None, extra, _certificates: Some(dir) };
        redis.resume().await;
        redis
    }

    async fn start_with(extra: Vec<String>, certificates: Option<Scratch>) -> Self {
        let mut redis = Self { port: free_port(), process: None, extra, _certificates: certificates };
        redis.resume().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Start it again on the same port.
    pub async fn resume(&mut self) {
        let mut command = Command::new(installed("redis-server"));
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(Helper::from_command(command));
        listening(self.port).await;
    }
}

/// haproxy in HTTP mode on a free loopback port, round robin over
/// `backends` (ports); stopped when dropped.
pub struct Balancer {
    /// Its port.
    pub port: u16,
    _process: Helper,
    _dir: Scratch,
}

impl Balancer {
    /// Start it and wait until it accepts connections.
    pub async fn start(backends: &[u16]) -> Self {
        let dir = Scratch::new("haproxy");
        let port = free_port();
        let servers: String =
            backends.iter().enumerate().map(|(i, p)| format!("    server gateway{i} 127.0.0.1:{p}\n")).collect();
        let config = format!(
            "global\n    maxconn 1024\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
             timeout server 30s\n    option http-server-close\n    \
             retries 3\n    option redispatch\n\nfrontend mcp\n    bind 127.0.0.1:{port}\n    \
             default_backend gateways\n\nbackend gateways\n    balance roundrobin\n{servers}"
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let mut command = Command::new(installed("haproxy"));
        command.arg("-f").arg(&file).arg("-db").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let process = Helper::from_command(command);
        listening(port).await;
        Self { port, _process: process, _dir: dir }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
