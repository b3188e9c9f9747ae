//! Asset bytes, cached by digest.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError, now};

impl Store {
    /// Keeps the bytes of an asset, checked against the digest they are
    /// filed under.
    pub fn put_cached_asset(&mut self, sha256: &str, data: &[u8]) -> Result<()> {
        let actual = hex::encode(Sha256::digest(data));
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(StoreError::DigestMismatch {
                expected: sha256.to_owned(),
            });
        }
        self.conn.execute(
            "INSERT INTO asset_cache (sha256, data, cached_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (sha256) DO NOTHING",
            params![actual, data, now()],
        )?;
        Ok(())
    }

    pub fn cached_asset(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT data FROM asset_cache WHERE sha256 = ?1",
                [sha256.to_ascii_lowercase()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Drops cached bytes no mirrored asset refers to any more.
    pub fn prune_asset_cache(&mut self) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM asset_cache WHERE sha256 NOT IN (SELECT lower(sha256) FROM fragment_assets)",
            [],
        )?)
    }
}
