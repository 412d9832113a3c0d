//! The last requests the gateway answered on `/api/v1`: what the page's
//! request table and the upstream latency figures read.
//!
//! One short lock per request and no allocation: a path is kept inline
//! ([`ShortPath`]), as sent and without the query, and the time as the
//! access record's `Instant`; both are turned into what the page shows
//! (a route template, a wall-clock time) only when a snapshot is built.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Records kept: the page shows the newest 100; the upstream latency
/// figures read them all.
pub const KEPT: usize = 1024;

/// Who sent a request, as the page may show it: never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// A local key, by id (shown with its name).
    Key(Arc<str>),
    /// No key (open mode): the peer's address.
    Peer(IpAddr),
    /// Neither is known (a request refused before admission, in tests).
    Unknown,
}

/// One answered request.
#[derive(Clone, Debug)]
pub struct Record {
    /// Increases by one per record: what a stream has already sent.
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// Who sent it.
    pub client: Client,
    /// Its method, as the metrics label it.
    pub method: &'static str,
    /// Its path, without the query.
    pub path: ShortPath,
    /// The status answered.
    pub status: u16,
    /// `X-Cache`: `hit`, `miss`, `stale`, `bypass` or empty.
    pub cache: &'static str,
    /// Time spent waiting in the queue, on a backoff or a shared fetch.
    pub waited: Duration,
    /// Time the upstream took, when it was asked.
    pub upstream: Option<Duration>,
}

/// Bytes of a path kept.
pub const PATH_BYTES: usize = 96;

/// A path kept without allocating: its first [`PATH_BYTES`] bytes, cut at
/// a character boundary.
#[derive(Clone, Copy)]
pub struct ShortPath {
    bytes: [u8; PATH_BYTES],
    len: u8,
    cut: bool,
}

impl ShortPath {
    /// Keeps `path`, or as much of it as fits.
    pub fn new(path: &str) -> Self {
        let mut len = path.len().min(PATH_BYTES);
        while !path.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; PATH_BYTES];
        bytes[..len].copy_from_slice(&path.as_bytes()[..len]);
        Self {
            bytes,
            len: len as u8,
            cut: len < path.len(),
        }
    }

    /// The path kept.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Whether the path was longer than what is kept.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl std::fmt::Debug for ShortPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}{}", self.as_str(), if self.cut { "…" } else { "" })
    }
}

/// The ring of the last [`KEPT`] records.
#[derive(Debug, Default)]
pub struct Recent {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    records: VecDeque<Record>,
}

impl Recent {
    /// Adds a record; its `seq` is assigned here.
    pub fn push(&self, mut record: Record) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        record.seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.records.len() == KEPT {
            ring.records.pop_front();
        }
        ring.records.push_back(record);
    }

    /// The records after `seq` (all when `None`), newest first, at most
    /// `limit`.
    pub fn since(&self, seq: Option<u64>, limit: usize) -> Vec<Record> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.records
            .iter()
            .rev()
            .take_while(|r| seq.is_none_or(|seq| r.seq > seq))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The upstream times and statuses of every record kept that the
    /// upstream answered.
    pub fn upstream_answers(&self) -> Vec<(Duration, u16)> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.records
            .iter()
            .filter_map(|r| r.upstream.map(|u| (u, r.status)))
            .collect()
    }

    /// The `seq` the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16, upstream_ms: Option<u64>) -> Record {
        Record {
            seq: 0,
            at: Instant::now(),
            client: Client::Unknown,
            method: "GET",
            path: ShortPath::new("/api/v1/agents"),
            status,
            cache: "",
            waited: Duration::ZERO,
            upstream: upstream_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn keeps_the_newest_and_hands_out_what_is_new_newest_first() {
        let recent = Recent::default();
        for i in 0..KEPT as u16 + 10 {
            recent.push(record(200 + i % 2, None));
        }
        assert_eq!(recent.next_seq(), KEPT as u64 + 10);
        let all = recent.since(None, usize::MAX);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].seq, KEPT as u64 + 9);
        assert_eq!(all.last().unwrap().seq, 10);
        let newer = recent.since(Some(KEPT as u64 + 6), 100);
        let seqs: Vec<u64> = newer.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [KEPT as u64 + 9, KEPT as u64 + 8, KEPT as u64 + 7]);
        assert_eq!(recent.since(None, 100).len(), 100);
    }

    #[test]
    fn paths_are_kept_inline_up_to_a_character_boundary() {
        let short = ShortPath::new("/api/v1/agents/a");
        assert_eq!(short.as_str(), "/api/v1/agents/a");
        assert!(!short.is_cut());
        let long = format!("/api/v1/agents/{}", "é".repeat(60));
        let kept = ShortPath::new(&long);
        assert!(kept.is_cut());
        assert!(kept.as_str().len() <= PATH_BYTES && long.starts_with(kept.as_str()));
        assert_eq!(kept.as_str().len(), 95, "cut before the two-byte character");
    }

    #[test]
    fn upstream_answers_are_those_the_upstream_gave() {
        let recent = Recent::default();
        recent.push(record(200, Some(12)));
        recent.push(record(200, None));
        recent.push(record(429, Some(3)));
        assert_eq!(
            recent.upstream_answers(),
            [
                (Duration::from_millis(12), 200),
                (Duration::from_millis(3), 429)
            ]
        );
    }
}
