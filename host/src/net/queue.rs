//! The bounded outbound queue of one peer.
//!
//! At most `max_in_flight` frames are on the wire to a peer at once; what comes on top waits
//! here, bounded both in count and in bytes. When the queue is full a new **push** evicts the
//! oldest queued pushes (announcements are superseded by newer ones, and a peer that missed some
//! catches up through its periodic sync requests), and a new **request** is refused so that the
//! caller gets a clear error instead of an unbounded wait.

use std::collections::VecDeque;

use libp2p::bytes::Bytes;

/// Bounds of one peer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Frames on the wire at once.
    pub max_in_flight: usize,
    /// Frames waiting.
    pub max_queued: usize,
    /// Bytes waiting.
    pub max_queued_bytes: usize,
}

/// A frame waiting for its turn, with what to tell its sender (`R`) for a request.
#[derive(Debug)]
pub(crate) enum Outbound<R> {
    /// An announcement.
    Push(Bytes),
    /// A request and the sender waiting for its answer.
    Request(Bytes, R),
}

impl<R> Outbound<R> {
    fn len(&self) -> usize {
        match self {
            Outbound::Push(frame) | Outbound::Request(frame, _) => frame.len(),
        }
    }
}

/// Why a request was not queued.
#[derive(Debug)]
pub(crate) struct QueueFull<R> {
    /// The request's reply handle, handed back.
    pub reply: R,
    /// Frames waiting.
    pub queued: usize,
    /// Bytes waiting.
    pub bytes: usize,
}

/// The outbound queue of one peer.
#[derive(Debug)]
pub(crate) struct PeerQueue<R> {
    limits: QueueLimits,
    in_flight: usize,
    queued: VecDeque<Outbound<R>>,
    queued_bytes: usize,
}

impl<R> PeerQueue<R> {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> Self {
        PeerQueue {
            limits,
            in_flight: 0,
            queued: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    fn fits(&self, len: usize) -> bool {
        self.queued.len() < self.limits.max_queued
            && self.queued_bytes.saturating_add(len) <= self.limits.max_queued_bytes
    }

    /// Queues a push, evicting the oldest queued pushes if the queue is full. Returns how many
    /// pushes were dropped (possibly this one, if requests fill the queue).
    pub fn push(&mut self, frame: Bytes) -> u64 {
        let mut dropped = 0;
        while !self.fits(frame.len()) {
            let Some(oldest) = self
                .queued
                .iter()
                .position(|item| matches!(item, Outbound::Push(_)))
            else {
                // Only requests wait: the new push is the one dropped.
                return dropped + 1;
            };
            if let Some(item) = self.queued.remove(oldest) {
                self.queued_bytes -= item.len();
            }
            dropped += 1;
        }
        self.queued_bytes += frame.len();
        self.queued.push_back(Outbound::Push(frame));
        dropped
    }

    /// Queues a request, or hands its reply back if the queue is full.
    pub fn request(&mut self, frame: Bytes, reply: R) -> Result<(), QueueFull<R>> {
        if !self.fits(frame.len()) {
            return Err(QueueFull {
                reply,
                queued: self.queued.len(),
                bytes: self.queued_bytes,
            });
        }
        self.queued_bytes += frame.len();
        self.queued.push_back(Outbound::Request(frame, reply));
        Ok(())
    }

    /// The next frame to put on the wire, if the in-flight window has room (counted as in
    /// flight from now on).
    pub fn next_ready(&mut self) -> Option<Outbound<R>> {
        if self.in_flight >= self.limits.max_in_flight {
            return None;
        }
        let item = self.queued.pop_front()?;
        self.queued_bytes -= item.len();
        self.in_flight += 1;
        Some(item)
    }

    /// A frame in flight got its answer (or failed).
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Empties the queue (the peer left), handing back the reply handles of waiting requests.
    pub fn drain_requests(&mut self) -> Vec<R> {
        self.queued_bytes = 0;
        self.queued
            .drain(..)
            .filter_map(|item| match item {
                Outbound::Request(_, reply) => Some(reply),
                Outbound::Push(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueueLimits {
        QueueLimits {
            max_in_flight: 2,
            max_queued: 3,
            max_queued_bytes: 100,
        }
    }

    fn frame(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    fn tag(item: &Outbound<u32>) -> u8 {
        match item {
            Outbound::Push(f) | Outbound::Request(f, _) => f[0],
        }
    }

    #[test]
    fn window_then_queue_then_drop_oldest_push() {
        let mut q: PeerQueue<u32> = PeerQueue::new(limits());
        for t in 0..5 {
            assert_eq!(q.push(frame(t, 1)), 0);
            // The window takes two, the rest wait.
            while let Some(item) = q.next_ready() {
                assert!(tag(&item) < 2);
            }
        }
        // 2 in flight, 3 queued (2, 3, 4): a sixth push evicts push 2.
        assert_eq!(q.push(frame(5, 1)), 1);
        assert!(q.next_ready().is_none());
        q.finished();
        assert_eq!(tag(&q.next_ready().unwrap()), 3);
        q.finished();
        assert_eq!(tag(&q.next_ready().unwrap()), 4);
        q.finished();
        assert_eq!(tag(&q.next_ready().unwrap()), 5);
        assert!(q.next_ready().is_none());
    }

    #[test]
    fn requests_are_refused_when_full_and_never_evicted() {
        let mut q: PeerQueue<u32> = PeerQueue::new(limits());
        q.push(frame(0, 1));
        q.push(frame(1, 1));
        assert!(q.next_ready().is_some() && q.next_ready().is_some()); // window full
        q.request(frame(10, 1), 10).unwrap();
        q.request(frame(11, 1), 11).unwrap();
        q.request(frame(12, 1), 12).unwrap();
        let full = q.request(frame(13, 1), 13).unwrap_err();
        assert_eq!((full.reply, full.queued, full.bytes), (13, 3, 3));
        // A push cannot evict requests: it is dropped itself.
        assert_eq!(q.push(frame(2, 1)), 1);
        assert_eq!(q.drain_requests(), vec![10, 11, 12]);
        assert!(q.next_ready().is_none());
    }

    #[test]
    fn byte_bound() {
        let mut q: PeerQueue<u32> = PeerQueue::new(QueueLimits {
            max_in_flight: 0,
            max_queued: 100,
            max_queued_bytes: 100,
        });
        assert_eq!(q.push(frame(0, 60)), 0);
        assert_eq!(q.push(frame(1, 30)), 0);
        // 60 + 30 + 50 > 100: the oldest (60) goes, 30 + 50 fits.
        assert_eq!(q.push(frame(2, 50)), 1);
        assert!(q.request(frame(3, 30), 3).is_err());
        // A push larger than the whole bound is dropped after evicting everything.
        assert_eq!(q.push(frame(4, 101)), 3);
    }
}
