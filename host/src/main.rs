//! The `warden` binary: everything lives in the library; see [`warden::cli`].

/// mimalloc: see the note in Cargo.toml (bench/README.md has the numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    warden::cli::main()
}
