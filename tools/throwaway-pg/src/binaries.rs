//! Finding the PostgreSQL server binaries.

use std::path::{Path, PathBuf};

use crate::Error;

/// The directory holding `initdb`, `postgres` and `pg_isready`.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    const REQUIRED: [&str; 3] = ["initdb", "postgres", "pg_isready"];

    /// Looks in `$PG_BINDIR`, then on `PATH`, then under
    /// `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu keep the server
    /// binaries off `PATH`), preferring the newest version there.
    pub fn locate() -> Result<Self, Error> {
        let explicit = std::env::var_os("PG_BINDIR").map(PathBuf::from);
        let on_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        explicit
            .into_iter()
            .chain(on_path)
            .chain(debian_versions(Path::new("/usr/lib/postgresql")))
            .find(|dir| Self::complete(dir))
            .map(|dir| Binaries { dir })
            .ok_or(Error::BinariesNotFound)
    }

    /// Uses the binaries in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        if Self::complete(&dir) {
            Ok(Binaries { dir })
        } else {
            Err(Error::BinariesNotFound)
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    pub fn postgres(&self) -> PathBuf {
        self.dir.join("postgres")
    }

    pub fn pg_isready(&self) -> PathBuf {
        self.dir.join("pg_isready")
    }

    fn complete(dir: &Path) -> bool {
        Self::REQUIRED.iter().all(|name| dir.join(name).is_file())
    }
}

/// `<root>/<major>/bin`, newest major version first.
fn debian_versions(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_newest_debian_version() {
        let root = tempfile::tempdir().unwrap();
        for name in ["9", "15", "16", "notaversion"] {
            std::fs::create_dir_all(root.path().join(name).join("bin")).unwrap();
        }
        let found = debian_versions(root.path());
        assert_eq!(
            found,
            vec![
                root.path().join("16/bin"),
                root.path().join("15/bin"),
                root.path().join("9/bin"),
            ]
        );
    }

    #[test]
    fn a_directory_without_the_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("initdb"), "").unwrap();
        assert!(matches!(
            Binaries::in_dir(dir.path()),
            Err(Error::BinariesNotFound)
        ));
    }
}
