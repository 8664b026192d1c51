//! Per-route accounting: the connections a route holds and its
//! new-connection bucket, checked against the route's limits when a
//! connection is routed. One value per route, shared by an entry and its
//! successors (a cosmetic edit, a limits change), so the count and the
//! bucket carry over a reload and new limits apply to them at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use super::token_bucket::TokenBucket;
use crate::config::route_limits::Effective;

/// Why a route refused a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It holds its `max_connections`.
    Full,
    /// Its new-connection rate is spent.
    Rate,
}

/// A route's live load.
#[derive(Debug, Default)]
pub struct RouteLoad {
    open: AtomicUsize,
    /// Created on the first connection under a rate. The lock is held for
    /// one arithmetic step, never across an `.await`.
    bucket: Mutex<Option<TokenBucket>>,
}

impl RouteLoad {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts one more connection, whatever the cap.
    pub fn enter(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one more connection if `limits` allow it now: first the cap
    /// (a full route spends no token), then the rate. The caller releases
    /// the count with [`RouteLoad::leave`] (through a guard).
    pub fn try_enter(&self, limits: &Effective, now: Instant) -> Result<(), Refused> {
        let max = limits.max_connections;
        if max == 0 {
            self.enter();
        } else {
            // Compare and add in one step, so concurrent connections never
            // pass the cap together. A cap lowered under the live count
            // refuses until enough have left; none is closed for it.
            self.open
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .map_err(|_| Refused::Full)?;
        }
        if let Some(rate) = limits.rate {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let b = bucket.get_or_insert_with(|| TokenBucket::full(rate, now));
            if !b.try_take(rate, now) {
                drop(bucket);
                self.leave();
                return Err(Refused::Rate);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rate::Rate;
    use std::time::Duration;

    fn limits(max: usize, rate: Option<(u32, u32)>) -> Effective {
        Effective {
            max_connections: max,
            rate: rate.map(|(per_second, burst)| Rate { per_second, burst }),
        }
    }

    #[test]
    fn the_cap_counts_held_connections_and_frees_on_leave() {
        let load = RouteLoad::default();
        let now = Instant::now();
        let cap = limits(2, None);
        assert_eq!(load.try_enter(&cap, now), Ok(()));
        assert_eq!(load.try_enter(&cap, now), Ok(()));
        assert_eq!(load.try_enter(&cap, now), Err(Refused::Full));
        assert_eq!(load.open(), 2, "a refusal holds nothing");
        load.leave();
        assert_eq!(load.try_enter(&cap, now), Ok(()));
        // No cap: counted, never refused.
        for _ in 0..100 {
            assert_eq!(load.try_enter(&limits(0, None), now), Ok(()));
        }
        assert_eq!(load.open(), 102);
    }

    #[test]
    fn a_lowered_cap_refuses_new_connections_and_keeps_live_ones() {
        let load = RouteLoad::default();
        let now = Instant::now();
        for _ in 0..5 {
            load.try_enter(&limits(10, None), now).unwrap();
        }
        let lowered = limits(3, None);
        assert_eq!(load.try_enter(&lowered, now), Err(Refused::Full));
        assert_eq!(load.open(), 5);
        load.leave();
        load.leave();
        assert_eq!(load.try_enter(&lowered, now), Err(Refused::Full));
        load.leave();
        assert_eq!(load.try_enter(&lowered, now), Ok(()));
    }

    #[test]
    fn the_rate_refuses_past_the_burst_and_a_full_route_spends_no_token() {
        let load = RouteLoad::default();
        let t0 = Instant::now();
        let l = limits(1, Some((1, 2)));
        assert_eq!(load.try_enter(&l, t0), Ok(()));
        // At the cap: refused as full, and the bucket keeps its token.
        assert_eq!(load.try_enter(&l, t0), Err(Refused::Full));
        load.leave();
        assert_eq!(load.try_enter(&l, t0), Ok(()));
        load.leave();
        assert_eq!(load.try_enter(&l, t0), Err(Refused::Rate));
        assert_eq!(load.open(), 0, "a rate refusal releases its count");
        assert_eq!(load.try_enter(&l, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn concurrent_entries_never_pass_the_cap() {
        let load = std::sync::Arc::new(RouteLoad::default());
        let now = Instant::now();
        let cap = limits(100, None);
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let load = &load;
                    s.spawn(move || {
                        (0..1000)
                            .filter(|_| load.try_enter(&cap, now).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 100);
        assert_eq!(load.open(), 100);
    }
}
