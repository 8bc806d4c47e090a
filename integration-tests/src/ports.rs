//! Picking free TCP ports on `127.0.0.1`.
//!
//! A port is "free" when `127.0.0.1:port` can be bound right now. Ports are preferably
//! taken **below the kernel's ephemeral range** (`/proc/sys/net/ipv4/ip_local_port_range`,
//! usually 32768-60999), starting at a random offset: outgoing connections (clients,
//! `redis-cli`, the servers' own cluster-bus and replication links) take their local ports
//! from the ephemeral range, so they can never grab a server's port between the check and
//! the server's own `bind` (this was observed with cluster bus ports `p + 10000`), nor between
//! a kill and a restart on the same port. If that range is unusable, the kernel picks by
//! binding `127.0.0.1:0`.
//!
//! Every port handed out is remembered in a process-wide set and never handed out again by
//! this process, so tests running in parallel threads cannot collide. Collisions with other
//! processes (another test binary picking the same port at the same moment) are handled by
//! the server start-up code, which moves a server that reports "Address already in use" to
//! a fresh port.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// Offset of the Redis Cluster bus port from the client port.
pub const CLUSTER_BUS_OFFSET: u16 = 10000;

/// Lowest port handed out from the non-ephemeral range (keeps clear of well-known ports
/// such as 6379).
const LOWEST: u16 = 10000;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

const KERNEL_ATTEMPTS: usize = 2000;

fn can_bind(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn kernel_port() -> io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Client ports `p` such that `p` (and for clusters `p + 10000`) lie below the ephemeral
/// range and above [`LOWEST`].
fn preferred_range(cluster: bool) -> Option<RangeInclusive<u16>> {
    let (low, _) = ephemeral_range();
    let span = if cluster { CLUSTER_BUS_OFFSET } else { 0 };
    let top = low.checked_sub(1)?.checked_sub(span)?;
    (top >= LOWEST + 100).then_some(LOWEST..=top)
}

fn random_u64() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

/// Takes `port` (and `port + 10000` for clusters) if both are unreserved and bindable.
fn try_take(set: &mut BTreeSet<u16>, port: u16, cluster: bool) -> bool {
    if set.contains(&port) || !can_bind(port) {
        return false;
    }
    if cluster {
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            return false;
        };
        if set.contains(&bus) || !can_bind(bus) {
            return false;
        }
        set.insert(bus);
    }
    set.insert(port);
    true
}

fn pick(cluster: bool) -> io::Result<u16> {
    let mut set = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(range) = preferred_range(cluster) {
        let (lo, hi) = (u64::from(*range.start()), u64::from(*range.end()));
        let len = hi - lo + 1;
        let start = random_u64() % len;
        for k in 0..len {
            let port = (lo + (start + k) % len) as u16;
            if try_take(&mut set, port, cluster) {
                return Ok(port);
            }
        }
    }
    for _ in 0..KERNEL_ATTEMPTS {
        let port = kernel_port()?;
        if cluster && port >= u16::MAX - CLUSTER_BUS_OFFSET {
            continue;
        }
        if try_take(&mut set, port, cluster) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        if cluster {
            "no free cluster port pair (p, p+10000) found"
        } else {
            "no free port found"
        },
    ))
}

/// A port that is free on `127.0.0.1` right now and was not handed out before by this
/// process (it is reserved for the caller).
pub fn free_port() -> io::Result<u16> {
    pick(false)
}

/// A port `p < 55535` such that both `p` and the cluster bus port `p + 10000` are free right
/// now and neither was handed out before by this process. Both are reserved.
pub fn free_cluster_port() -> io::Result<u16> {
    pick(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_within_the_process_and_avoid_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let checked = preferred_range(true).is_some();
        let outside = |p: u16| !checked || p < low || p > high;
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let p = free_port().unwrap();
            assert!(seen.insert(p));
            assert!(outside(p), "{p} in the ephemeral range {low}-{high}");
        }
        for _ in 0..20 {
            let p = free_cluster_port().unwrap();
            assert!(p < 55535);
            assert!(seen.insert(p));
            assert!(seen.insert(p + CLUSTER_BUS_OFFSET));
            assert!(outside(p) && outside(p + CLUSTER_BUS_OFFSET));
        }
    }
}
