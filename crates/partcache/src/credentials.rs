//! Credentials kept out of what is printed: a backend URL may carry a password, and
//! errors, logs and `Debug` output quote URLs.

/// The URL with its credentials replaced by `***`: `redis://u:***@h:1/0`. A URL
/// without credentials comes back as it is.
///
/// When the URL is malformed, with an `@` after a `/` or `?` (a password holding an
/// unescaped `/` or `?`), everything between `://` and the last `@` is masked, user
/// name included: which part is the password cannot be told.
///
/// ```
/// assert_eq!(partcache::mask_url("redis://app:hunter2@h:6379/0"), "redis://app:***@h:6379/0");
/// assert_eq!(partcache::mask_url("redis://app:hun/ter2@h:6379"), "redis://***@h:6379");
/// assert_eq!(partcache::mask_url("memory://"), "memory://");
/// ```
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hosts = &rest[at + 1..];
    if at > host_end {
        return format!("{scheme}***@{hosts}");
    }
    let user = rest[..at].split_once(':').map_or("", |(user, _)| user);
    format!("{scheme}{user}:***@{hosts}")
}
