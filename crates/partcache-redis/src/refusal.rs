//! What a server refuses for good: a reply that no retry changes is a configuration
//! error, which the connections (at handshake) and the router (on any reply) report
//! alike.

use partcache::Error;
use redis::Value;

/// A configuration error if `reply` is the server refusing what no retry changes:
/// the credentials (`NOAUTH`, `WRONGPASS`), the user's permissions (`NOPERM`), or the
/// functions partcache's scripts are (a server older than Redis 7.0 does not know
/// `FCALL` or `FUNCTION`).
pub(crate) fn refused(reply: &Value, addr: &str) -> Option<Error> {
    let Value::ServerError(error) = reply else {
        return None;
    };
    let details = error.details().unwrap_or("");
    if matches!(error.code(), "NOAUTH" | "WRONGPASS" | "NOPERM") {
        return Some(Error::Config(format!(
            "{addr} refused the command: {} {details}",
            error.code()
        )));
    }
    // "unknown command 'FCALL', with args beginning with: …"
    let unknown = details
        .strip_prefix("unknown command ")
        .and_then(|rest| rest.get(1..))
        .and_then(|rest| rest.split(['\'', '`']).next());
    if unknown.is_some_and(|command| {
        ["FCALL", "FCALL_RO", "FUNCTION"]
            .iter()
            .any(|name| command.eq_ignore_ascii_case(name))
    }) {
        return Some(Error::Config(format!(
            "{addr} has no function library support, which partcache needs \
             (Redis 7.0 or later, or Valkey): {} {details}",
            error.code()
        )));
    }
    None
}
