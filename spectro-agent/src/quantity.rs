//! Kubernetes resource quantities (`250m`, `2`, `1500000n`, `128Mi`, `1G`, `1e3`) as
//! millicores and bytes.

/// Parses a quantity into its value times `scale` (1000 for millicores, 1 for bytes),
/// rounded up. `None` for text that is not a quantity.
#[must_use]
pub fn parse(q: &str, scale: f64) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (num, exp_suffix) = match (suffix.is_empty(), num.find(['e', 'E'])) {
        (true, Some(i)) => (&num[..i], Some(&num[i + 1..])),
        _ => (num, None),
    };
    let value: f64 = num.parse().ok()?;
    let factor = match (exp_suffix, suffix) {
        (Some(e), _) => 10f64.powi(e.parse().ok()?),
        (None, "") => 1.0,
        (None, "n") => 1e-9,
        (None, "u") => 1e-6,
        (None, "m") => 1e-3,
        (None, "k") => 1e3,
        (None, "M") => 1e6,
        (None, "G") => 1e9,
        (None, "T") => 1e12,
        (None, "P") => 1e15,
        (None, "E") => 1e18,
        (None, "Ki") => 1024.0,
        (None, "Mi") => 1024f64.powi(2),
        (None, "Gi") => 1024f64.powi(3),
        (None, "Ti") => 1024f64.powi(4),
        (None, "Pi") => 1024f64.powi(5),
        (None, "Ei") => 1024f64.powi(6),
        _ => return None,
    };
    let v = value * factor * scale;
    (v.is_finite() && v >= 0.0).then(|| v.ceil() as u64)
}

/// CPU in millicores.
#[must_use]
pub fn millicores(q: &str) -> Option<u64> {
    parse(q, 1000.0)
}

/// Memory (or storage) in bytes.
#[must_use]
pub fn bytes(q: &str) -> Option<u64> {
    parse(q, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_quantities() {
        assert_eq!(millicores("250m"), Some(250));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("1500000n"), Some(2));
        assert_eq!(millicores("0.5"), Some(500));
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("12Ki"), Some(12 * 1024));
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes("1Xi"), None);
    }
}
