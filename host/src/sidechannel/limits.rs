//! The receive pipeline's bounded memories: per-neighbour token buckets and the dedupe cache.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::crypto::{Hash32, PublicKey, Signature, hash_parts};

/// Most neighbours whose rate-limit state is kept (least recently seen is forgotten).
pub(crate) const RATE_LIMIT_ENTRIES: usize = 4096;

/// The limiter's knobs (from the settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateConfig {
    pub rate_bytes: u64,
    pub burst: u64,
    pub max_strikes: u32,
    pub strike_window_ms: u64,
    pub block_ms: u64,
    pub disconnect_after_blocks: u32,
}

/// The limiter's verdict on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Within budget.
    Pass,
    /// Over budget or blocked; `disconnect` asks the node to drop the neighbour.
    Limited { disconnect: bool },
}

/// One neighbour's bucket. Tokens are kept in milli-bytes so slow refills are not lost to
/// rounding.
#[derive(Debug, Clone)]
struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
    strikes: u32,
    window_end: u64,
    blocked_until: u64,
    blocks: u32,
    last_block: u64,
    touched: u64,
}

/// Token buckets keyed by neighbour key, in a map of at most [`RATE_LIMIT_ENTRIES`] entries.
/// State survives disconnects, so reconnecting does not lift a block.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    buckets: HashMap<PublicKey, Bucket>,
    capacity: usize,
    clock: u64,
}

impl RateLimiter {
    pub fn new(capacity: usize) -> Self {
        RateLimiter {
            buckets: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Charges `size` wire bytes to `key`'s bucket.
    pub fn admit(&mut self, key: &PublicKey, size: usize, now: u64, cfg: &RateConfig) -> Admit {
        if cfg.rate_bytes == 0 {
            return Admit::Pass;
        }
        let bucket = self.bucket(key, now, cfg);
        if now < bucket.blocked_until {
            return Admit::Limited {
                disconnect: bucket.blocks >= cfg.disconnect_after_blocks,
            };
        }
        let elapsed = now.saturating_sub(bucket.last_ms);
        let full = cfg.burst.saturating_mul(1_000);
        bucket.tokens_milli = bucket
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(cfg.rate_bytes))
            .min(full);
        bucket.last_ms = bucket.last_ms.max(now);
        let cost = (size as u64).saturating_mul(1_000);
        if cost <= bucket.tokens_milli {
            bucket.tokens_milli -= cost;
            return Admit::Pass;
        }
        let disconnect = Self::add_strike(bucket, now, cfg);
        Admit::Limited { disconnect }
    }

    /// Records a strike against `key` (a frame that should never have been sent); returns
    /// whether the node should disconnect it.
    pub fn strike(&mut self, key: &PublicKey, now: u64, cfg: &RateConfig) -> bool {
        if cfg.rate_bytes == 0 {
            return false;
        }
        let bucket = self.bucket(key, now, cfg);
        Self::add_strike(bucket, now, cfg)
    }

    /// Until when `key` is blocked, if it is.
    pub fn blocked_until(&self, key: &PublicKey, now: u64) -> Option<u64> {
        self.buckets
            .get(key)
            .map(|b| b.blocked_until)
            .filter(|until| *until > now)
    }

    fn add_strike(bucket: &mut Bucket, now: u64, cfg: &RateConfig) -> bool {
        if now >= bucket.window_end {
            bucket.strikes = 0;
            bucket.window_end = now.saturating_add(cfg.strike_window_ms);
        }
        bucket.strikes += 1;
        if bucket.strikes < cfg.max_strikes {
            return false;
        }
        // Blocked: blocks in close succession add up; a long quiet time forgives them.
        let forgive_after = cfg.block_ms.saturating_mul(10);
        if bucket.blocks > 0 && now.saturating_sub(bucket.last_block) > forgive_after {
            bucket.blocks = 0;
        }
        bucket.strikes = 0;
        bucket.blocks += 1;
        bucket.last_block = now;
        bucket.blocked_until = now.saturating_add(cfg.block_ms);
        bucket.blocks >= cfg.disconnect_after_blocks
    }

    /// `key`'s bucket, created full; when the map is full the least recently used entry is
    /// forgotten (a scan, done only when a new key arrives at a full map).
    fn bucket(&mut self, key: &PublicKey, now: u64, cfg: &RateConfig) -> &mut Bucket {
        self.clock += 1;
        let touched = self.clock;
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.capacity {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.touched)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.buckets.remove(&oldest);
            }
        }
        let bucket = self.buckets.entry(*key).or_insert_with(|| Bucket {
            tokens_milli: cfg.burst.saturating_mul(1_000),
            last_ms: now,
            strikes: 0,
            window_end: now.saturating_add(cfg.strike_window_ms),
            blocked_until: 0,
            blocks: 0,
            last_block: 0,
            touched,
        });
        bucket.touched = touched;
        bucket
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// A frame's identity: its author and id.
pub(crate) type FrameKey = (PublicKey, [u8; 16]);

/// What the dedupe cache remembers of a frame whose signature verified.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// BLAKE3 of the digest and signature that verified ([`fingerprint`]).
    pub print: Hash32,
    /// The frame's timestamp.
    pub ts: u64,
    /// Whether the frame passed the policy (a refused one may pass later, e.g. once the
    /// channel's welcome arrives, without verifying the same signature again).
    pub accepted: bool,
}

