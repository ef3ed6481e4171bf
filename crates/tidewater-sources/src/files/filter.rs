//! Which paths under the root are documents, and what their ids are.

use std::path::{Component, Path};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::error::SourceError;

/// The document id of `path` under `root`: the relative path with `/` separators
/// (`guides/intro.md`). `None` when `path` is the root itself, lies outside it, or has a
/// component that is not valid UTF-8 (ids are strings everywhere downstream).
pub fn relative_doc_id(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut id = String::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => {
                if !id.is_empty() {
                    id.push('/');
                }
                id.push_str(part.to_str()?);
            }
            Component::CurDir => {}
            // `..`, a second root or a prefix would make the id escape the root.
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!id.is_empty()).then_some(id)
}

/// The compiled `include` and `exclude` globs of one root.
#[derive(Debug, Clone)]
pub(crate) struct PathFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl PathFilter {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, SourceError> {
        Ok(Self {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether the file with this document id is part of the source.
    pub(crate) fn includes_file(&self, doc_id: &str) -> bool {
        self.include.is_match(doc_id) && !self.exclude.is_match(doc_id)
    }

    /// Whether a directory's whole subtree is excluded, so a listing need not enter it.
    pub(crate) fn excludes_dir(&self, dir_id: &str) -> bool {
        self.exclude.is_match(dir_id)
    }
}

fn compile(patterns: &[String]) -> Result<GlobSet, SourceError> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        // `*` stops at `/` so that `guides/*.md` means what it says in gitignore terms.
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|source| SourceError::InvalidGlob {
                pattern: pattern.clone(),
                source,
            })?;
        set.add(glob);
    }
    set.build().map_err(|source| SourceError::InvalidGlob {
        pattern: patterns.join(", "),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FilesConfig;

    fn default_filter() -> PathFilter {
        let config = FilesConfig::new("/r");
        PathFilter::new(&config.include, &config.exclude).unwrap()
    }

    #[test]
    fn doc_ids_are_relative_slash_paths() {
        let root = Path::new("/srv/docs");
        assert_eq!(
            relative_doc_id(root, Path::new("/srv/docs/guides/intro.md")).as_deref(),
            Some("guides/intro.md")
        );
        assert_eq!(relative_doc_id(root, Path::new("/srv/docs")), None);
        assert_eq!(relative_doc_id(root, Path::new("/srv/other/a.md")), None);
        assert_eq!(relative_doc_id(root, Path::new("/srv/docs/../x.md")), None);
    }

    #[test]
    fn default_globs_take_documents_and_skip_hidden_paths() {
        let filter = default_filter();
        for id in ["a.md", "guides/intro.md", "x/y/z.htm", "n.txt"] {
            assert!(filter.includes_file(id), "{id}");
        }
        for id in [
            ".hidden.md",
            "a/.b.md",
            ".git/x.md",
            "a/.cache/b/c.txt",
            "a.pdf",
            "a.md~",
        ] {
            assert!(!filter.includes_file(id), "{id}");
        }
        assert!(filter.excludes_dir(".git"));
        assert!(filter.excludes_dir("a/.cache"));
        assert!(!filter.excludes_dir("guides"));
    }

    #[test]
    fn star_does_not_cross_directories() {
        let filter = PathFilter::new(&["guides/*.md".to_owned()], &[]).unwrap();
        assert!(filter.includes_file("guides/a.md"));
        assert!(!filter.includes_file("guides/deep/a.md"));
    }

    #[test]
    fn names_the_bad_glob() {
        let err = PathFilter::new(&["a[".to_owned()], &[]).unwrap_err();
        assert!(err.to_string().contains("a["), "{err}");
    }
}
