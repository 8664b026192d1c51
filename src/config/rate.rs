//! A new-connection rate (a token bucket's refill and size), and its
//! validation wherever one is set: `[limits]` for clients and the default of
//! routes, a route's own `limits`, an app record's `limits`.

use std::path::Path;

use super::ConfigErrors;

/// New connections a bucket admits: `per_second` on average, up to `burst`
/// at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// At least 1.
    pub per_second: u32,
    /// At least 1.
    pub burst: u32,
}

/// The largest rate and burst accepted: a million new connections a second
/// is far past what one proxy process accepts, so a larger value is a typo,
/// and bounding it keeps a bucket's count of billionths of a token in a
/// `u64`.
pub const RATE_MAX: u32 = 1_000_000;

/// Validates a rate and its burst as written. A rate of 0 turns the limit
/// off (`None`); an unset burst is `default_burst(rate)`. `field` names each
/// key in errors (`limits.client_new_connections_per_second`...).
pub fn validate(
    path: &Path,
    fields: (&str, &str),
    per_second: u32,
    burst: Option<u32>,
    default_burst: impl FnOnce(u32) -> u32,
    errs: &mut ConfigErrors,
) -> Option<Rate> {
    let (rate_field, burst_field) = fields;
    let before = errs.0.len();
    if per_second > RATE_MAX {
        errs.push(
            path,
            rate_field,
            format!("{per_second} is more than the most allowed, {RATE_MAX}"),
        );
    }
    match burst {
        Some(b) if b > RATE_MAX => errs.push(
            path,
            burst_field,
            format!("{b} is more than the most allowed, {RATE_MAX}"),
        ),
        Some(0) if per_second > 0 => errs.push(
            path,
            burst_field,
            "must be at least 1 while a rate is set (a rate of 0 turns the limit off)",
        ),
        _ => {}
    }
    if per_second == 0 || errs.0.len() > before {
        return None;
    }
    let burst = burst.unwrap_or_else(|| default_burst(per_second));
    Some(Rate {
        per_second,
        burst: burst.clamp(1, RATE_MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rate: u32, burst: Option<u32>) -> Result<Option<Rate>, String> {
        let mut errs = ConfigErrors::default();
        let r = validate(
            Path::new("p.toml"),
            ("limits.r", "limits.b"),
            rate,
            burst,
            |r| r.saturating_mul(2),
            &mut errs,
        );
        if errs.is_empty() {
            Ok(r)
        } else {
            Err(errs.to_string())
        }
    }

    #[test]
    fn zero_is_off_and_an_unset_burst_takes_the_default() {
        assert_eq!(check(0, None), Ok(None));
        assert_eq!(check(0, Some(5)), Ok(None));
        assert_eq!(
            check(10, None),
            Ok(Some(Rate {
                per_second: 10,
                burst: 20
            }))
        );
        assert_eq!(
            check(RATE_MAX, None).unwrap().unwrap().burst,
            RATE_MAX,
            "a default past the bound is clamped"
        );
    }

    #[test]
    fn bounds_are_named_by_file_and_field() {
        assert_eq!(
            check(RATE_MAX + 1, Some(1)),
            Err("p.toml: limits.r: 1000001 is more than the most allowed, 1000000".into())
        );
        assert_eq!(
            check(5, Some(RATE_MAX + 1)),
            Err("p.toml: limits.b: 1000001 is more than the most allowed, 1000000".into())
        );
        let e = check(5, Some(0)).unwrap_err();
        assert!(e.starts_with("p.toml: limits.b: must be at least 1"), "{e}");
    }
}
