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
use hyper::body::{Frame, SizeHint};
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

/// A body with an idle deadline and an optional size limit.
///
/// It is an `http_body::Body` itself, so an answer's body goes to the
/// client as hyper gave it, frame by frame (trailers too), behind one box:
/// no stream adapters on the way (`into_data_stream`, `Body::from_stream`),
/// and the inner body's size hint and end are seen through it. Where the
/// bytes are wanted as a stream, `BodyExt::into_data_stream` makes one.
///
/// The idle timer is armed only when the inner body has to wait: a body
/// that is already buffered (most small JSON answers) never touches the
/// timer wheel.
pub struct Guarded<B> {
    inner: B,
    idle: Duration,
    last_progress: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    limit: u64,
    seen: u64,
    verdict: Verdict,
    done: bool,
}

impl<B> Guarded<B> {
    /// Guards `inner`: at most `limit` bytes, at most `idle` between frames.
    pub fn new(inner: B, idle: Duration, limit: u64, verdict: Verdict) -> Self {
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

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.done = true;
        self.verdict.set(error);
        Poll::Ready(Some(Err(error)))
    }
}

impl<B> hyper::body::Body for Guarded<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(chunk.len() as u64);
                    if this.seen > this.limit {
                        return this.fail(BodyError::TooLarge);
                    }
                }
                this.last_progress = Instant::now();
                Poll::Ready(Some(Ok(frame)))
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

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
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
    use futures_util::{Stream, StreamExt};
    use http_body_util::{BodyExt, StreamBody};

    type Chunks = Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin + Send>;

    fn chunks(n: usize, size: usize) -> StreamBody<Chunks> {
        let frames = (0..n).map(move |_| Ok(Frame::data(Bytes::from(vec![0u8; size]))));
        StreamBody::new(Box::new(futures_util::stream::iter(frames)))
    }

    async fn read(guarded: Guarded<StreamBody<Chunks>>) -> Vec<Result<Bytes, BodyError>> {
        guarded.into_data_stream().collect().await
    }

    #[tokio::test]
    async fn passes_bodies_within_the_limit() {
        let verdict = Verdict::default();
        let g = Guarded::new(chunks(4, 10), Duration::from_secs(1), 40, verdict.clone());
        let got = read(g).await;
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(Result::is_ok));
        assert_eq!(verdict.get(), None);
    }

    #[tokio::test]
    async fn stops_at_the_limit() {
        let verdict = Verdict::default();
        let g = Guarded::new(chunks(5, 10), Duration::from_secs(1), 41, verdict.clone());
        let got = read(g).await;
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], Err(BodyError::TooLarge));
        assert_eq!(verdict.get(), Some(BodyError::TooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_an_idle_stream() {
        let verdict = Verdict::default();
        let one = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"abc")))]);
        let stalled: Chunks = Box::new(one.chain(futures_util::stream::pending()));
        let g = Guarded::new(
            StreamBody::new(stalled),
            Duration::from_secs(5),
            u64::MAX,
            verdict.clone(),
        );
        let got = read(g).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Err(BodyError::Idle));
        assert_eq!(verdict.get(), Some(BodyError::Idle));
    }

    #[tokio::test]
    async fn size_and_end_pass_through() {
        let body = http_body_util::Full::new(Bytes::from_static(b"12345"));
        let g = Guarded::new(body, Duration::from_secs(1), 10, Verdict::unread());
        assert_eq!(hyper::body::Body::size_hint(&g).exact(), Some(5));
        let collected = g.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"12345");
        let empty = Guarded::new(
            http_body_util::Empty::<Bytes>::new(),
            Duration::from_secs(1),
            0,
            Verdict::unread(),
        );
        assert!(hyper::body::Body::is_end_stream(&empty));
    }
}
