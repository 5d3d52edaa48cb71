//! The on-disk cache of compiled plugin code, so a restart (or a second
//! process) with unchanged policies does not compile them again.
//!
//! This is wasmtime's own cache: an entry is keyed by the SHA-256 of the
//! component together with the compiler, its settings and the wasmtime
//! version, and holds code wasmtime compiled here. Precompiled code from
//! anywhere else (a pack, say) is never loaded: packs carry WebAssembly only.
//!
//! Whoever can write to the cache folder can run native code in the gateway,
//! so the folder is created owner-only (0700), and a folder that someone else
//! owns or may write to is refused.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Where compiled plugin code is kept between runs (`[engine] cache`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// Kept in the user's cache folder: `$XDG_CACHE_HOME/warden/compiled`,
    /// else `$HOME/.cache/warden/compiled`. If neither is known, or the
    /// folder is unsafe, plugins are compiled at every start (with a warning).
    #[default]
    User,
    /// Kept in this folder; an unsafe folder is an error.
    Dir(PathBuf),
    /// Not kept: every start compiles every plugin.
    Off,
}

/// The cache to give the engine, if any.
pub(super) fn open(setting: &CompileCache) -> Result<Option<wasmtime::Cache>, String> {
    let dir = match setting {
        CompileCache::Off => return Ok(None),
        CompileCache::Dir(dir) => dir.clone(),
        CompileCache::User => {
            // Only absolute paths: a relative one would put code where the
            // process happens to run.
            let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
            let base = absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache")));
            let Some(base) = base else {
                tracing::warn!("no XDG_CACHE_HOME or HOME: compiled plugins are not cached");
                return Ok(None);
            };
            let dir = base.join("warden").join("compiled");
            return match open_dir(&dir) {
                Ok(cache) => Ok(Some(cache)),
                Err(error) => {
                    tracing::warn!(%error, "compiled plugins are not cached");
                    Ok(None)
                }
            };
        }
    };
    open_dir(&dir).map(Some)
}

fn open_dir(dir: &Path) -> Result<wasmtime::Cache, String> {
    let dir = std::path::absolute(dir).map_err(|e| format!("cache folder {}: {e}", dir.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create the cache folder {}: {e}", dir.display()))?;
    check_private(&dir)?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(&dir);
    wasmtime::Cache::new(config).map_err(|e| format!("cache folder {}: {e:#}", dir.display()))
}

/// The folder must be ours and writable by nobody else.
fn check_private(dir: &Path) -> Result<(), String> {
    let meta = fs::metadata(dir).map_err(|e| format!("cache folder {}: {e}", dir.display()))?;
    // Linux: /proc/self belongs to the process's user.
    if let Ok(me) = fs::metadata("/proc/self")
        && meta.uid() != me.uid()
    {
        return Err(format!("cache folder {} belongs to another user (uid {})", dir.display(), meta.uid()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "cache folder {} is writable by group or others (mode {:o}); `chmod 700` it",
            dir.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_folder_others_may_write() {
        let dir = std::env::temp_dir().join(format!("warden-cache-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let error = open(&CompileCache::Dir(dir.clone())).unwrap_err();
        assert!(error.contains("writable by group or others"), "{error}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(open(&CompileCache::Dir(dir.clone())).unwrap().is_some());
        assert_eq!(open(&CompileCache::Off).unwrap().map(|_| ()), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_engine_finds_the_first_ones_code_and_compiles_nothing() {
        let dir = std::env::temp_dir().join(format!("warden-cache-reuse-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let settings = crate::engine::EngineSettings { cache: CompileCache::Dir(dir.clone()), ..Default::default() };
        let bytes = crate::engine::tests::hostile_bytes();

        let first = crate::engine::Engine::new(&settings).unwrap();
        first.load("hostile", bytes, Default::default()).unwrap();
        assert_eq!(first.disk_cache_stats(), Some((0, 1)), "compiled and stored");

        let second = crate::engine::Engine::new(&settings).unwrap();
        let plugin = second.load("hostile", bytes, Default::default()).unwrap();
        assert_eq!(second.disk_cache_stats(), Some((1, 0)), "found, not compiled");
        plugin.validate_config("{}").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
