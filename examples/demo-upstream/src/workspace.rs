//! The agent's workspace directory: file writes that cannot leave it.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Writes `content` to `relative` inside the workspace `root`, creating missing directories.
///
/// `root` must already be canonical. The path is refused when it is absolute,
/// holds a `..` component, or would resolve outside `root` through a symbolic
/// link, and a symbolic link at the file itself is never written through.
/// Returns the path written and the number of bytes.
pub(crate) fn write_file(root: &Path, relative: &str, content: &str) -> Result<(PathBuf, usize), String> {
    let target = resolve(root, relative)?;
    fs::write(&target, content).map_err(|e| format!("could not write {relative}: {e}"))?;
    Ok((target, content.len()))
}

/// Resolves `relative` to a path inside `root`, creating the missing parent directories.
pub(crate) fn resolve(root: &Path, relative: &str) -> Result<PathBuf, String> {
    let names = lexical_components(relative)?;
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(format!("refused: {relative:?} does not name a file"));
    };

    // Walk (and create) the parent one directory at a time, so that a symbolic
    // link in the middle of the path is seen before anything is created behind it.
    let mut parent = root.to_path_buf();
    for dir in dirs {
        let next = parent.join(dir);
        match fs::symlink_metadata(&next) {
            Ok(_) => {
                let canonical = fs::canonicalize(&next).map_err(|e| format!("could not resolve {relative}: {e}"))?;
                if !canonical.starts_with(root) {
                    return Err(format!("refused: {relative:?} resolves outside the workspace"));
                }
                if !canonical.is_dir() {
                    return Err(format!("refused: a part of {relative:?} is not a directory"));
                }
                parent = canonical;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next).map_err(|e| format!("could not create a directory for {relative}: {e}"))?;
                parent = next;
            }
            Err(e) => return Err(format!("could not resolve {relative}: {e}")),
        }
    }

    let parent = fs::canonicalize(&parent).map_err(|e| format!("could not resolve {relative}: {e}"))?;
    if !parent.starts_with(root) {
        return Err(format!("refused: {relative:?} resolves outside the workspace"));
    }
    let target = parent.join(file_name);
    match fs::symlink_metadata(&target) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(format!("refused: {relative:?} is a symbolic link; links are not written through"))
        }
        Ok(meta) if meta.is_dir() => Err(format!("refused: {relative:?} is a directory")),
        Ok(_) => Ok(target),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(format!("could not resolve {relative}: {e}")),
    }
}

/// Splits a relative path into its names, refusing absolute paths and `..`.
fn lexical_components(relative: &str) -> Result<Vec<&std::ffi::OsStr>, String> {
    if relative.is_empty() {
        return Err("refused: the path is empty".into());
    }
    if relative.contains('\0') {
        return Err("refused: the path holds a NUL byte".into());
    }
    let path = Path::new(relative);
    if path.is_absolute() || path.has_root() {
        return Err(format!("refused: {relative:?} is absolute; give a path relative to the workspace"));
    }
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("refused: {relative:?} contains '..'; paths must stay inside the workspace"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("refused: {relative:?} is absolute; give a path relative to the workspace"));
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn workspace(tmp: &TempDir) -> PathBuf {
        let root = tmp.path().join("ws");
        fs::create_dir(&root).unwrap();
        fs::canonicalize(root).unwrap()
    }

    #[test]
    fn writes_inside_the_workspace() {
        let tmp = TempDir::new("write");
        let root = workspace(&tmp);
        let (path, bytes) = write_file(&root, "report.md", "# Q1\n").unwrap();
        assert_eq!(path, root.join("report.md"));
        assert_eq!(bytes, 5);
        assert_eq!(fs::read_to_string(root.join("report.md")).unwrap(), "# Q1\n");
        let (path, _) = write_file(&root, "./reports/2025/q1.txt", "ok").unwrap();
        assert_eq!(path, root.join("reports/2025/q1.txt"));
        assert_eq!(fs::read_to_string(path).unwrap(), "ok");
    }

    #[test]
    fn refuses_absolute_and_parent_paths() {
        let tmp = TempDir::new("lexical");
        let root = workspace(&tmp);
        for (path, why) in [
            ("/etc/passwd", "absolute"),
            ("../escape.txt", ".."),
            ("a/../../escape.txt", ".."),
            ("a/../b.txt", ".."),
            ("", "empty"),
            (".", "does not name a file"),
        ] {
            let err = write_file(&root, path, "x").unwrap_err();
            assert!(err.contains(why), "{path}: {err}");
        }
        assert!(!tmp.path().join("escape.txt").exists());
        assert!(!root.join("a").exists());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlink_escapes() {
        let tmp = TempDir::new("symlink");
        let root = workspace(&tmp);
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let err = write_file(&root, "link/stolen.txt", "x").unwrap_err();
        assert!(err.contains("outside the workspace"), "{err}");
        let err = write_file(&root, "link/deeper/stolen.txt", "x").unwrap_err();
        assert!(err.contains("outside the workspace"), "{err}");
        assert!(!outside.join("stolen.txt").exists());
        assert!(!outside.join("deeper").exists());

        // A link at the file itself is not written through, even to a file inside.
        std::os::unix::fs::symlink(outside.join("target.txt"), root.join("file-link")).unwrap();
        let err = write_file(&root, "file-link", "x").unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!outside.join("target.txt").exists());

        // A link that stays inside the workspace is fine for directories.
        fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        let (path, _) = write_file(&root, "alias/ok.txt", "fine").unwrap();
        assert_eq!(path, root.join("real/ok.txt"));
    }

    #[test]
    fn refuses_writing_over_a_directory() {
        let tmp = TempDir::new("dir");
        let root = workspace(&tmp);
        fs::create_dir(root.join("sub")).unwrap();
        assert!(write_file(&root, "sub", "x").unwrap_err().contains("directory"));
        fs::write(root.join("plain"), "x").unwrap();
        assert!(write_file(&root, "plain/child.txt", "x").unwrap_err().contains("not a directory"));
    }
}
