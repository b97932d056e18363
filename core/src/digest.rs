//! A small, stable, non-cryptographic 64-bit hash (FNV-1a) for state digests and trace hashes.
//! Stable across platforms and Rust versions, unlike `std`'s hashers.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub fn new() -> Digest {
        Digest::default()
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    /// Length-prefixed, so that ("ab","c") and ("a","bc") differ.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.u64(bytes.len() as u64).bytes(bytes)
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The digest of a key-value set: the wrapping sum of each pair's hash, so that it is kept up to
/// date in O(1) per write ([`pair_hash`] added on insert, subtracted on removal) by a model that
/// checks the state after every request, whatever the number of keys.
pub fn pairs_digest<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    pairs.into_iter().fold(0, |sum, (key, value)| {
        sum.wrapping_add(pair_hash(key, value))
    })
}

pub fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    Digest::new().field(key).field(value).finish()
}
