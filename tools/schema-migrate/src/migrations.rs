//! Reading a migrations directory.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::Error;

/// One `<version>_<name>.sql` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The 14-digit timestamp that orders the files.
    pub version: String,
    pub name: String,
    pub sql: String,
    /// sha256 of the file's bytes, lowercase hex.
    pub checksum: String,
}

impl Migration {
    pub fn file_name(&self) -> String {
        format!("{}_{}.sql", self.version, self.name)
    }

    /// Parses a file name; `None` when it does not follow the convention.
    fn parse_name(file_name: &str) -> Option<(String, String)> {
        let stem = file_name.strip_suffix(".sql")?;
        let (version, name) = stem.split_once('_')?;
        let version_ok = version.len() == 14 && version.bytes().all(|b| b.is_ascii_digit());
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        (version_ok && name_ok).then(|| (version.to_owned(), name.to_owned()))
    }
}

/// The migration files of a directory, ordered by version.
#[derive(Debug, Clone, Default)]
pub struct Migrations {
    by_version: BTreeMap<String, Migration>,
}

impl Migrations {
    /// Reads every `*.sql` file of `dir`; other files (a README, say) are
    /// ignored, but a `.sql` file with a malformed name is an error rather
    /// than silently skipped.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let read_err = |source| Error::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut by_version: BTreeMap<String, Migration> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_name.ends_with(".sql") {
                continue;
            }
            let (version, name) =
                Migration::parse_name(&file_name).ok_or_else(|| Error::BadFileName {
                    file: file_name.clone(),
                })?;
            let bytes = std::fs::read(entry.path()).map_err(|source| Error::Read {
                path: entry.path().display().to_string(),
                source,
            })?;
            let checksum = hex::encode(Sha256::digest(&bytes));
            let sql = String::from_utf8(bytes).map_err(|_| Error::Read {
                path: entry.path().display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
            })?;
            let migration = Migration {
                version: version.clone(),
                name,
                sql,
                checksum,
            };
            if let Some(first) = by_version.get(&version) {
                let (first, second) = ordered(first.file_name(), file_name);
                return Err(Error::DuplicateVersion { first, second });
            }
            by_version.insert(version, migration);
        }
        Ok(Migrations { by_version })
    }

    pub fn get(&self, version: &str) -> Option<&Migration> {
        self.by_version.get(version)
    }

    /// In version order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.by_version.values()
    }

    pub fn len(&self) -> usize {
        self.by_version.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_version.is_empty()
    }

    /// The newest version, which is the schema version once all are applied.
    pub fn latest(&self) -> Option<&Migration> {
        self.by_version.values().next_back()
    }
}

fn ordered(a: String, b: String) -> (String, String) {
    if a <= b { (a, b) } else { (b, a) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_supabase_convention() {
        assert_eq!(
            Migration::parse_name("20251125120000_initial_schema.sql"),
            Some(("20251125120000".into(), "initial_schema".into()))
        );
        for bad in [
            "2025_initial.sql",
            "20251125120000.sql",
            "20251125120000_.sql",
            "20251125120000_Initial.sql",
            "20251125120000-initial.sql",
            "2025112512000x_initial.sql",
        ] {
            assert_eq!(Migration::parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_in_version_order_with_checksums() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20250201000000_second.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.path().join("20250101000000_first.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join("README.md"), "not a migration").unwrap();
        let set = Migrations::from_dir(dir.path()).unwrap();
        let names: Vec<_> = set.iter().map(Migration::file_name).collect();
        assert_eq!(
            names,
            ["20250101000000_first.sql", "20250201000000_second.sql"]
        );
        // sha256("SELECT 1;")
        assert_eq!(
            set.get("20250101000000").unwrap().checksum,
            hex::encode(Sha256::digest(b"SELECT 1;"))
        );
        assert_eq!(set.latest().unwrap().name, "second");
    }

    #[test]
    fn malformed_sql_file_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema.sql"), "SELECT 1;").unwrap();
        assert!(matches!(
            Migrations::from_dir(dir.path()),
            Err(Error::BadFileName { file }) if file == "schema.sql"
        ));
    }

    #[test]
    fn duplicate_versions_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20250101000000_a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join("20250101000000_b.sql"), "SELECT 2;").unwrap();
        assert!(matches!(
            Migrations::from_dir(dir.path()),
            Err(Error::DuplicateVersion { .. })
        ));
    }
}
