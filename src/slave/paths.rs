//! Keeping the slave inside its basedir: every path the master names is resolved here.
//!
//! A path argument (workdir, paths, dir, fromdir/todir, workersrc/workerdest,
//! logfiles) may be relative (to the basedir, or to a command's workdir) or absolute;
//! either way it must end up under the slave's basedir. Resolution is done in two
//! steps: first lexically (`.` and `..` removed, so `a/../../x` cannot climb out), then
//! physically, following every symbolic link of the part that exists, so a link that
//! points outside the basedir is caught as well. The lexically normalized path is the
//! one the command then uses, so what was checked is what is touched.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Why a path given by the master was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {path:?} is outside the slave's basedir {root}; refused")]
    Outside { path: String, root: String },
    #[error("path {path:?} has too many levels of symbolic links; refused")]
    Loop { path: String },
    #[error("path {path:?} is the slave's basedir itself; refused")]
    IsRoot { path: String },
    #[error("empty path")]
    Empty,
}

/// The slave's basedir, canonical, and the rules for staying inside it.
#[derive(Debug, Clone)]
pub struct Jail {
    root: PathBuf,
}

/// How many symbolic links one resolution may follow (as Linux's ELOOP limit).
const MAX_LINKS: usize = 40;

impl Jail {
    /// A jail at `basedir`, which must exist (it is canonicalized).
    pub fn new(basedir: &Path) -> std::io::Result<Jail> {
        Ok(Jail {
            root: std::fs::canonicalize(basedir)?,
        })
    }

    /// The canonical basedir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve `arg` (relative to the basedir, or absolute) to a path inside the
    /// basedir. With `follow_final` false a final symbolic link is not followed (for
    /// removing a link, which never touches its target).
    pub fn resolve(&self, arg: &str, follow_final: bool) -> Result<PathBuf, PathError> {
        let root = self.root.clone();
        self.resolve_in(&root, arg, follow_final)
    }

    /// Resolve `arg` relative to `base` (itself already resolved inside the jail).
    pub fn resolve_in(
        &self,
        base: &Path,
        arg: &str,
        follow_final: bool,
    ) -> Result<PathBuf, PathError> {
        if arg.is_empty() {
            return Err(PathError::Empty);
        }
        let joined = base.join(arg);
        let lexical = normalize(&joined);
        let outside = || PathError::Outside {
            path: arg.to_string(),
            root: self.root.display().to_string(),
        };
        if !lexical.starts_with(&self.root) {
            return Err(outside());
        }
        match physical(&lexical, follow_final) {
            Some(real) if real.starts_with(&self.root) => Ok(lexical),
            Some(_) => Err(outside()),
            None => Err(PathError::Loop {
                path: arg.to_string(),
            }),
        }
    }

    /// Like [`Jail::resolve`], refusing the basedir itself (for removals).
    pub fn resolve_below(&self, arg: &str, follow_final: bool) -> Result<PathBuf, PathError> {
        let p = self.resolve(arg, follow_final)?;
        if p == self.root {
            return Err(PathError::IsRoot {
                path: arg.to_string(),
            });
        }
        Ok(p)
    }

    /// Whether an already absolute path lies inside the jail (physically).
    pub fn contains(&self, path: &Path, follow_final: bool) -> bool {
        let lexical = normalize(path);
        lexical.starts_with(&self.root)
            && physical(&lexical, follow_final).is_some_and(|r| r.starts_with(&self.root))
    }
}

/// Remove `.` and `..` without looking at the file system (`/..` stays `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// Where an absolute, normalized path really leads: every existing symbolic link is
/// followed (the final one only with `follow_final`); components that do not exist
/// are taken as they are. `None` when links loop.
fn physical(path: &Path, follow_final: bool) -> Option<PathBuf> {
    let mut queue: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        if c == "." {
            continue;
        }
        let cand = cur.join(&c);
        let is_last = queue.is_empty();
        match std::fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() && (follow_final || !is_last) => {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = std::fs::read_link(&cand).ok()?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                let mut front: Vec<OsString> = Vec::new();
                for tc in target.components() {
                    match tc {
                        Component::Normal(n) => front.push(n.to_os_string()),
                        Component::ParentDir => front.push("..".into()),
                        _ => {}
                    }
                }
                for item in front.into_iter().rev() {
                    queue.push_front(item);
                }
            }
            _ => cur = cand,
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail() -> (tempfile::TempDir, Jail) {
        let dir = tempfile::tempdir().unwrap();
        let j = Jail::new(dir.path()).unwrap();
        (dir, j)
    }

    #[test]
    fn relative_and_absolute_inside_are_accepted() {
        let (_d, j) = jail();
        let p = j.resolve("build/src", true).unwrap();
        assert_eq!(p, j.root().join("build/src"));
        let abs = j.root().join("x/y");
        assert_eq!(j.resolve(abs.to_str().unwrap(), true).unwrap(), abs);
        assert_eq!(
            j.resolve("a/../b", true).unwrap(),
            j.root().join("b"),
            "dot-dot that stays inside is fine"
        );
    }

    #[test]
    fn escapes_are_refused() {
        let (_d, j) = jail();
        assert!(matches!(
            j.resolve("../x", true),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(
            j.resolve("a/../../x", true),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(
            j.resolve("/etc/passwd", true),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(j.resolve("", true), Err(PathError::Empty)));
        assert!(matches!(
            j.resolve_below(".", false),
            Err(PathError::IsRoot { .. })
        ));
    }

    #[test]
    fn symlinks_out_are_refused_and_in_are_fine() {
        let (_d, j) = jail();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), j.root().join("out")).unwrap();
        std::fs::create_dir(j.root().join("real")).unwrap();
        std::os::unix::fs::symlink("real", j.root().join("in")).unwrap();
        std::os::unix::fs::symlink("../../..", j.root().join("real/up")).unwrap();
        assert!(j.resolve("out", true).is_err());
        assert!(j.resolve("out/new/file", true).is_err());
        assert!(j.resolve("real/up/etc", true).is_err());
        assert!(j.resolve("in/file", true).is_ok());
        // Removing the link itself never touches the target.
        assert!(j.resolve("out", false).is_ok());
        // A dangling link to an absolute path outside.
        std::os::unix::fs::symlink("/nonexistent/zz", j.root().join("dangle")).unwrap();
        assert!(j.resolve("dangle/x", true).is_err());
        // Loops are refused, not followed forever.
        std::os::unix::fs::symlink("loop2", j.root().join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", j.root().join("loop2")).unwrap();
        assert!(matches!(
            j.resolve("loop1/x", true),
            Err(PathError::Loop { .. })
        ));
    }
}
