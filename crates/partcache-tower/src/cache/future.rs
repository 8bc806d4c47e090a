//! The future a [`CacheService`](super::CacheService) returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The response future of [`CacheService`](super::CacheService): the inner service's
    /// own future when the request bypasses the cache (no allocation), else the boxed
    /// lookup-then-call.
    pub struct ResponseFuture<F, R, E> {
        #[pin]
        kind: Kind<F, R, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, R, E> {
        Bypass { #[pin] future: F },
        Cached { future: Pin<Box<dyn Future<Output = Result<R, E>> + Send>> },
    }
}

impl<F, R, E> ResponseFuture<F, R, E> {
    pub(crate) fn bypass(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Bypass { future },
        }
    }

    pub(crate) fn cached(future: Pin<Box<dyn Future<Output = Result<R, E>> + Send>>) -> Self {
        ResponseFuture {
            kind: Kind::Cached { future },
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R, E>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Bypass { future } => future.poll(cx),
            KindProj::Cached { future } => future.as_mut().poll(cx),
        }
    }
}
