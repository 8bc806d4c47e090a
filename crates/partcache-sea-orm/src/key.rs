//! Canonical, injective text encodings: cache keys for query results and entity rows,
//! and the names of version entries.
//!
//! Every variable-length field is written as `<byte length>:<bytes>|`, so no choice of
//! namespace, table name, SQL text or bound value can make two different inputs encode
//! to the same key (a plain separator could appear inside a value).

use std::fmt::Write as _;

use sea_orm::DbBackend;
use sea_orm::sea_query::Value;

/// Bumped whenever the key layout changes, so an old process never reads a new layout.
const KEY_FORMAT: &str = "pso1";

/// Builds one key, field by field.
pub(crate) struct KeyBuf(String);

impl KeyBuf {
    /// A key of `kind` (`q` query result, `e` entity row, `v` version entry) under `ns`.
    pub(crate) fn new(kind: &str, ns: &str) -> Self {
        let mut key = KeyBuf(String::with_capacity(256));
        key.0.push_str(KEY_FORMAT);
        key.0.push('|');
        key.0.push_str(kind);
        key.0.push('|');
        key.field(ns);
        key
    }

    /// Appends a length-prefixed text field.
    pub(crate) fn field(&mut self, text: &str) -> &mut Self {
        let _ = write!(self.0, "{}:", text.len());
        self.0.push_str(text);
        self.0.push('|');
        self
    }

    /// Appends the backend (the same SQL text may mean different things on two
    /// backends, e.g. identifier case folding).
    pub(crate) fn backend(&mut self, backend: DbBackend) -> &mut Self {
        match backend {
            DbBackend::MySql => self.field("mysql"),
            DbBackend::Postgres => self.field("postgres"),
            DbBackend::Sqlite => self.field("sqlite"),
            other => self.field(&format!("{other:?}")),
        }
    }

    /// Appends a version token.
    pub(crate) fn token(&mut self, token: u64) -> &mut Self {
        let _ = write!(self.0, "{token:016x}|");
        self
    }

    /// Appends a bound value, keeping its exact SQL type (an `Int(1)` and a
    /// `BigInt(1)` bind differently on some backends, so they key differently).
    pub(crate) fn value(&mut self, value: &Value) -> &mut Self {
        encode_value(&mut self.0, value, false);
        self
    }

    /// Appends a bound value in its *row identity* form: every integer type as one
    /// integer, `Char` as a one-character string. A primary key written as `Int(42)` by
    /// one code path and `BigInt(42)` by another must name the same row.
    pub(crate) fn row_value(&mut self, value: &Value) -> &mut Self {
        encode_value(&mut self.0, value, true);
        self
    }

    /// The finished key.
    pub(crate) fn finish(self) -> String {
        self.0
    }

    /// The key so far, for builders used through `&mut`.
    pub(crate) fn clone_finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

fn int(out: &mut String, tag: &str, normalize: bool, v: Option<i128>) {
    let tag = if normalize { "int" } else { tag };
    match v {
        Some(v) => {
            let _ = write!(out, "{tag}={v}|");
        }
        None => {
            let _ = write!(out, "{tag}=null|");
        }
    }
}

fn text(out: &mut String, tag: &str, v: Option<&str>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{tag}={}:{v}|", v.len());
        }
        None => {
            let _ = write!(out, "{tag}=null|");
        }
    }
}

/// One bound value. The variants every sea-query build has are encoded explicitly
/// (floats by their bit pattern, so `0.0` and `-0.0` differ); feature-gated variants
/// (JSON, dates, decimals, UUIDs, arrays...) by their derived `Debug` text, which
/// names the variant and prints the payload unambiguously (strings escaped, maps in
/// sorted order). That text may change with a sea-query release; a changed key is a
/// miss, never a wrong hit.
fn encode_value(out: &mut String, value: &Value, normalize: bool) {
    match value {
        Value::Bool(v) => {
            let _ = write!(out, "bool={v:?}|");
        }
        Value::TinyInt(v) => int(out, "i8", normalize, v.map(i128::from)),
        Value::SmallInt(v) => int(out, "i16", normalize, v.map(i128::from)),
        Value::Int(v) => int(out, "i32", normalize, v.map(i128::from)),
        Value::BigInt(v) => int(out, "i64", normalize, v.map(i128::from)),
        Value::TinyUnsigned(v) => int(out, "u8", normalize, v.map(i128::from)),
        Value::SmallUnsigned(v) => int(out, "u16", normalize, v.map(i128::from)),
        Value::Unsigned(v) => int(out, "u32", normalize, v.map(i128::from)),
        Value::BigUnsigned(v) => int(out, "u64", normalize, v.map(i128::from)),
        Value::Float(v) => {
            let _ = write!(out, "f32={:?}|", v.map(f32::to_bits));
        }
        Value::Double(v) => {
            let _ = write!(out, "f64={:?}|", v.map(f64::to_bits));
        }
        Value::String(v) => text(out, "str", v.as_deref()),
        Value::Char(v) => {
            let mut buf = [0u8; 4];
            let s = v.map(|c| &*c.encode_utf8(&mut buf));
            text(out, if normalize { "str" } else { "char" }, s);
        }
        Value::Bytes(v) => match v {
            Some(bytes) => {
                let _ = write!(out, "bytes={}:", bytes.len());
                for b in bytes {
                    let _ = write!(out, "{b:02x}");
                }
                out.push('|');
            }
            None => out.push_str("bytes=null|"),
        },
        #[allow(unreachable_patterns)]
        other => {
            let debug = format!("{other:?}");
            text(out, "dbg", Some(&debug));
        }
    }
}