/// What identifies a verified (digest, signature) pair in the dedupe cache.
pub(crate) fn fingerprint(digest: &Hash32, sig: &Signature) -> Hash32 {
    hash_parts(&[digest.as_bytes(), sig.as_bytes()])
}

/// Frames seen recently, keyed by `(from, id)`, kept for twice the timestamp window (so
/// longer than any frame is fresh) and at most `capacity` of them. Forgetting a frame early
/// raises the `floor`: frames not newer than a forgotten one are refused as stale.
#[derive(Debug)]
pub(crate) struct Dedupe {
    seen: HashMap<FrameKey, Seen>,
    order: VecDeque<(FrameKey, u64)>,
    capacity: usize,
    floor: u64,
}

impl Dedupe {
    pub fn new(capacity: usize) -> Self {
        Dedupe {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            floor: 0,
        }
    }

    pub fn get(&self, key: &FrameKey) -> Option<&Seen> {
        self.seen.get(key)
    }

    /// Timestamps at or below the floor are refused (see the type's documentation).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Remembers a verified frame until `expires`.
    pub fn insert(&mut self, key: FrameKey, seen: Seen, now: u64, expires: u64) {
        self.purge(now);
        match self.seen.entry(key) {
            Entry::Occupied(mut e) => {
                *e.get_mut() = seen;
                return;
            }
            Entry::Vacant(e) => {
                e.insert(seen);
            }
        }
        self.order.push_back((key, expires));
        while self.seen.len() > self.capacity {
            let Some((old, _)) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.seen.remove(&old) {
                self.floor = self.floor.max(gone.ts);
            }
        }
    }

    /// Marks a remembered frame as accepted.
    pub fn accept(&mut self, key: &FrameKey) {
        if let Some(seen) = self.seen.get_mut(key) {
            seen.accepted = true;
        }
    }

    fn purge(&mut self, now: u64) {
        while let Some((key, expires)) = self.order.front() {
            if *expires > now {
                break;
            }
            self.seen.remove(key);
            self.order.pop_front();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RateConfig {
        RateConfig {
            rate_bytes: 1_000,
            burst: 2_000,
            max_strikes: 2,
            strike_window_ms: 1_000,
            block_ms: 5_000,
            disconnect_after_blocks: 2,
        }
    }

    #[test]
    fn bucket_refills_and_blocks() {
        let mut limiter = RateLimiter::new(8);
        let k = PublicKey([1; 32]);
        let c = cfg();
        assert_eq!(limiter.admit(&k, 2_000, 0, &c), Admit::Pass);
        assert_eq!(
            limiter.admit(&k, 1, 0, &c),
            Admit::Limited { disconnect: false }
        );
        // Half a second refills 500 bytes.
        assert_eq!(limiter.admit(&k, 500, 500, &c), Admit::Pass);
        // Second strike within the window: blocked.
        assert_eq!(
            limiter.admit(&k, 1, 500, &c),
            Admit::Limited { disconnect: false }
        );
        assert_eq!(limiter.blocked_until(&k, 500), Some(5_500));
        assert_eq!(
            limiter.admit(&k, 1, 5_000, &c),
            Admit::Limited { disconnect: false }
        );
        assert_eq!(limiter.admit(&k, 1, 5_500, &c), Admit::Pass);
        // A second block in succession asks for a disconnect.
        assert!(!limiter.strike(&k, 5_600, &c));
        assert!(limiter.strike(&k, 5_700, &c));
        assert_eq!(
            limiter.admit(&k, 1, 6_000, &c),
            Admit::Limited { disconnect: true }
        );
    }

    #[test]
    fn least_recently_used_neighbour_is_forgotten() {
        let mut limiter = RateLimiter::new(2);
        let c = cfg();
        let (a, b, d) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
        limiter.admit(&a, 2_000, 0, &c);
        limiter.admit(&b, 1, 0, &c);
        limiter.admit(&a, 0, 0, &c);
        limiter.admit(&d, 1, 0, &c);
        assert_eq!(limiter.len(), 2);
        // `a` (used after `b`) kept its empty bucket.
        assert_eq!(
            limiter.admit(&a, 1, 0, &c),
            Admit::Limited { disconnect: false }
        );
    }

    #[test]
    fn dedupe_expires_and_raises_the_floor_when_full() {
        let mut dedupe = Dedupe::new(2);
        let seen = |ts| Seen {
            print: Hash32::ZERO,
            ts,
            accepted: true,
        };
        let k = |n: u8| (PublicKey([n; 32]), [n; 16]);
        dedupe.insert(k(1), seen(10), 0, 100);
        dedupe.insert(k(2), seen(20), 0, 100);
        dedupe.insert(k(3), seen(15), 0, 100);
        assert!(dedupe.get(&k(1)).is_none());
        assert_eq!(dedupe.floor(), 10);
        assert_eq!(dedupe.len(), 2);
        dedupe.insert(k(4), seen(30), 100, 200);
        assert_eq!(dedupe.len(), 1, "entries expire");
        assert_eq!(dedupe.floor(), 10, "expiry does not raise the floor");
    }
}
