//! Sub-seeds: one `seed` in every config, and an independent stream per component derived from it.

/// A sub-seed for one component (`stream`), so that components draw independent streams from
/// one seed: the splitmix64 finaliser over the pair.
pub fn sub_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
