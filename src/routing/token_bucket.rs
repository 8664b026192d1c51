//! A token bucket: the new-connection rate of a client or a route. Pure
//! (time is an argument), so it is tested without a clock and under
//! tokio's paused time alike.
//!
//! Hand-written rather than the `governor` crate: the logic is these few
//! lines, while governor brings its own clock (not tokio's, which tests
//! pause), fixes a limiter's quota for its life (a route's rate changes on
//! a reload without resetting its bucket), and leaves the bounding of a
//! keyed table to its caller anyway (`proxy::client_rate`).

use tokio::time::Instant;

use crate::config::rate::Rate;

/// Tokens left and when they were counted. One token per connection;
/// `rate.per_second` come back each second, up to `rate.burst`. The rate is
/// passed on each call, so a route whose limits change keeps its bucket.
/// Counted in billionths of a token, so that a refill is exact integer
/// arithmetic (a nanosecond at `per_second` gives `per_second` of them):
/// no rounding ever admits one connection more or less than the rate.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    nano_tokens: u64,
    at: Instant,
}

const NANOS: u64 = 1_000_000_000;

impl TokenBucket {
    /// A bucket that has been quiet long enough to be full.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            nano_tokens: capacity(rate),
            at: now,
        }
    }

    /// The tokens there are at `now` (never more than the burst, which
    /// also clamps a bucket whose burst was lowered).
    fn nano_tokens_at(&self, rate: Rate, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        let refill = elapsed.saturating_mul(u128::from(rate.per_second));
        let total = u128::from(self.nano_tokens).saturating_add(refill);
        // At most the capacity, itself a u64: the cast cannot truncate.
        total.min(u128::from(capacity(rate))) as u64
    }

    /// Takes one token if there is one: whether the connection may go on.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        // A clock read before `at` (another thread's) counts as `at`.
        let now = now.max(self.at);
        self.nano_tokens = self.nano_tokens_at(rate, now);
        self.at = now;
        if self.nano_tokens >= NANOS {
            self.nano_tokens -= NANOS;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now`: it then says nothing a fresh
    /// one would not, and a table of buckets may drop it.
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        self.nano_tokens_at(rate, now) >= capacity(rate)
    }
}

/// The burst in billionths of a token (at most 10^15: the burst is bounded
/// by `RATE_MAX`).
fn capacity(rate: Rate) -> u64 {
    u64::from(rate.burst) * NANOS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATE: Rate = Rate {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_passes_then_the_rate_refills_it() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        assert!(b.try_take(RATE, t0));
        assert!(b.try_take(RATE, t0));
        assert!(b.try_take(RATE, t0));
        assert!(!b.try_take(RATE, t0), "the burst is spent");
        assert!(!b.is_full(RATE, t0));
        // 10 a second: one token per 100 ms, not before.
        assert!(!b.try_take(RATE, t0 + Duration::from_millis(90)));
        assert!(b.try_take(RATE, t0 + Duration::from_millis(100)));
        assert!(!b.try_take(RATE, t0 + Duration::from_millis(150)));
        // A long quiet spell refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        assert!(b.is_full(RATE, later));
        for _ in 0..3 {
            assert!(b.try_take(RATE, later));
        }
        assert!(!b.try_take(RATE, later));
    }

    #[test]
    fn a_lowered_burst_clamps_and_an_earlier_clock_is_not_a_refill() {
        let t0 = Instant::now();
        let big = Rate {
            per_second: 1,
            burst: 100,
        };
        let mut b = TokenBucket::full(big, t0);
        let small = Rate {
            per_second: 1,
            burst: 2,
        };
        assert!(b.try_take(small, t0));
        assert!(b.try_take(small, t0));
        assert!(!b.try_take(small, t0), "the lowered burst holds at once");
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.try_take(small, t1));
        // A clock read before the last take gives nothing back.
        assert!(!b.try_take(small, t0));
        assert!(!b.try_take(small, t1));
    }

    #[test]
    fn the_sustained_rate_is_the_configured_one() {
        let rate = Rate {
            per_second: 50,
            burst: 5,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        // Ten seconds of attempts every millisecond: the burst plus 50 a second.
        let admitted = (0..10_000)
            .filter(|ms| b.try_take(rate, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(
            admitted,
            5 + 499,
            "the burst, then one per 20 ms up to 9,999 ms"
        );
    }
}
