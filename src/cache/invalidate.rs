//! Invalidation by sequence number: a write records patterns, and an entry
//! (or a fetch in flight) is stale when a matching pattern was recorded
//! after it was started.
//!
//! Comparing sequence numbers instead of deleting keys closes the race that
//! plain deletion leaves open: a read that went upstream before a write and
//! comes back after it carries the older sequence number, so it is never
//! served, and a read that arrives after the write cannot join it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Seg {
    Lit(Box<str>),
    /// Any single segment (`agents/*/files`).
    Any,
}

/// A set of cached paths: one path (any query), or a path and everything
/// below it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    segs: Box<[Seg]>,
    below: bool,
}

impl Pattern {
    /// Exactly this path, with any query.
    pub fn exact(parts: &[&str]) -> Self {
        Self::new(parts, false)
    }

    /// This path and every path below it.
    pub fn below(parts: &[&str]) -> Self {
        Self::new(parts, true)
    }

    /// `agents/*/{rest}` and everything below it: a write that touches every
    /// agent's copy of a resource.
    pub fn any_agent(rest: &[&str]) -> Self {
        let mut segs = vec![Seg::Lit("agents".into()), Seg::Any];
        segs.extend(rest.iter().map(|s| Seg::Lit((*s).into())));
        Self {
            segs: segs.into(),
            below: true,
        }
    }

    /// Everything.
    pub fn all() -> Self {
        Self::new(&[], true)
    }

    fn new(parts: &[&str], below: bool) -> Self {
        Self {
            segs: parts.iter().map(|s| Seg::Lit((*s).into())).collect(),
            below,
        }
    }

    /// Whether `path` (decoded segments) is in the set.
    pub fn matches(&self, path: &[Box<str>]) -> bool {
        let fits = if self.below {
            path.len() >= self.segs.len()
        } else {
            path.len() == self.segs.len()
        };
        fits && self.segs.iter().zip(path).all(|(seg, part)| match seg {
            Seg::Any => true,
            Seg::Lit(lit) => lit == part,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self
            .segs
            .iter()
            .map(|s| match s {
                Seg::Lit(lit) => lit,
                Seg::Any => "*",
            })
            .collect();
        f.write_str(&parts.join("/"))?;
        if self.below {
            f.write_str(if parts.is_empty() { "**" } else { "/**" })?;
        }
        Ok(())
    }
}

/// Patterns recorded for one upstream credential, or for all (`None`).
type Scope = Option<Arc<str>>;

/// The recorded invalidations.
#[derive(Debug)]
pub struct Invalidations {
    /// The sequence number the next recording gets.
    next: AtomicU64,
    /// The newest recorded sequence number: the fast path for entries
    /// younger than every write.
    newest: AtomicU64,
    rules: RwLock<HashMap<(Scope, Pattern), (u64, Instant)>>,
    /// How long a rule can matter (the oldest entry or fetch it can hit),
    /// in milliseconds. It only grows: entries made under an older config
    /// keep the lifetime they were given.
    retention_ms: AtomicU64,
}

impl Invalidations {
    /// Keeps rules for `retention`: longer than any entry lives plus the
    /// longest fetch.
    pub fn new(retention: Duration) -> Self {
        Self {
            next: AtomicU64::new(1),
            newest: AtomicU64::new(0),
            rules: RwLock::new(HashMap::new()),
            retention_ms: AtomicU64::new(retention.as_millis() as u64),
        }
    }

    /// Keeps rules at least `retention` from now on (a config reload that
    /// lengthened a TTL or the stale window).
    pub fn retain_at_least(&self, retention: Duration) {
        self.retention_ms
            .fetch_max(retention.as_millis() as u64, Ordering::AcqRel);
    }

    /// The sequence number to stamp on a fetch that starts now.
    pub fn stamp(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Records `patterns` for `scope` (one credential, or all when `None`).
    /// Returns the sequence number of the recording: anything stamped before
    /// it and matching is stale from now on.
    pub fn record(&self, scope: Option<&Arc<str>>, patterns: &[Pattern]) -> u64 {
        let now = Instant::now();
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let seq = self.next.fetch_add(1, Ordering::AcqRel);
        for pattern in patterns {
            rules.insert((scope.cloned(), pattern.clone()), (seq, now));
        }
        if rules.len() > 512 {
            let retention = Duration::from_millis(self.retention_ms.load(Ordering::Acquire));
            rules.retain(|_, (_, at)| now.duration_since(*at) < retention);
        }
        self.newest.store(seq, Ordering::Release);
        seq
    }

    /// Whether something stamped `seq` for `principal` at `path` is still
    /// current (no matching pattern recorded since).
    pub fn current(&self, principal: &Arc<str>, path: &[Box<str>], seq: u64) -> bool {
        if self.newest.load(Ordering::Acquire) < seq {
            return true;
        }
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        !rules.iter().any(|((scope, pattern), (at, _))| {
            *at >= seq && scope.as_ref().is_none_or(|s| s == principal) && pattern.matches(path)
        })
    }

    /// How many patterns are kept.
    pub fn len(&self) -> usize {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no pattern is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<Box<str>> {
        if p.is_empty() {
            return vec![];
        }
        p.split('/').map(Box::from).collect()
    }

    #[test]
    fn patterns_match_exact_below_and_any_agent() {
        assert!(Pattern::exact(&["agents"]).matches(&path("agents")));
        assert!(!Pattern::exact(&["agents"]).matches(&path("agents/a")));
        assert!(Pattern::below(&["agents", "a"]).matches(&path("agents/a")));
        assert!(Pattern::below(&["agents", "a"]).matches(&path("agents/a/secrets")));
        assert!(!Pattern::below(&["agents", "a"]).matches(&path("agents/b")));
        let mounts = Pattern::any_agent(&["mounts"]);
        assert!(mounts.matches(&path("agents/x/mounts")));
        assert!(mounts.matches(&path("agents/y/mounts/m1")));
        assert!(!mounts.matches(&path("agents/y/files")));
        assert!(Pattern::all().matches(&path("usage/daily")));
    }

    #[test]
    fn an_entry_is_stale_only_after_a_matching_record() {
        let inv = Invalidations::new(Duration::from_secs(60));
        let me: Arc<str> = Arc::from("default");
        let other: Arc<str> = Arc::from("team-b");
        let before = inv.stamp();
        inv.record(Some(&me), &[Pattern::exact(&["agents"])]);
        let after = inv.stamp();
        assert!(!inv.current(&me, &path("agents"), before));
        assert!(inv.current(&me, &path("agents"), after));
        assert!(inv.current(&me, &path("agents/a"), before));
        assert!(
            inv.current(&other, &path("agents"), before),
            "other credential"
        );
        inv.record(None, &[Pattern::all()]);
        assert!(!inv.current(&other, &path("files"), after));
    }
}
