//! The `warden` binary: everything lives in the library; see [`warden::cli`].

fn main() -> std::process::ExitCode {
    warden::cli::main()
}
