//! [`CacheBody`], the body of every response the cache sends, and bounded buffering.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Errors of a [`CacheBody`]: the origin body's own, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// The body of a response from the cache layer: a stored body (a shared `Bytes`,
    /// never copied), the origin's body passed through untouched, or an origin body
    /// whose first bytes were read while deciding whether it fits in the cache.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Origin { #[pin] body: B },
        Prefixed { prefix: VecDeque<Bytes>, rest: Option<Pin<Box<B>>>, error: Option<BoxError> },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn empty() -> Self {
        CacheBody {
            kind: Kind::Full { data: None },
        }
    }

    pub(crate) fn origin(body: B) -> Self {
        CacheBody {
            kind: Kind::Origin { body },
        }
    }

    fn prefixed(
        prefix: VecDeque<Bytes>,
        rest: Option<Pin<Box<B>>>,
        error: Option<BoxError>,
    ) -> Self {
        CacheBody {
            kind: Kind::Prefixed {
                prefix,
                rest,
                error,
            },
        }
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "stored",
            Kind::Origin { .. } => "origin",
            Kind::Prefixed { .. } => "origin (partly read)",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Origin { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Prefixed {
                prefix,
                rest,
                error,
            } => {
                if let Some(chunk) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Origin { body } => body.is_end_stream(),
            Kind::Prefixed {
                prefix,
                rest,
                error,
            } => {
                prefix.is_empty()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Origin { body } => body.size_hint(),
            Kind::Prefixed {
                prefix,
                rest,
                error,
            } => {
                let buffered: u64 = prefix.iter().map(|c| c.len() as u64).sum();
                if error.is_some() {
                    // A body that ends in an error has no known length: an exact hint
                    // would let the server announce `content-length` of the bytes read
                    // and end the message cleanly after them, so the client would take
                    // a truncated body for a whole one. Unknown, it is sent chunked and
                    // the error aborts it before the final chunk.
                    let mut hint = SizeHint::new();
                    hint.set_lower(buffered);
                    return hint;
                }
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(buffered + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(buffered + upper);
                }
                hint
            }
        }
    }
}

/// What reading a body up to a limit gave.
pub(crate) enum Buffered<B> {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// Too large: a body that replays what was read, then the rest.
    Streaming(CacheBody<B>),
    /// The body failed part-way: one that replays what was read, then the error.
    Failed(CacheBody<B>),
}

/// Reads `body` whole if it fits in `limit` bytes. Holds at most the limit (plus the
/// frame that crossed it): past that, the bytes read so far and the unread rest are
/// handed back as one streaming body, so a large response is never buffered whole.
/// Trailers of a cached body are dropped (the stored form has none).
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Buffered<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    // Most bodies come in one frame: it is kept alone, and a queue is made (allocated)
    // only when a second one comes.
    let mut first: Option<Bytes> = None;
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total += data.len();
                if first.is_none() && chunks.is_empty() {
                    first = Some(data);
                } else {
                    chunks.extend(first.take());
                    chunks.push_back(data);
                }
                if total > limit {
                    chunks.extend(first.take());
                    return Buffered::Streaming(CacheBody::prefixed(chunks, Some(body), None));
                }
            }
            Some(Err(error)) => {
                chunks.extend(first.take());
                return Buffered::Failed(CacheBody::prefixed(chunks, None, Some(error.into())));
            }
        }
    }
    if let Some(first) = first {
        return Buffered::Complete(first);
    }
    Buffered::Complete(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};

    use super::{BoxError, Buffered, read_limited};

    type Frames =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn body_of(frames: Vec<Result<&'static str, &'static str>>) -> Frames {
        StreamBody::new(futures::stream::iter(
            frames
                .into_iter()
                .map(|f| {
                    f.map(|data| Frame::data(Bytes::from_static(data.as_bytes())))
                        .map_err(BoxError::from)
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// What a buffered or replayed body holds, and whether it ended in an error.
    async fn outcome(buffered: Buffered<Frames>) -> (&'static str, Vec<u8>, bool) {
        let (kind, body) = match buffered {
            Buffered::Complete(bytes) => return ("complete", bytes.to_vec(), false),
            Buffered::Streaming(body) => ("streaming", body),
            Buffered::Failed(body) => ("failed", body),
        };
        let mut read = Vec::new();
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => read.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                Err(_) => return (kind, read, true),
            }
        }
        (kind, read, false)
    }

    /// One frame, several, one past the limit, several past it, and a failure after
    /// one or two frames: the bytes come back whole and in order every time.
    #[tokio::test]
    async fn bodies_are_read_whole_or_replayed_in_order() {
        type Case = (
            Vec<Result<&'static str, &'static str>>,
            (&'static str, &'static str, bool),
        );
        let cases: Vec<Case> = vec![
            (vec![], ("complete", "", false)),
            (vec![Ok("abc")], ("complete", "abc", false)),
            (
                vec![Ok("ab"), Ok(""), Ok("cd")],
                ("complete", "abcd", false),
            ),
            (vec![Ok("0123456789")], ("streaming", "0123456789", false)),
            (
                vec![Ok("0123"), Ok("4567"), Ok("89")],
                ("streaming", "0123456789", false),
            ),
            (vec![Ok("ab"), Err("boom")], ("failed", "ab", true)),
            (
                vec![Ok("ab"), Ok("cd"), Err("boom")],
                ("failed", "abcd", true),
            ),
        ];
        for (frames, (kind, bytes, failed)) in cases {
            let got = outcome(read_limited(body_of(frames.clone()), 8).await).await;
            assert_eq!(got, (kind, bytes.as_bytes().to_vec(), failed), "{frames:?}");
        }
    }
}
