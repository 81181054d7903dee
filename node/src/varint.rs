//! LEB128 varints for the store's packed keys and entries: seven bits a
//! byte, low first, the high bit set on every byte but the last.

/// Appends `v` to `out`.
pub fn put(out: &mut impl Extend<u8>, mut v: u64) {
    while v >= 0x80 {
        out.extend([(v as u8) | 0x80]);
        v >>= 7;
    }
    out.extend([v as u8]);
}

/// The varint at the start of `bytes` and how many bytes it took; `None`
/// when `bytes` ends inside it or it runs past ten bytes.
pub fn take(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            super::put(&mut out, v);
            assert_eq!(super::take(&out), Some((v, out.len())));
        }
        assert_eq!(super::take(&[0x80]), None);
    }
}