/// The type of a bound value as a row identity sees it (every integer width is
/// `int`, `Char` is `str`; types without an explicit encoding by their variant name).
/// A write that binds a key column with another type than the entity cache keys it by
/// may still reach the row (SQLite's type affinity turns `'1'` and `1.0` into `1`;
/// PostgreSQL compares `integer = double precision`), so it cannot name the row.
pub(crate) fn value_kind(value: &Value) -> String {
    let kind = match value {
        Value::Bool(_) => "bool",
        Value::TinyInt(_)
        | Value::SmallInt(_)
        | Value::Int(_)
        | Value::BigInt(_)
        | Value::TinyUnsigned(_)
        | Value::SmallUnsigned(_)
        | Value::Unsigned(_)
        | Value::BigUnsigned(_) => "int",
        Value::Float(_) => "f32",
        Value::Double(_) => "f64",
        Value::String(_) | Value::Char(_) => "str",
        Value::Bytes(_) => "bytes",
        #[allow(unreachable_patterns)]
        other => {
            let debug = format!("{other:?}");
            return debug.split('(').next().unwrap_or_default().to_string();
        }
    };
    kind.to_string()
}

/// The canonical text of a row identity: `(column, value)` pairs sorted by column, in
/// the row-identity value form. The entity cache and the write path both build it, from
/// a primary key and from an `UPDATE`/`DELETE`'s `WHERE` clause respectively.
pub(crate) fn row_id(pairs: &mut [(String, &Value)]) -> String {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut k = KeyBuf(String::with_capacity(32));
    for (column, value) in pairs.iter() {
        k.field(column).row_value(value);
    }
    k.finish()
}

/// How table names are compared everywhere: the last component of a qualified name,
/// lower-cased. Two tables that differ only in schema or case share a version, which
/// can only cause extra misses, never a stale hit.
pub(crate) fn normalize_table(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(values: &[Value]) -> String {
        let mut k = KeyBuf::new("q", "app");
        for v in values {
            k.value(v);
        }
        k.finish()
    }

    #[test]
    fn fields_are_length_prefixed_so_boundaries_cannot_shift() {
        let mut a = KeyBuf::new("q", "ab");
        a.field("c");
        let mut b = KeyBuf::new("q", "a");
        b.field("bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn strings_with_separators_do_not_collide() {
        let a = key(&[Value::String(Some("x|str=1:y".into()))]);
        let b = key(&[
            Value::String(Some("x".into())),
            Value::String(Some("y".into())),
        ]);
        assert_ne!(a, b);
    }

    #[test]
    fn null_and_value_and_types_differ() {
        assert_ne!(key(&[Value::Int(None)]), key(&[Value::Int(Some(0))]));
        assert_ne!(key(&[Value::Int(Some(1))]), key(&[Value::BigInt(Some(1))]));
        assert_ne!(
            key(&[Value::Double(Some(0.0))]),
            key(&[Value::Double(Some(-0.0))])
        );
        assert_ne!(
            key(&[Value::Bytes(Some(vec![1]))]),
            key(&[Value::String(Some("\u{1}".into()))])
        );
    }

    #[test]
    fn kinds_merge_integer_widths_and_tell_text_and_floats_apart() {
        assert_eq!(
            value_kind(&Value::Int(Some(1))),
            value_kind(&Value::BigInt(Some(1)))
        );
        assert_ne!(
            value_kind(&Value::Int(Some(1))),
            value_kind(&Value::from("1"))
        );
        assert_ne!(
            value_kind(&Value::Int(Some(1))),
            value_kind(&Value::Double(Some(1.0)))
        );
        assert_eq!(value_kind(&Value::from('a')), "str");
    }

    #[test]
    fn row_identity_form_merges_integer_widths() {
        let mut a = KeyBuf::new("r", "app");
        a.row_value(&Value::Int(Some(42)));
        let mut b = KeyBuf::new("r", "app");
        b.row_value(&Value::BigInt(Some(42)));
        assert_eq!(a.finish(), b.finish());
    }
}
