//! Projects: named, ready-made factory sections that `create -f NAME` and
//! `list-factories` offer and that a `[NAME]` section in `master.ini` starts from.
//!
//! Bundled projects are the files `projects/*.ini` of the source tree, compiled into
//! the binary so it works when copied alone. Local projects are the files
//! `MASTERDIR/projects/*.ini` (what `create-project` writes); a local project replaces
//! a bundled one of the same name. A project file holds one section `[NAME]` (it may
//! hold several, each a project) with the keys of a factory section: `description`,
//! `type`, sources and the type's parameters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ini::{self, IniEntry};
use super::ConfigError;

/// The project files compiled into the binary: (file name, text).
const BUNDLED: &[(&str, &str)] = &[
    ("hello.ini", include_str!("../../projects/hello.ini")),
    ("pyhello.ini", include_str!("../../projects/pyhello.ini")),
    (
        "hello-shell.ini",
        include_str!("../../projects/hello-shell.ini"),
    ),
];

/// Where a project comes from; `create` copies local project files into a new master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectSource {
    /// Compiled into the binary.
    Bundled,
    /// A file under a master's `projects/` directory.
    Local(PathBuf),
}

/// One project: the keys a factory section named after it starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    /// The `description` key, shown by `list-factories` (empty when not given).
    pub description: String,
    /// Every key (normalized as in `master.ini`) and its value.
    pub keys: BTreeMap<String, String>,
    /// The same keys in file order with their line numbers, so that `master.ini`
    /// errors in a project's keys point into the project file and shell steps keep
    /// their order.
    pub entries: Vec<IniEntry>,
    /// The file, for messages (`bundled:projects/NAME.ini` for bundled ones).
    pub path: PathBuf,
    pub source: ProjectSource,
}

fn parse_file(path: &Path, text: &str, source: ProjectSource) -> Result<Vec<Project>, ConfigError> {
    let doc = ini::parse(path, text)?;
    let mut out = Vec::new();
    for section in doc.sections {
        if !crate::factory::is_plain_name(&section.name) || section.name.contains(':') {
            return Err(ConfigError::At {
                path: path.to_path_buf(),
                line: section.line,
                context: format!("[{}]: ", section.name),
                message: "a project's name must be letters, digits, `.`, `_` and `-`".to_string(),
            });
        }
        let keys: BTreeMap<String, String> = section
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        out.push(Project {
            name: section.name.clone(),
            description: keys.get("description").cloned().unwrap_or_default(),
            keys,
            entries: section.entries,
            path: path.to_path_buf(),
            source: source.clone(),
        });
    }
    Ok(out)
}

/// The bundled projects, then (replacing same-named ones) those in
/// `MASTER_DIR/projects/*.ini`; sorted by name. A master directory without a
/// `projects/` directory simply has no local projects.
pub fn projects(master_dir: Option<&Path>) -> Result<Vec<Project>, ConfigError> {
    let mut by_name: BTreeMap<String, Project> = BTreeMap::new();
    for (file, text) in BUNDLED {
        let path = PathBuf::from(format!("bundled:projects/{file}"));
        for p in parse_file(&path, text, ProjectSource::Bundled)? {
            by_name.insert(p.name.clone(), p);
        }
    }
    if let Some(dir) = master_dir {
        let dir = dir.join("projects");
        if dir.is_dir() {
            let read = std::fs::read_dir(&dir).map_err(|source| ConfigError::Io {
                path: dir.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ini") && p.is_file())
                .collect();
            files.sort();
            for path in files {
                let bytes = std::fs::read(&path).map_err(|source| ConfigError::Io {
                    path: path.clone(),
                    source,
                })?;
                let text = ini::decode(&path, &bytes)?;
                for p in parse_file(&path, text, ProjectSource::Local(path.clone()))? {
                    by_name.insert(p.name.clone(), p);
                }
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// The listing of `list-factories` in autobot's format: `Factories::`, a blank line,
/// then per project (sorted) `NAME:`, its description and a blank line; the text is
/// stripped of the last blank line, as autobot's was.
pub fn list_factories_text(projects: &[Project]) -> String {
    let mut sorted: Vec<&Project> = projects.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from("Factories::\n");
    for p in sorted {
        let description = if p.description.is_empty() {
            "(no description)"
        } else {
            p.description.as_str()
        };
        out.push_str(&format!("\n{}:\n{}\n", p.name, description));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_projects_load() {
        let ps = projects(None).unwrap();
        let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
        assert!(
            names.contains(&"hello") && names.contains(&"pyhello"),
            "{names:?}"
        );
        for p in &ps {
            assert!(!p.description.is_empty(), "{} has no description", p.name);
            assert!(p.keys.contains_key("type"), "{} has no type", p.name);
            assert_eq!(p.source, ProjectSource::Bundled);
        }
        let hello = ps.iter().find(|p| p.name == "hello").unwrap();
        assert_eq!(hello.keys["type"], "autotools");
        assert_eq!(hello.keys["sample"], "hello");
        assert_eq!(hello.keys["git"], "./repos/hello");
    }

    #[test]
    fn local_projects_override_bundled_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("projects")).unwrap();
        std::fs::write(
            dir.path().join("projects/hello.ini"),
            "[hello]\ndescription = my hello\ntype = source\ngit = ./h\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("projects/foo.ini"),
            "[foo]\ndescription = Foo thing\ntype = source\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("projects/notes.txt"), "ignored").unwrap();
        let ps = projects(Some(dir.path())).unwrap();
        let hello = ps.iter().find(|p| p.name == "hello").unwrap();
        assert_eq!(hello.description, "my hello");
        assert_eq!(
            hello.source,
            ProjectSource::Local(dir.path().join("projects/hello.ini"))
        );
        let text = list_factories_text(&ps);
        assert!(text.starts_with("Factories::\n\n"), "{text}");
        assert!(text.contains("\nfoo:\nFoo thing\n"), "{text}");
        assert!(text.contains("\nhello:\nmy hello\n"), "{text}");
        assert!(text.find("foo:").unwrap() < text.find("hello:").unwrap());
        assert!(!text.ends_with("\n\n"));
    }

    #[test]
    fn a_broken_local_project_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("projects")).unwrap();
        std::fs::write(dir.path().join("projects/bad.ini"), "[bad]\noops\n").unwrap();
        let e = projects(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("bad.ini:2:"), "{e}");
    }
}
