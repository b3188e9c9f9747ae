//! The built-in embedder: no network, no model file.

use super::{EmbedError, Embedder, Purpose};

/// The built-in model's name, stored with each of its vectors. A change to
/// the algorithm must change the name, or old and new vectors would mix.
pub const HASHED_NGRAMS_MODEL: &str = "hashed-ngrams-v1";

/// The built-in model's dimension (the legacy file's).
pub const DIMENSIONS: usize = crate::store::LEGACY_DIMENSIONS;

/// Feature hashing of character n-grams (1 to 4 code points).
///
/// Thai writes words without spaces, so word tokens are not available
/// without a dictionary; character n-grams match shared syllables and
/// words wherever they fall. Each n-gram is hashed (FNV-1a, stable across
/// platforms and releases) to one of 384 buckets with a sign, the weights
/// summed and the vector L2-normalised, so that the vec0 table's L2
/// distance orders results as cosine similarity would.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashedNgrams;

impl HashedNgrams {
    /// Longer n-grams carry more meaning; unigrams only break ties.
    const WEIGHTS: [f32; 4] = [0.25, 1.0, 1.0, 0.75];

    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; DIMENSIONS];
        // Lowercase and one space per run of whitespace, padded so that the
        // n-grams at the start and end are marked as such.
        let mut chars = vec![' '];
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_whitespace() {
                if chars.last() != Some(&' ') {
                    chars.push(' ');
                }
            } else if !c.is_control() {
                chars.push(c);
            }
        }
        if chars.last() != Some(&' ') {
            chars.push(' ');
        }
        let mut buf = String::new();
        for (i, weight) in Self::WEIGHTS.iter().enumerate() {
            let n = i + 1;
            for gram in chars.windows(n) {
                if n == 1 && gram[0] == ' ' {
                    continue;
                }
                buf.clear();
                buf.extend(gram);
                let h = fnv1a(n as u8, buf.as_bytes());
                let bucket = (h % DIMENSIONS as u64) as usize;
                let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                v[bucket] += sign * weight;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

fn fnv1a(seed: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(seed).chain(bytes.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; a final avalanche
    // (from MurmurHash3) spreads them before the modulo.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl Embedder for HashedNgrams {
    fn model(&self) -> &str {
        HASHED_NGRAMS_MODEL
    }

    fn batch_size(&self) -> usize {
        512
    }

    /// Queries and passages alike: shared character n-grams are what
    /// match, and a prefix would only add the same n-grams to every text.
    fn embed(&self, texts: &[&str], _purpose: Purpose) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }

    fn dimensions(&self) -> Option<usize> {
        Some(DIMENSIONS)
    }
}
