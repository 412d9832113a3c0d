//! The last requests the gateway answered on `/api/v1`: what the page's
//! request table and the upstream latency figures read.
//!
//! One short lock per request and one small allocation (the path); paths
//! are kept as sent, without the query, and turned into route templates
//! only when a snapshot is built.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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
    /// Unix milliseconds when it was answered.
    pub at_ms: u64,
    /// Who sent it.
    pub client: Client,
    /// Its method, as the metrics label it.
    pub method: &'static str,
    /// Its path, without the query.
    pub path: Box<str>,
    /// The status answered.
    pub status: u16,
    /// `X-Cache`: `hit`, `miss`, `stale`, `bypass` or empty.
    pub cache: &'static str,
    /// Time spent waiting in the queue, on a backoff or a shared fetch.
    pub waited: Duration,
    /// Time the upstream took, when it was asked.
    pub upstream: Option<Duration>,
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
            at_ms: 0,
            client: Client::Unknown,
            method: "GET",
            path: "/api/v1/agents".into(),
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
