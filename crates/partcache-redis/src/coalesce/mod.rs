//! Coalescing of concurrent requests of one deployment: while one is on its way, those
//! that arrive meanwhile wait, and go together in one command as soon as it is back
//! (then the ones that arrived during that command, and so on). A request with nothing
//! in flight goes at once, alone, so a lone caller waits no longer than before; under
//! load, dozens of requests cost the server one command instead of dozens, and the
//! client one reply to parse (issue 3: the raw client reaches about a quarter of what a
//! pipelining client gets from the same servers).
//!
//! * [`reads`]: one-key plain reads on a standalone server, as `MGET`s.
//! * [`puts`]: the common put (`lua/put.lua`) per node, as one `put_batch` call.
//!
//! A request that waits is sent after every write whose reply came back before it was
//! asked, so a caller still reads its own writes. Requests that queued behind one that
//! timed out or found the server unreachable fail with it (each within one response
//! timeout of its start) rather than try again.

pub(crate) mod puts;
pub(crate) mod reads;

use partcache::{Error, Result};

/// The coalescing state of one deployment.
#[derive(Default)]
pub(crate) struct Coalescer {
    pub reads: reads::Reads,
    pub puts: puts::Puts,
}

/// The error of a request that found the server unreachable or silent: the requests
/// that queued behind it share it (see the module docs).
fn unreachable<T>(result: &Result<T>) -> Option<Error> {
    match result {
        Err(e @ (Error::Timeout(_) | Error::Unavailable(_))) => Some(e.clone()),
        _ => None,
    }
}
