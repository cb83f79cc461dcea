//! Numbers as little-endian bytes: what processes send each other (the collectives gather
//! bytes; every rank decodes them alike).

/// `values` as little-endian bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `values` as little-endian bytes.
pub fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The `f32`s of little-endian `bytes` (a trailing partial value is ignored).
pub fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The `f64`s of little-endian `bytes` (a trailing partial value is ignored).
pub fn f64s(bytes: &[u8]) -> impl Iterator<Item = f64> + '_ {
    bytes.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        f64::from_le_bytes(a)
    })
}

/// The `u64` that `bytes` start with (0 when they are shorter).
pub fn leading_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_through_their_bytes() {
        let a = [1.5f32, -0.0, f32::MAX, 3e-39];
        assert!(f32s(&f32_bytes(&a))
            .zip(a)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        let b = [2.25f64, -7.0, f64::MIN_POSITIVE];
        assert_eq!(f64s(&f64_bytes(&b)).collect::<Vec<_>>(), b);
        assert_eq!(f32s(&[0, 0, 128, 63, 9]).collect::<Vec<_>>(), [1.0]);
        assert_eq!(leading_u64(&42u64.to_le_bytes()), 42);
        assert_eq!(leading_u64(&[1, 2]), 0);
    }
}
