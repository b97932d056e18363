//! Checksums: crc32c, hardware-accelerated where the CPU has it (SSE4.2 / ARMv8 CRC).

/// A crc32c checksum.
pub type Checksum = u32;

/// The crc32c of `bytes`.
#[inline]
pub fn checksum(bytes: &[u8]) -> Checksum {
    crc32c::crc32c(bytes)
}

/// The crc32c of `bytes`, continuing from `seed` (used to derive independent checksums).
#[inline]
pub fn checksum_seeded(seed: u32, bytes: &[u8]) -> Checksum {
    crc32c::crc32c_append(seed, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 (iSCSI) test vector: 32 bytes of zeros.
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn detects_single_bit_flips() {
        let data = b"the quick brown fox jumps over the lazy dog".to_vec();
        let good = checksum(&data);
        for byte in 0..data.len() {
            for bit in 0..8 {
                let mut copy = data.clone();
                copy[byte] ^= 1 << bit;
                assert_ne!(checksum(&copy), good);
            }
        }
    }
}
