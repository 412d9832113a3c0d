//! Streaming body guards: an idle deadline and a size limit, applied chunk by
//! chunk so no body is ever buffered whole.
//!
//! A guard that trips records why in a shared [`Verdict`], so the proxy can
//! turn the upstream client's generic "body failed" into the right status
//! (413 or 408) when the failure happened before the upstream answered.
//! [`DropAtEnd`] runs work (by dropping a guard) when a response body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Why a guarded body stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More bytes than the limit.
    #[error("body larger than the limit")]
    TooLarge,
    /// No bytes for longer than the idle deadline.
    #[error("body idle for too long")]
    Idle,
    /// The peer's stream failed (disconnect, reset).
    #[error("body stream failed")]
    Aborted,
}

/// The shared outcome of a guarded body: unset while it is fine.
#[derive(Clone, Debug)]
pub struct Verdict(Option<Arc<AtomicU8>>);

impl Default for Verdict {
    fn default() -> Self {
        Self(Some(Arc::default()))
    }
}

impl Verdict {
    /// A verdict nobody reads (an answer's body, whose failure its reader
    /// sees): nothing is allocated and nothing kept.
    pub fn unread() -> Self {
        Self(None)
    }

    fn set(&self, error: BodyError) {
        let code = match error {
            BodyError::TooLarge => 1,
            BodyError::Idle => 2,
            BodyError::Aborted => 3,
        };
        if let Some(verdict) = &self.0 {
            verdict.store(code, Ordering::Relaxed);
        }
    }

    /// The error that stopped the body, if one did.
    pub fn get(&self) -> Option<BodyError> {
        match self.0.as_ref()?.load(Ordering::Relaxed) {
            1 => Some(BodyError::TooLarge),
            2 => Some(BodyError::Idle),
            3 => Some(BodyError::Aborted),
            _ => None,
        }
    }
}

/// A byte stream with an idle deadline and an optional size limit.
///
/// The idle timer is armed only when the inner stream has to wait: a body
/// that is already buffered (most small JSON answers) never touches the
/// timer wheel.
pub struct Guarded<S> {
    inner: S,
    idle: Duration,
    last_progress: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    limit: u64,
    seen: u64,
    verdict: Verdict,
    done: bool,
}

impl<S> Guarded<S> {
    /// Guards `inner`: at most `limit` bytes, at most `idle` between chunks.
    pub fn new(inner: S, idle: Duration, limit: u64, verdict: Verdict) -> Self {
        Self {
            inner,
            idle,
            last_progress: Instant::now(),
            sleep: None,
            limit,
            seen: 0,
            verdict,
            done: false,
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.done = true;
        self.verdict.set(error);
        Poll::Ready(Some(Err(error)))
    }
}

impl<S, E> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen = this.seen.saturating_add(chunk.len() as u64);
                if this.seen > this.limit {
                    return this.fail(BodyError::TooLarge);
                }
                this.last_progress = Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) => this.fail(BodyError::Aborted),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.last_progress + this.idle;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if sleep.deadline() != deadline {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                if sleep.as_mut().poll(cx).is_ready() {
                    return this.fail(BodyError::Idle);
                }
                Poll::Pending
            }
        }
    }
}

/// A response body that drops `guard` when the body ends (its last frame
/// was read, or it failed) or is dropped (the client went away), whichever
/// comes first: for work that must follow a streamed response, such as
/// the invalidation after a `/stream` invocation.
pub struct DropAtEnd<B, T> {
    body: B,
    guard: Option<T>,
}

impl<B, T> DropAtEnd<B, T> {
    /// Wraps `body`; `guard` lives until it ends.
    pub fn new(body: B, guard: T) -> Self {
        Self {
            body,
            guard: Some(guard),
        }
    }
}

impl<B, T> hyper::body::Body for DropAtEnd<B, T>
where
    B: hyper::body::Body + Unpin,
    T: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunks(n: usize, size: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![0u8; size]))))
    }

    #[tokio::test]
    async fn passes_bodies_within_the_limit() {
        let verdict = Verdict::default();
        let g = Guarded::new(chunks(4, 10), Duration::from_secs(1), 40, verdict.clone());
        let got: Vec<_> = g.collect().await;
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(Result::is_ok));
        assert_eq!(verdict.get(), None);
    }

    #[tokio::test]
    async fn stops_at_the_limit() {
        let verdict = Verdict::default();
        let g = Guarded::new(chunks(5, 10), Duration::from_secs(1), 41, verdict.clone());
        let got: Vec<_> = g.collect().await;
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], Err(BodyError::TooLarge));
        assert_eq!(verdict.get(), Some(BodyError::TooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_an_idle_stream() {
        let verdict = Verdict::default();
        let stalled = chunks(1, 3).chain(futures_util::stream::pending());
        let g = Guarded::new(stalled, Duration::from_secs(5), u64::MAX, verdict.clone());
        let got: Vec<_> = g.collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Err(BodyError::Idle));
        assert_eq!(verdict.get(), Some(BodyError::Idle));
    }
}
