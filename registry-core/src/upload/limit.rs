//! The blob size limit, enforced while an upload streams: an oversized upload is cut off
//! instead of filling the disk. (What the request head already tells, a declared length
//! over the limit, is refused earlier by the registry's `Policy`.)

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use oci_spec_types::ErrorCode;

use crate::error::RegistryError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn blob_too_large(limit: u64) -> RegistryError {
    RegistryError::oci(
        ErrorCode::SizeInvalid,
        format!("blob is larger than the limit of {limit} bytes"),
    )
}

/// Set when a [`SizeLimited`] stream stopped because the upload grew past the limit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tripped(Arc<AtomicBool>);

impl Tripped {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The limit exceeded while streaming, as the error the store sees.
#[derive(Debug, thiserror::Error)]
#[error("blob exceeds the size limit")]
struct TooLarge;

/// A body stream that fails once the upload (bytes already stored plus bytes passed)
/// would exceed the limit, so an oversized upload is cut off instead of filling the disk.
/// The flag, not the error, tells the handler what happened: a backend may wrap or
/// replace the stream's error.
pub(crate) struct SizeLimited<S> {
    inner: S,
    remaining: Option<u64>,
    tripped: Tripped,
}

impl<S> SizeLimited<S> {
    /// `stored`: bytes the session already holds; `limit`: `None` for no limit.
    pub(crate) fn new(inner: S, stored: u64, limit: Option<u64>) -> (Self, Tripped) {
        let tripped = Tripped::default();
        let s = SizeLimited {
            inner,
            remaining: limit.map(|l| l.saturating_sub(stored)),
            tripped: tripped.clone(),
        };
        (s, tripped)
    }
}

impl<S, E> Stream for SizeLimited<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let len = chunk.len() as u64;
                match self.remaining {
                    Some(left) if len > left => {
                        self.tripped.0.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(TooLarge))))
                    }
                    Some(left) => {
                        self.remaining = Some(left - len);
                        Poll::Ready(Some(Ok(chunk)))
                    }
                    None => Poll::Ready(Some(Ok(chunk))),
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn size_limited_trips_past_the_limit() {
        let chunks = || {
            futures::stream::iter(vec![
                Ok::<_, std::io::Error>(Bytes::from_static(b"abcd")),
                Ok(Bytes::from_static(b"efgh")),
            ])
        };
        let (s, tripped) = SizeLimited::new(chunks(), 0, Some(8));
        let out: Vec<_> = s.collect().await;
        assert!(out.iter().all(Result::is_ok) && !tripped.get());
        let (s, tripped) = SizeLimited::new(chunks(), 1, Some(8));
        let out: Vec<_> = s.collect().await;
        assert!(out[1].is_err() && tripped.get());
    }
}
