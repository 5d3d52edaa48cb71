//! `warden-demo-upstream`: the example upstream MCP server of Warden's quick start.
//!
//! An analytics agent's four tools over stdio, for two tenants that share one
//! warehouse: `query_analytics_db`, `write_workspace_file`, `read_secrets` and
//! `send_email`, plus a `demo://schema` resource and a `quarterly_summary`
//! prompt. Standard output carries the protocol; logs go to standard error.

mod db;
mod outbox;
mod record;
mod server;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use rmcp::ServiceExt as _;

const USAGE: &str = "\
Usage: warden-demo-upstream [--workspace DIR] [--outbox FILE] [--record FILE]

The example upstream MCP server of Warden's quick start, speaking MCP on stdio.

Options:
  --workspace DIR  directory write_workspace_file writes into (created if missing)
                   [default: ./demo-workspace]
  --outbox FILE    JSON-lines file send_email appends to [default: ./demo-outbox.jsonl]
  --record FILE    append one JSON line per MCP request or notification received
  -h, --help       print this help
  -V, --version    print the version
";

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    workspace: PathBuf,
    outbox: PathBuf,
    record: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve(Options),
    Help,
    Version,
}

/// Parses the arguments after the program name.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options {
        workspace: PathBuf::from("./demo-workspace"),
        outbox: PathBuf::from("./demo-outbox.jsonl"),
        record: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || match inline.clone().or_else(|| args.next()) {
            Some(value) if !value.is_empty() => Ok(PathBuf::from(value)),
            _ => Err(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--workspace" => options.workspace = value()?,
            "--outbox" => options.outbox = value()?,
            "--record" => options.record = Some(value()?),
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Command::Serve(options))
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("warden-demo-upstream {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("warden-demo-upstream: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("warden-demo-upstream: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-demo-upstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets everything up and serves MCP on stdio until the client closes standard input.
async fn serve(options: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.workspace)
        .with_context(|| format!("could not create the workspace {}", options.workspace.display()))?;
    let workspace = std::fs::canonicalize(&options.workspace)
        .with_context(|| format!("could not resolve the workspace {}", options.workspace.display()))?;
    let warehouse = db::Warehouse::open().context("could not create the analytics database")?;
    let server = server::DemoServer::new(warehouse, workspace.clone(), options.outbox.clone());

    eprintln!(
        "warden-demo-upstream {}: serving MCP on stdio (workspace {}, outbox {}{})",
        env!("CARGO_PKG_VERSION"),
        workspace.display(),
        options.outbox.display(),
        options.record.as_ref().map(|p| format!(", recording to {}", p.display())).unwrap_or_default(),
    );

    let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
    let running = match &options.record {
        Some(path) => {
            let file = record::open(path).with_context(|| format!("could not open {}", path.display()))?;
            server.serve((record::tee(stdin, file), stdout)).await
        }
        None => server.serve((stdin, stdout)).await,
    }
    .context("the MCP session did not start")?;
    let reason = running.waiting().await.context("the MCP service failed")?;
    eprintln!("warden-demo-upstream: session ended ({reason:?})");
    Ok(())
}

#[cfg(test)]
mod test_support {
    //! Scratch directories for the unit tests.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        /// Creates a fresh, empty directory whose name includes `tag`.
        pub(crate) fn new(tag: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("warden-demo-upstream-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// The directory.
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_defaults_and_flags() {
        let Command::Serve(options) = parse_args(args(&[])).unwrap() else { panic!() };
        assert_eq!(options.workspace, PathBuf::from("./demo-workspace"));
        assert_eq!(options.outbox, PathBuf::from("./demo-outbox.jsonl"));
        assert_eq!(options.record, None);

        let parsed = parse_args(args(&["--workspace", "/tmp/ws", "--outbox=/tmp/o.jsonl", "--record", "r.jsonl"]));
        assert_eq!(
            parsed,
            Ok(Command::Serve(Options {
                workspace: "/tmp/ws".into(),
                outbox: "/tmp/o.jsonl".into(),
                record: Some("r.jsonl".into()),
            }))
        );
        assert_eq!(parse_args(args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse_args(args(&["-V"])), Ok(Command::Version));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_args(args(&["--workspace"])).unwrap_err().contains("needs a value"));
        assert!(parse_args(args(&["--outbox="])).unwrap_err().contains("needs a value"));
        assert!(parse_args(args(&["--bogus"])).unwrap_err().contains("unknown argument"));
        assert!(parse_args(args(&["stray"])).unwrap_err().contains("unknown argument"));
    }
}
