//! The per-client new-connection rate: one token bucket per client (an
//! address aggregated to a prefix, as for the other per-client limits).
//! The connection caps count what a client holds; a client that connects
//! and closes in a loop holds little and costs a hello read, a route lookup
//! and a backend connect (on terminate routes a full handshake) each time,
//! which only a rate bounds.
//!
//! Memory is bounded whatever the sources: the table holds at most
//! [`MAX_TRACKED`] clients (about 4 MiB). A full bucket says nothing a
//! fresh one would not, so buckets are dropped once full again: a client
//! stays in the table only while it is spending faster than it refills,
//! burst / rate seconds at most after its last connection (5 s by default).
//! When the table is full all the same, it is swept at most once a second;
//! a new client that still finds no room is let through untracked (and
//! logged, at most once a sweep): refusing it instead would let a flood of
//! distinct sources lock every new client out, while the clients already
//! tracked, the heavy ones, stay limited, and the global and per-client
//! connection caps still hold.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::config::clients::ClientPrefixes;
use crate::config::rate::Rate;
use crate::routing::token_bucket::TokenBucket;

/// Clients tracked at once. An entry is an address and a bucket, about 64
/// bytes with the map's own overhead; 65,536 of them are about 4 MiB. Each
/// tracked client connected within its last burst / rate seconds and has
/// not refilled yet: keeping 65,536 of them in the table takes tens of
/// thousands of new connections a second from as many distinct clients.
pub const MAX_TRACKED: usize = 65_536;

/// How often a full table may be swept: a sweep visits every entry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The per-client rate, for every client.
#[derive(Debug)]
pub struct ClientRate {
    rate: Option<Rate>,
    prefixes: ClientPrefixes,
    max_tracked: usize,
    buckets: DashMap<IpAddr, TokenBucket>,
    /// When the table was last swept; a lock only taken with `try_lock`.
    swept: Mutex<Option<Instant>>,
}

impl ClientRate {
    /// `rate` `None`: no limit, nothing tracked.
    pub fn new(rate: Option<Rate>, prefixes: ClientPrefixes) -> Self {
        Self::with_capacity(rate, prefixes, MAX_TRACKED)
    }

    fn with_capacity(rate: Option<Rate>, prefixes: ClientPrefixes, max_tracked: usize) -> Self {
        Self {
            rate,
            prefixes,
            max_tracked,
            buckets: DashMap::new(),
            swept: Mutex::new(None),
        }
    }

    /// Whether the client of `ip` may open a connection at `now` (taking
    /// one of its tokens if so). No lock is held when this returns.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let client = self.prefixes.client(ip);
        if let Some(mut b) = self.buckets.get_mut(&client) {
            return b.try_take(rate, now);
        }
        // `len` locks every shard for reading: no entry guard is held here.
        if self.buckets.len() >= self.max_tracked {
            self.sweep(rate, now);
            if self.buckets.len() >= self.max_tracked {
                return true;
            }
        }
        let mut b = self
            .buckets
            .entry(client)
            .or_insert_with(|| TokenBucket::full(rate, now));
        b.try_take(rate, now)
    }

    /// Drops the buckets that are full again, at most once a [`SWEEP_EVERY`].
    fn sweep(&self, rate: Rate, now: Instant) {
        let Ok(mut swept) = self.swept.try_lock() else {
            return; // another connection is sweeping
        };
        if swept.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY) {
            return;
        }
        *swept = Some(now);
        self.buckets.retain(|_, b| !b.is_full(rate, now));
        if self.buckets.len() >= self.max_tracked {
            tracing::warn!(
                tracked = self.buckets.len(),
                "per-client rate table full: new clients pass untracked until buckets refill"
            );
        }
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const RATE: Rate = Rate {
        per_second: 1,
        burst: 2,
    };

    #[test]
    fn each_client_has_its_own_bucket_by_prefix() {
        let r = ClientRate::new(Some(RATE), ClientPrefixes::default());
        let now = Instant::now();
        assert!(r.allow(ip("127.0.0.2"), now));
        assert!(r.allow(ip("127.0.0.2"), now));
        assert!(!r.allow(ip("127.0.0.2"), now), "the burst is spent");
        assert!(r.allow(ip("127.0.0.3"), now), "another client is not");
        // One IPv6 /64 is one client; a mapped IPv4 is the IPv4 client.
        assert!(r.allow(ip("2001:db8:1:2::1"), now));
        assert!(r.allow(ip("2001:db8:1:2::ffff"), now));
        assert!(!r.allow(ip("2001:db8:1:2:abcd::9"), now));
        assert!(!r.allow(ip("::ffff:127.0.0.2"), now));
        assert!(r.allow(ip("127.0.0.2"), now + Duration::from_secs(1)));
        assert_eq!(r.tracked(), 3);
    }

    #[test]
    fn no_rate_tracks_nothing() {
        let r = ClientRate::new(None, ClientPrefixes::default());
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(r.allow(ip("127.0.0.2"), now));
        }
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn a_flood_of_distinct_sources_never_grows_the_table_past_its_bound() {
        let r = ClientRate::with_capacity(Some(RATE), ClientPrefixes::default(), 100);
        let t0 = Instant::now();
        // 10,000 distinct clients at once: the table stops at its bound and
        // the newcomers past it pass untracked.
        for i in 0..10_000u32 {
            assert!(r.allow(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0));
        }
        assert_eq!(r.tracked(), 100);
        // A client already tracked stays limited while the table is full.
        let heavy = IpAddr::from(0x0a00_0000u32.to_be_bytes());
        assert!(r.allow(heavy, t0));
        assert!(!r.allow(heavy, t0));
        // Once their buckets refill, the next sweep makes room: new clients
        // are tracked (and limited) again.
        let later = t0 + Duration::from_secs(10);
        let newcomer = ip("192.0.2.1");
        assert!(r.allow(newcomer, later));
        assert_eq!(r.tracked(), 1, "the refilled buckets were dropped");
        assert!(r.allow(newcomer, later));
        assert!(!r.allow(newcomer, later));
    }

    #[test]
    fn a_tracked_entry_is_small() {
        // The bound in MAX_TRACKED's comment: an entry's key and bucket.
        assert!(std::mem::size_of::<(IpAddr, TokenBucket)>() <= 48);
    }
}
