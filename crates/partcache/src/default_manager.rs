//! The process-wide default [`CacheManager`], used by `#[cacheable]`, `#[cache_put]`
//! and `#[cache_evict]` when an attribute names no `manager = ...`.
//!
//! Install it once at start-up, before the first annotated call:
//!
//! ```
//! let manager = partcache::CacheManager::from_env()?;
//! partcache::set_default_manager(manager)?;
//! assert!(partcache::default_manager().is_some());
//! # Ok::<(), partcache::Error>(())
//! ```

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::manager::CacheManager;

static DEFAULT_MANAGER: OnceLock<CacheManager> = OnceLock::new();

/// Installs `manager` as the process-wide default. It can be set once: a second call
/// returns [`Error::Config`] and leaves the first manager in place (annotated functions
/// keep handles to its caches, so swapping it would split the process in two).
pub fn set_default_manager(manager: CacheManager) -> Result<()> {
    let url = crate::mask_url(manager.url());
    DEFAULT_MANAGER.set(manager).map_err(|_| {
        let current = DEFAULT_MANAGER
            .get()
            .map_or_else(|| "?".to_string(), |m| crate::mask_url(m.url()));
        Error::Config(format!(
            "a default cache manager is already set (`{current}`); cannot replace it with `{url}`: set it once, at start-up"
        ))
    })
}

/// The process-wide default manager, if [`set_default_manager`] was called. Cheap: a
/// clone of a shared handle.
pub fn default_manager() -> Option<CacheManager> {
    DEFAULT_MANAGER.get().cloned()
}

/// The default manager by reference, for the generated code's hot path (no clone).
#[inline]
pub(crate) fn default_manager_ref() -> Option<&'static CacheManager> {
    DEFAULT_MANAGER.get()
}
