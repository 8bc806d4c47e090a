//! Scratch directories for servers and certificates, named after the test process
//! (`partcache-<kind>-<pid>-<random>` in the system temp dir).
//!
//! A server kept in a `static` (shared by the tests of one binary) is never dropped, so
//! its directory outlives the process; its server does not (`PR_SET_PDEATHSIG`). The
//! pid in the name lets the next harness tell such leftovers from the directories of
//! a run still going, and remove them: once per process, before its first directory.

use std::path::Path;
use std::sync::Once;

use tempfile::TempDir;

/// Everything the harness names starts with this.
const PREFIX: &str = "partcache-";

/// A new scratch directory for `kind` (`redis`, `valkey`, `pg`, `tls`).
pub(crate) fn scratch_dir(kind: &str) -> std::io::Result<TempDir> {
    static SWEEP: Once = Once::new();
    let temp = std::env::temp_dir();
    SWEEP.call_once(|| sweep(&temp));
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{kind}-{}-", std::process::id()))
        .tempdir_in(&temp)
}

/// Removes the scratch directories of processes that are gone.
fn sweep(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: a directory another sweeper removed first is fine.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The pid in a scratch directory's name, `partcache-<kind>-<pid>-<random>`.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let (_kind, pid, _random) = (parts.next()?, parts.next()?, parts.next()?);
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_read_from_the_name() {
        assert_eq!(owner("partcache-redis-4242-AbC123"), Some(4242));
        assert_eq!(owner("partcache-tls-17-x"), Some(17));
        // Names of older harnesses carry no pid, and other files are not ours.
        assert_eq!(owner("partcache-redis-0BL3LA"), None);
        assert_eq!(owner("other-redis-4242-x"), None);
    }

    #[test]
    fn a_dead_processs_directory_is_swept_and_a_live_ones_kept() {
        let temp = tempfile::tempdir().unwrap();
        // No process has pid 4294967295 (above the kernel's pid limit).
        let dead = temp.path().join("partcache-redis-4294967295-abc");
        let live = temp
            .path()
            .join(format!("partcache-redis-{}-abc", std::process::id()));
        std::fs::create_dir(&dead).unwrap();
        std::fs::create_dir(&live).unwrap();
        sweep(temp.path());
        assert!(!dead.exists());
        assert!(live.exists());
    }
}
