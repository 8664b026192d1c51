//! Serve-stale (in the spirit of RFC 8767): the last good answer for each
//! backend name, kept so that an outage of the DNS server (timeout,
//! connection refused, SERVFAIL) does not take every named backend down
//! with it. Only an outage falls back to it; an NXDOMAIN or an empty answer
//! is the DNS speaking, and forgets the name.
//!
//! Pure: time comes in as an argument, so expiry is tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// One name's last good answer.
#[derive(Debug, Clone)]
struct Entry {
    ips: Vec<IpAddr>,
    /// The last successful lookup: the answer may be served until
    /// `good_at + max_stale`.
    good_at: Instant,
}

/// Last good answers by name, at most `capacity` names. When a new name
/// arrives at a full cache, expired entries go first, then the one whose
/// last good answer is oldest: a name no connection asked for in a long
/// time matters least. That scan is O(capacity), paid only by a new name at
/// a full cache; a name already held is refreshed in O(1).
#[derive(Debug)]
pub struct StaleCache {
    entries: HashMap<String, Entry>,
    capacity: usize,
    max_stale: Duration,
}

impl StaleCache {
    /// A cache of at most `capacity` names whose answers are served up to
    /// `max_stale` after their last good lookup. A zero of either turns
    /// serve-stale off.
    pub fn new(capacity: usize, max_stale: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            max_stale,
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.max_stale.is_zero()
    }

    /// Records a good answer for `name` at `now`.
    pub fn put(&mut self, name: &str, ips: &[IpAddr], now: Instant) {
        if !self.enabled() {
            return;
        }
        if let Some(e) = self.entries.get_mut(name) {
            if e.ips != ips {
                e.ips = ips.to_vec();
            }
            e.good_at = now;
            return;
        }
        if self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(
            name.to_string(),
            Entry {
                ips: ips.to_vec(),
                good_at: now,
            },
        );
    }

    /// The last good answer for `name`, if it is still young enough at `now`.
    pub fn get(&mut self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let e = self.entries.get(name)?;
        if now.saturating_duration_since(e.good_at) < self.max_stale {
            return Some(e.ips.clone());
        }
        self.entries.remove(name);
        None
    }

    /// The DNS said `name` has no address: its old answer is wrong now.
    pub fn forget(&mut self, name: &str) {
        self.entries.remove(name);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the expired entries, then, if still full, the oldest one.
    fn make_room(&mut self, now: Instant) {
        let max = self.max_stale;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.good_at) < max);
        if self.entries.len() < self.capacity {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.good_at)
            .map(|(n, _)| n.clone());
        if let Some(n) = oldest {
            self.entries.remove(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ips(s: &str) -> Vec<IpAddr> {
        vec![s.parse().unwrap()]
    }

    #[test]
    fn an_answer_is_served_until_it_is_too_old() {
        let t0 = Instant::now();
        let mut c = StaleCache::new(10, HOUR);
        c.put("a.test", &ips("10.0.0.1"), t0);
        assert_eq!(c.get("a.test", t0 + HOUR / 2), Some(ips("10.0.0.1")));
        assert_eq!(c.get("a.test", t0 + HOUR), None, "expired at the bound");
        assert!(c.is_empty(), "an expired entry is dropped when met");
        assert_eq!(c.get("b.test", t0), None);
    }

    #[test]
    fn a_fresh_answer_restarts_the_clock_and_replaces_the_addresses() {
        let t0 = Instant::now();
        let mut c = StaleCache::new(10, HOUR);
        c.put("a.test", &ips("10.0.0.1"), t0);
        c.put("a.test", &ips("10.0.0.2"), t0 + HOUR / 2);
        assert_eq!(c.get("a.test", t0 + HOUR), Some(ips("10.0.0.2")));
        c.forget("a.test");
        assert_eq!(c.get("a.test", t0 + HOUR), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_oldest() {
        let t0 = Instant::now();
        let mut c = StaleCache::new(2, HOUR);
        c.put("old.test", &ips("10.0.0.1"), t0);
        c.put("mid.test", &ips("10.0.0.2"), t0 + HOUR / 2);
        c.put("new.test", &ips("10.0.0.3"), t0 + HOUR / 2);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("old.test", t0 + HOUR / 2), None, "oldest went");
        // An hour later both are expired: a new name clears them.
        c.put("newer.test", &ips("10.0.0.4"), t0 + 2 * HOUR);
        assert_eq!(c.len(), 1);
        assert!(c.get("newer.test", t0 + 2 * HOUR).is_some());
    }

    #[test]
    fn zero_turns_it_off() {
        let t0 = Instant::now();
        for mut c in [
            StaleCache::new(0, HOUR),
            StaleCache::new(10, Duration::ZERO),
        ] {
            c.put("a.test", &ips("10.0.0.1"), t0);
            assert_eq!(c.get("a.test", t0), None);
        }
    }
}
