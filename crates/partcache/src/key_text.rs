//! The canonical text form of cache keys.
//!
//! Cache keys are typed (`K: Serialize`). Remote stores (Redis/Valkey) and the
//! partitioning layer need every key as text that is
//!
//! * **deterministic**: the same key always gives the same text, in every process;
//! * **injective within one key type**: two different values of the same type never
//!   give the same text, so they can never share a slot in a remote store;
//! * **readable** in `redis-cli`: `(7u32, "alice")` is `7:alice`;
//! * **literal for plain strings**: a `String` key is exactly itself, so Redis hash-tag
//!   rules (`{...}`) and user hashing rules such as `^user:(?<tag>\d+)` see the string
//!   the user wrote.
//!
//! [`write_key_text`] writes a key's text into a reusable buffer (no allocation once
//! the buffer is warm); [`key_text`] allocates a new `String`.
//!
//! # The format (version [`FORMAT_VERSION`])
//!
//! **This format is stable.** A key's text decides where its data lives in the remote
//! store, so changing any rule below silently orphans every stored entry. A change
//! must bump [`FORMAT_VERSION`] and be announced as a breaking change.
//!
//! A value is written either at the **top level** (the key itself, and the payload of
//! a top-level `Option` or newtype struct) or **nested** (a component of a composite:
//! a tuple element, a struct field, a sequence element, a map key or value, a variant
//! payload). Components of composites are always nested.
//!
//! | serde value | top level | nested |
//! |---|---|---|
//! | `str`, `String`, `char`, `collect_str` | the text itself, unescaped | escaped (see below) |
//! | `bool` | `true` / `false` | same |
//! | integers `i8`..`i128`, `u8`..`u128` | decimal, `-` for negatives: `42`, `-7` | same |
//! | `f32`, `f64` | Rust's `{}` formatting: shortest text that round-trips, never an exponent (`1.5`, `1`, `-0`, `inf`, `-inf`, `NaN`) | same |
//! | bytes (`serialize_bytes`) | `0x` and lowercase hex (`0xdead`; empty is `0x`) | same |
//! | `()`, unit struct | `_` | same |
//! | `None` | `~` | same |
//! | `Some(x)` | the text of `x` in the same context; if that text starts with `~`, one more `~` is put in front | same |
//! | newtype struct `Id(x)` | transparent: the text of `x` in the same context | same |
//! | unit variant | the variant's name, escaped | same |
//! | tuple, tuple struct, struct | the components joined by `:` | `(` that `)` |
//! | newtype, tuple and struct variant | the variant's name, escaped, then `:` and each component | `(` that `)` |
//! | sequence (`Vec`, slices, sets) | the element count, then `:` and each element | `(` that `)` |
//! | map | the entry count, then `:` key `:` value for each entry | `(` that `)` |
//! | struct field left out by `skip_serializing_if` | the reserved component `\-` | |
//!
//! **Escaping.** Nested strings, and variant names everywhere, escape exactly four
//! characters: `\` as `\\`, `:` as `\:`, `(` as `\(` and `)` as `\)`. Nothing else is
//! ever escaped: `{`, `}`, `~`, spaces and all non-ASCII text are written as they are,
//! so a hash tag `{...}` inside a string field still works.
//!
//! **Struct field names are not written**, only the values in declaration order:
//! renaming a field does not move data (reordering fields does). Enum variant names
//! *are* written (after `#[serde(rename)]`), so renaming a variant moves its data.
//!
//! Examples:
//!
//! | key | text |
//! |---|---|
//! | `"user:{42}:profile"` | `user:{42}:profile` |
//! | `42u64`, `-7i32` | `42`, `-7` |
//! | `(7u32, "alice")` | `7:alice` |
//! | `("a:b", "c")`, `("a", "b:c")` | `a\:b:c`, `a:b\:c` |
//! | `((1, 2), 3)`, `(1, (2, 3))` | `(1:2):3`, `1:(2:3)` |
//! | `UserId(7)` (newtype struct) | `7` |
//! | `Key { tenant: 3, name: "bob" }` | `3:bob` |
//! | `Scope::Global`, `Scope::User(7)`, `Scope::Pair(1, "x")` | `Global`, `User:7`, `Pair:1:x` |
//! | `vec!["a"]`, `vec!["a", ""]`, `vec![]` | `1:a`, `2:a:`, `0` |
//! | `("t", vec!["a", "b"])` | `t:(2:a:b)` |
//! | `None`, `Some("x")`, `Some("~")` (as `Option<String>`) | `~`, `x`, `~~` |
//!
//! ## Why the format is injective
//!
//! Every nested text is a self-delimiting token: each unescaped `\` starts a two-char
//! escape pair, unescaped parentheses are balanced, and an unescaped `:` occurs only
//! inside parentheses. So the body of a composite splits unambiguously at its
//! unescaped `:`s outside parentheses, and the key type says how to read each piece:
//! a string unescapes; `~` alone is `None`, otherwise one leading `~` is dropped if
//! present and the rest is the `Some` payload; a variant starts with its (distinct)
//! name, which decides its shape; a sequence or map starts with its count; `\-` is a
//! skipped field (no value writes `\-`). At the top level, strings are unescaped but
//! are then the whole text, and escaped variant names end at the first unescaped `:`.
//!
//! ## Limits
//!
//! Injectivity holds **within one key type** only: `7u8`, `7u64` and `"7"` all write
//! `7` (each cache has one key type). It also assumes what serde reports is
//! deterministic and faithful:
//!
//! * `HashMap`/`HashSet` iterate in a per-instance random order, so their text is not
//!   deterministic: use `BTreeMap`/`BTreeSet` in keys.
//! * `#[serde(untagged)]` enums and hand-written `Serialize` impls that send different
//!   values to the same serde output give the same text.
//! * Every `NaN` (any sign or payload) writes `NaN`; `0.0` and `-0.0` stay distinct
//!   (`0`, `-0`).
//! * `Vec<u8>` and `[u8; N]` are sequences to serde (`3:1:2:3`); only values that call
//!   `serialize_bytes` (e.g. via `serde_bytes`) are written as hex.
//! * `#[serde(flatten)]` makes serde write a struct as a map, field names included.

use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::ser;

/// Version of the format described in the module docs. Bumped on any change to it,
/// because a change moves every stored key.
pub const FORMAT_VERSION: u32 = 1;

/// Why a key could not be written as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    /// The key's `Serialize` impl produced a shape that has no text form, such as a
    /// sequence whose announced length differs from the elements it then wrote, or a
    /// map key without a value.
    #[error("key cannot be written as text: {0}")]
    Unsupported(&'static str),
    /// An error raised by the key's own `Serialize` (or `Display`) impl.
    #[error("{0}")]
    Custom(String),
}

impl ser::Error for KeyTextError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyTextError::Custom(msg.to_string())
    }
}

/// Writes `key`'s canonical text (see the module docs) into `out`, which is cleared
/// first. Reusing one buffer means a hot path allocates nothing once the buffer has
/// grown to its largest key. On error `out` is left empty.
///
/// # Errors
///
/// [`KeyTextError`] if the key's `Serialize` impl fails or produces a shape with no
/// text form.
pub fn write_key_text<K: Serialize + ?Sized>(
    key: &K,
    out: &mut String,
) -> Result<(), KeyTextError> {
    out.clear();
    let result = key.serialize(TextSerializer {
        out: &mut *out,
        nested: false,
    });
    if result.is_err() {
        out.clear();
    }
    result
}

/// Returns `key`'s canonical text (see the module docs) in a new `String`.
///
/// # Errors
///
/// As [`write_key_text`].
pub fn key_text<K: Serialize + ?Sized>(key: &K) -> Result<String, KeyTextError> {
    let mut out = String::new();
    write_key_text(key, &mut out)?;
    Ok(out)
}

/// The reserved component written for a struct field skipped by `skip_serializing_if`.
const SKIPPED_FIELD: &str = "\\-";

/// Appends `s` escaping `\`, `:`, `(` and `)` with a backslash.
fn push_escaped(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if matches!(b, b'\\' | b':' | b'(' | b')') {
            // `i` is the index of an ASCII byte, hence a char boundary.
            out.push_str(&s[start..i]);
            out.push('\\');
            out.push(char::from(b));
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
}

/// A `fmt::Write` that escapes what is written into it, for nested `collect_str`.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// The decimal digits of a `u64`, formatted on the stack.
struct Decimal {
    bytes: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut v: u64) -> Self {
        let mut bytes = [0u8; 20];
        let mut start = bytes.len();
        loop {
            start -= 1;
            // `v % 10 < 10`, so the cast cannot truncate.
            bytes[start] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        Decimal { bytes, start }
    }

    fn digits(&self) -> impl Iterator<Item = char> + '_ {
        self.bytes[self.start..].iter().map(|&b| char::from(b))
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }
}

fn push_u64(out: &mut String, v: u64) {
    let d = Decimal::new(v);
    out.reserve(d.len());
    out.extend(d.digits());
}

fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_u128(out: &mut String, v: u128) -> Result<(), KeyTextError> {
    match u64::try_from(v) {
        Ok(small) => {
            push_u64(out, small);
            Ok(())
        }
        Err(_) => push_display(out, &v),
    }
}

fn push_i128(out: &mut String, v: i128) -> Result<(), KeyTextError> {
    if v < 0 {
        out.push('-');
    }
    push_u128(out, v.unsigned_abs())
}

/// Appends `v` with `{}` formatting (no escaping: used for numbers only).
fn push_display<T: fmt::Display + ?Sized>(out: &mut String, v: &T) -> Result<(), KeyTextError> {
    write!(out, "{v}").map_err(|_| display_failed())
}

fn display_failed() -> KeyTextError {
    KeyTextError::Custom("a Display implementation returned an error".to_owned())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + 2 * bytes.len());
    out.push_str("0x");
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Writes one value, at the top level or nested.
struct TextSerializer<'a> {
    out: &'a mut String,
    nested: bool,
}

impl TextSerializer<'_> {
    fn push_str_value(self, s: &str) {
        if self.nested {
            push_escaped(self.out, s);
        } else {
            self.out.push_str(s);
        }
    }
}

/// How a composite tracks its element count.
#[derive(Clone, Copy)]
enum Count {
    /// Fixed-arity composite (tuple, struct, variant): no count is written.
    None,
    /// The count was known up front and already written; the elements must match it.
    Announced(usize),
    /// The count is inserted at this byte offset once all elements are written.
    Deferred(usize),
}

/// Writes the components of a composite: `a:b:c` at the top level, `(a:b:c)` nested.
struct Compound<'a> {
    out: &'a mut String,
    nested: bool,
    /// No component (count or variant name included) has been written yet.
    first: bool,
    count: Count,
    /// Elements (sequence) or entries (map) written so far.
    written: usize,
    /// A map key was written and its value is still to come.
    pending_key: bool,
}

impl<'a> Compound<'a> {
    /// Opens a fixed-arity composite.
    fn open(out: &'a mut String, nested: bool) -> Self {
        if nested {
            out.push('(');
        }
        Compound {
            out,
            nested,
            first: true,
            count: Count::None,
            written: 0,
            pending_key: false,
        }
    }

    /// Opens a variant composite: its escaped name is the first component.
    fn open_variant(out: &'a mut String, nested: bool, variant: &str) -> Self {
        let mut c = Compound::open(out, nested);
        push_escaped(c.out, variant);
        c.first = false;
        c
    }

    /// Opens a sequence or map, writing its count now if it is known.
    fn open_counted(out: &'a mut String, nested: bool, len: Option<usize>) -> Self {
        let mut c = Compound::open(out, nested);
        c.count = match len {
            Some(n) => {
                push_u64(c.out, n as u64);
                Count::Announced(n)
            }
            None => Count::Deferred(c.out.len()),
        };
        c.first = false;
        c
    }

    fn separator(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(':');
        }
    }

    fn component<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyTextError> {
        self.separator();
        value.serialize(TextSerializer {
            out: &mut *self.out,
            nested: true,
        })
    }

    fn skipped(&mut self) {
        self.separator();
        self.out.push_str(SKIPPED_FIELD);
    }

    fn close(self) -> Result<(), KeyTextError> {
        if self.pending_key {
            return Err(KeyTextError::Unsupported(
                "a map key was written without its value",
            ));
        }
        match self.count {
            Count::None => {}
            Count::Announced(n) => {
                if n != self.written {
                    return Err(KeyTextError::Unsupported(
                        "a sequence or map announced a length other than the number of elements it wrote",
                    ));
                }
            }
            Count::Deferred(pos) => {
                let d = Decimal::new(self.written as u64);
                for (i, ch) in d.digits().enumerate() {
                    self.out.insert(pos + i, ch);
                }
            }
        }
        if self.nested {
            self.out.push(')');
        }
        Ok(())
    }
}

impl<'a> ser::Serializer for TextSerializer<'a> {
    type Ok = ();
    type Error = KeyTextError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), KeyTextError> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), KeyTextError> {
        push_i64(self.out, i64::from(v));
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), KeyTextError> {
        push_i64(self.out, i64::from(v));
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), KeyTextError> {
        push_i64(self.out, i64::from(v));
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), KeyTextError> {
        push_i64(self.out, v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), KeyTextError> {
        push_i128(self.out, v)
    }

    fn serialize_u8(self, v: u8) -> Result<(), KeyTextError> {
        push_u64(self.out, u64::from(v));
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), KeyTextError> {
        push_u64(self.out, u64::from(v));
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), KeyTextError> {
        push_u64(self.out, u64::from(v));
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), KeyTextError> {
        push_u64(self.out, v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), KeyTextError> {
        push_u128(self.out, v)
    }

    fn serialize_f32(self, v: f32) -> Result<(), KeyTextError> {
        push_display(self.out, &v)
    }

    fn serialize_f64(self, v: f64) -> Result<(), KeyTextError> {
        push_display(self.out, &v)
    }

    fn serialize_char(self, v: char) -> Result<(), KeyTextError> {
        let mut buf = [0u8; 4];
        self.push_str_value(v.encode_utf8(&mut buf));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), KeyTextError> {
        self.push_str_value(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyTextError> {
        push_hex(self.out, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), KeyTextError> {
        self.out.push('~');
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), KeyTextError> {
        let start = self.out.len();
        value.serialize(TextSerializer {
            out: &mut *self.out,
            nested: self.nested,
        })?;
        if self.out.as_bytes().get(start) == Some(&b'~') {
            self.out.insert(start, '~');
        }
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), KeyTextError> {
        self.out.push('_');
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), KeyTextError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
    ) -> Result<(), KeyTextError> {
        push_escaped(self.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), KeyTextError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), KeyTextError> {
        let mut c = Compound::open_variant(self.out, self.nested, variant);
        c.component(value)?;
        c.close()
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open_counted(self.out, self.nested, len))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open(self.out, self.nested))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open(self.out, self.nested))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open_variant(self.out, self.nested, variant))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open_counted(self.out, self.nested, len))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open(self.out, self.nested))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _variant_index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyTextError> {
        Ok(Compound::open_variant(self.out, self.nested, variant))
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), KeyTextError> {
        let result = if self.nested {
            write!(Escaping(self.out), "{value}")
        } else {
            write!(self.out, "{value}")
        };
        result.map_err(|_| display_failed())
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyTextError> {
        self.written += 1;
        self.component(value)
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyTextError> {
        self.component(value)
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyTextError> {
        self.component(value)
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyTextError> {
        self.component(value)
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), KeyTextError> {
        if self.pending_key {
            return Err(KeyTextError::Unsupported(
                "a map key was written without its value",
            ));
        }
        self.pending_key = true;
        self.written += 1;
        self.component(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyTextError> {
        if !self.pending_key {
            return Err(KeyTextError::Unsupported(
                "a map value was written without its key",
            ));
        }
        self.pending_key = false;
        self.component(value)
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), KeyTextError> {
        self.component(value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), KeyTextError> {
        self.skipped();
        Ok(())
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = KeyTextError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), KeyTextError> {
        self.component(value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), KeyTextError> {
        self.skipped();
        Ok(())
    }

    fn end(self) -> Result<(), KeyTextError> {
        self.close()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::fmt;

    use serde::{Serialize, Serializer};

    use super::*;

    fn text<K: Serialize + ?Sized>(key: &K) -> String {
        match key_text(key) {
            Ok(t) => t,
            Err(e) => panic!("key_text failed: {e}"),
        }
    }

    /// Asserts that distinct values (by `Debug`) give distinct texts.
    fn assert_injective<K: Serialize + fmt::Debug>(values: &[K]) {
        let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for v in values {
            let t = text(v);
            let dbg = format!("{v:?}");
            if let Some(prev) = seen.insert(t.clone(), dbg.clone()) {
                assert_eq!(prev, dbg, "{prev} and {dbg} both write {t:?}");
            }
        }
    }

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    /// A sequence that does not announce its length.
    struct UnsizedSeq<'a>(&'a [&'a str]);

    impl Serialize for UnsizedSeq<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().filter(|_| true))
        }
    }

    /// A sequence that announces more elements than it writes.
    struct LyingSeq;

    impl Serialize for LyingSeq {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(3))?;
            seq.serialize_element("a")?;
            seq.serialize_element("b")?;
            seq.end()
        }
    }

    struct Shown(&'static str);

    impl fmt::Display for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Serialize for Shown {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    struct Failing;

    impl Serialize for Failing {
        fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no text for this key"))
        }
    }

    #[test]
    fn plain_string_is_itself() {
        for s in [
            "alice",
            "",
            "user:42",
            "user:{42}:profile",
            "{tag}",
            "a\\b",
            "(x)",
            "~",
            "~~",
            "_",
            "0x00",
            "ünïcode ✓",
        ] {
            assert_eq!(text(s), s);
            assert_eq!(text(&s.to_owned()), s);
        }
    }

    #[test]
    fn char_at_top_level_is_itself_and_escaped_when_nested() {
        assert_eq!(text(&':'), ":");
        assert_eq!(text(&'é'), "é");
        assert_eq!(text(&(':', 'x')), "\\::x");
    }

    #[test]
    fn integers_are_decimal() {
        assert_eq!(text(&42u8), "42");
        assert_eq!(text(&0u64), "0");
        assert_eq!(text(&-7i32), "-7");
        assert_eq!(text(&i8::MIN), "-128");
        assert_eq!(text(&i64::MIN), "-9223372036854775808");
        assert_eq!(text(&u64::MAX), "18446744073709551615");
        assert_eq!(text(&u128::MAX), "340282366920938463463374607431768211455");
        assert_eq!(text(&i128::MIN), "-170141183460469231731687303715884105728");
        assert_eq!(text(&-5i128), "-5");
        assert_eq!(text(&(u64::MAX as u128 + 1)), "18446744073709551616");
    }

    #[test]
    fn bools_units_and_unit_structs() {
        #[derive(Serialize)]
        struct Marker;
        assert_eq!(text(&true), "true");
        assert_eq!(text(&false), "false");
        assert_eq!(text(&()), "_");
        assert_eq!(text(&Marker), "_");
        assert_eq!(text(&((), Marker, 1)), "_:_:1");
    }

    #[test]
    fn floats_use_shortest_round_trip_text() {
        assert_eq!(text(&1.5f64), "1.5");
        assert_eq!(text(&1.0f64), "1");
        assert_eq!(text(&0.1f32), "0.1");
        assert_eq!(text(&0.0f64), "0");
        assert_eq!(text(&-0.0f64), "-0");
        assert_eq!(text(&f64::NAN), "NaN");
        assert_eq!(text(&f64::INFINITY), "inf");
        assert_eq!(text(&f64::NEG_INFINITY), "-inf");
        assert_eq!(text(&(2.5f64, "x")), "2.5:x");
    }

    #[test]
    fn tuple_of_id_and_name_is_colon_joined() {
        assert_eq!(text(&(7u32, "alice".to_owned())), "7:alice");
        assert_eq!(text(&(7u32, "user:{7}")), "7:user\\:{7}");
    }

    #[test]
    fn escaping_keeps_string_components_apart() {
        assert_eq!(text(&("a:b", "c")), "a\\:b:c");
        assert_eq!(text(&("a", "b:c")), "a:b\\:c");
        assert_eq!(text(&("a\\", "b")), "a\\\\:b");
        assert_eq!(text(&("(", ")")), "\\(:\\)");
        let pairs: Vec<(String, String)> = [
            ("a:b", "c"),
            ("a", "b:c"),
            ("a\\", "b"),
            ("a", "\\b"),
            ("a\\:b", ""),
            ("a\\", ":b"),
            ("a", "\\:b"),
            ("a:", "b"),
            ("", "a:b"),
            ("a:b", ""),
            ("(a", ")"),
            ("(a)", ""),
            ("", "(a)"),
            ("\\", "\\"),
            ("\\\\", ""),
            ("", "\\\\"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_injective(&pairs);
    }

    #[test]
    fn nested_tuples_are_wrapped_and_injective() {
        assert_eq!(text(&((1, 2), 3)), "(1:2):3");
        assert_eq!(text(&(1, (2, 3))), "1:(2:3)");
        assert_eq!(text(&(("a", "b"), ("c", "d"))), "(a:b):(c:d)");
        assert_eq!(text(&(("(1", "2)"), "x")), "(\\(1:2\\)):x");
        let values: Vec<((String, String), String)> = [
            (("a", "b"), "c"),
            (("a:b", ""), "c"),
            (("a", "b:c"), ""),
            (("a)", "b"), "c"),
            (("a", ")b"), "c"),
            (("a", "b)"), "c"),
            (("", ""), ""),
            (("(", ")"), ""),
            (("", ""), "()"),
        ]
        .iter()
        .map(|((a, b), c)| (((*a).to_owned(), (*b).to_owned()), (*c).to_owned()))
        .collect();
        assert_injective(&values);
    }

    #[test]
    fn option_none_is_tilde_and_some_starting_with_tilde_gets_one_more() {
        assert_eq!(text(&None::<String>), "~");
        assert_eq!(text(&Some("x")), "x");
        assert_eq!(text(&Some("")), "");
        assert_eq!(text(&Some("~")), "~~");
        assert_eq!(text(&Some("~a")), "~~a");
        assert_eq!(text(&Some("a~")), "a~");
        assert_eq!(text(&Some(7u8)), "7");
        assert_eq!(text(&(None::<u8>, Some("~"))), "~:~~");
        let values: Vec<Option<String>> = [
            None,
            Some(""),
            Some("~"),
            Some("~~"),
            Some("~~~"),
            Some("\\~"),
            Some("a"),
        ]
        .iter()
        .map(|o| o.map(str::to_owned))
        .collect();
        assert_injective(&values);
    }

    #[test]
    fn nested_options_are_injective() {
        assert_eq!(text(&None::<Option<String>>), "~");
        assert_eq!(text(&Some(None::<String>)), "~~");
        assert_eq!(text(&Some(Some("~"))), "~~~");
        let strs = [None, Some(""), Some("~"), Some("~~"), Some("a"), Some("~a")];
        let mut values: Vec<Option<Option<String>>> = vec![None];
        values.extend(strs.iter().map(|o| Some(o.map(str::to_owned))));
        assert_injective(&values);
        let tuples: Vec<(Option<Option<String>>, Option<String>)> = values
            .iter()
            .flat_map(|a| strs.iter().map(move |b| (a.clone(), b.map(str::to_owned))))
            .collect();
        assert_injective(&tuples);
    }

    #[test]
    fn struct_writes_field_values_in_order_without_names() {
        #[derive(Serialize)]
        struct UserKey {
            tenant: u32,
            name: String,
        }
        #[derive(Serialize)]
        struct RenamedFields {
            org: u32,
            login: String,
        }
        #[derive(Serialize)]
        struct UserId(u64);
        #[derive(Serialize)]
        struct Point(i32, i32);

        let key = UserKey {
            tenant: 3,
            name: "bob".to_owned(),
        };
        assert_eq!(text(&key), "3:bob");
        assert_eq!(
            text(&RenamedFields {
                org: 3,
                login: "bob".to_owned()
            }),
            "3:bob"
        );
        assert_eq!(text(&UserId(7)), "7");
        assert_eq!(text(&Point(1, -2)), "1:-2");
        assert_eq!(text(&(UserId(7), Point(1, 2), key)), "7:(1:2):(3:bob)");
    }

    #[test]
    fn skipped_fields_leave_a_reserved_marker() {
        #[derive(Serialize, Debug)]
        struct Sparse {
            #[serde(skip_serializing_if = "Option::is_none")]
            a: Option<String>,
            #[serde(skip_serializing_if = "String::is_empty")]
            b: String,
        }
        let x = || Some("x".to_owned());
        assert_eq!(
            text(&Sparse {
                a: x(),
                b: String::new()
            }),
            "x:\\-"
        );
        assert_eq!(
            text(&Sparse {
                a: None,
                b: "x".to_owned()
            }),
            "\\-:x"
        );
        assert_injective(&[
            Sparse {
                a: x(),
                b: String::new(),
            },
            Sparse {
                a: None,
                b: "x".to_owned(),
            },
            Sparse {
                a: None,
                b: String::new(),
            },
            Sparse {
                a: Some(String::new()),
                b: String::new(),
            },
            Sparse {
                a: Some("\\-".to_owned()),
                b: String::new(),
            },
            Sparse {
                a: None,
                b: "\\-".to_owned(),
            },
        ]);
    }

    #[derive(Serialize, Debug, Clone)]
    enum Scope {
        Global,
        User(u64),
        Pair(u32, String),
        Named {
            id: u32,
            name: String,
        },
        Empty(),
        #[serde(rename = "a:b")]
        Colon,
        #[serde(rename = "a")]
        A(String),
    }

    #[test]
    fn enum_variants_write_their_names() {
        assert_eq!(text(&Scope::Global), "Global");
        assert_eq!(text(&Scope::User(7)), "User:7");
        assert_eq!(text(&Scope::Pair(1, "x".to_owned())), "Pair:1:x");
        assert_eq!(
            text(&Scope::Named {
                id: 1,
                name: "x:y".to_owned()
            }),
            "Named:1:x\\:y"
        );
        assert_eq!(text(&Scope::Empty()), "Empty");
        assert_eq!(text(&Scope::Colon), "a\\:b");
        assert_eq!(text(&Scope::A("b".to_owned())), "a:b");
        assert_eq!(text(&(Scope::User(7), 1)), "(User:7):1");
        assert_eq!(text(&(Scope::Global, 1)), "Global:1");
        assert_eq!(text(&Some(Scope::Global)), "Global");
    }

    #[test]
    fn enum_variants_are_injective() {
        let values = vec![
            Scope::Global,
            Scope::User(7),
            Scope::Pair(7, String::new()),
            Scope::Named {
                id: 7,
                name: String::new(),
            },
            Scope::Empty(),
            Scope::Colon,
            Scope::A("b".to_owned()),
            Scope::A(String::new()),
            Scope::A(":b".to_owned()),
        ];
        assert_injective(&values);
        let nested: Vec<(Scope, Scope)> = values
            .iter()
            .flat_map(|a| values.iter().map(move |b| (a.clone(), b.clone())))
            .collect();
        assert_injective(&nested);
    }

    #[test]
    fn bytes_are_lowercase_hex_with_prefix() {
        assert_eq!(
            text(&Bytes(&[0xde, 0xad, 0xBE, 0xef, 0x00, 0x0f])),
            "0xdeadbeef000f"
        );
        assert_eq!(text(&Bytes(&[])), "0x");
        assert_eq!(text(&(Bytes(&[1]), "a")), "0x01:a");
        // A Vec<u8> is a sequence to serde, not bytes.
        assert_eq!(text(&vec![1u8, 2, 3]), "3:1:2:3");
    }

    #[test]
    fn sequences_are_counted() {
        let empty: Vec<String> = Vec::new();
        assert_eq!(text(&empty), "0");
        assert_eq!(text(&vec![""]), "1:");
        assert_eq!(text(&vec!["a"]), "1:a");
        assert_eq!(text(&vec!["a", ""]), "2:a:");
        assert_eq!(text(&("t", vec!["a", "b"])), "t:(2:a:b)");
        assert_eq!(text(&("t", empty.clone())), "t:(0)");
        assert_eq!(text(&vec![vec!["a"], vec![]]), "2:(1:a):(0)");
        let values: Vec<Vec<String>> = [
            &[][..],
            &[""],
            &["", ""],
            &["a"],
            &["a", ""],
            &["", "a"],
            &["a:"],
            &["1:a"],
        ]
        .iter()
        .map(|v| v.iter().map(|s| (*s).to_owned()).collect())
        .collect();
        assert_injective(&values);
    }

    #[test]
    fn sequence_of_unknown_length_writes_the_same_text() {
        let many = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        for items in [&[][..], &["x"][..], &["a", ""][..], &many[..]] {
            let sized: Vec<&str> = items.to_vec();
            assert_eq!(text(&UnsizedSeq(items)), text(&sized));
            assert_eq!(text(&(1, UnsizedSeq(items), 2)), text(&(1, &sized, 2)));
        }
        assert_eq!(text(&UnsizedSeq(&many)), "12:a:b:c:d:e:f:g:h:i:j:k:l");
    }

    #[test]
    fn maps_are_counted_key_value_pairs() {
        let mut m = BTreeMap::new();
        assert_eq!(text(&m), "0");
        m.insert("b", 2);
        m.insert("a:x", 1);
        assert_eq!(text(&m), "2:a\\:x:1:b:2");
        assert_eq!(text(&(0, &m)), "0:(2:a\\:x:1:b:2)");
    }

    #[test]
    fn collect_str_is_literal_at_top_level_and_escaped_when_nested() {
        assert_eq!(text(&Shown("a:b(c)")), "a:b(c)");
        assert_eq!(text(&(Shown("a:b(c)"), 1)), "a\\:b\\(c\\):1");
    }

    #[test]
    fn errors_are_reported_and_leave_the_buffer_empty() {
        let mut buf = String::from("stale");
        let err = write_key_text(&LyingSeq, &mut buf);
        assert!(matches!(err, Err(KeyTextError::Unsupported(_))), "{err:?}");
        assert!(buf.is_empty());

        buf.push_str("stale");
        let err = write_key_text(&("ok", Failing), &mut buf);
        assert_eq!(
            err,
            Err(KeyTextError::Custom("no text for this key".to_owned()))
        );
        assert!(buf.is_empty());
        assert_eq!(
            KeyTextError::Unsupported("x").to_string(),
            "key cannot be written as text: x"
        );
    }

    #[test]
    fn buffer_is_reused_without_shrinking() {
        let mut buf = String::with_capacity(8);
        let long = (
            "a long component that grows the buffer",
            123_456_789u64,
            vec!["x", "y"],
        );
        assert!(write_key_text(&long, &mut buf).is_ok());
        assert_eq!(
            buf,
            "a long component that grows the buffer:123456789:(2:x:y)"
        );
        let cap = buf.capacity();
        let ptr = buf.as_ptr();
        assert!(write_key_text(&(7u32, "alice"), &mut buf).is_ok());
        assert_eq!(buf, "7:alice");
        assert_eq!(buf.capacity(), cap);
        assert_eq!(buf.as_ptr(), ptr, "a warm buffer must not be reallocated");
        assert!(write_key_text("plain", &mut buf).is_ok());
        assert_eq!(buf, "plain");
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn key_text_matches_write_key_text() {
        let key = (1u8, "a:b", vec![Some("~")]);
        let mut buf = String::new();
        assert!(write_key_text(&key, &mut buf).is_ok());
        assert_eq!(key_text(&key), Ok(buf));
        assert_eq!(key_text(&key), Ok("1:a\\:b:(1:~~)".to_owned()));
    }

    /// A 64-bit LCG (Knuth's MMIX constants); the high bits are used.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: u32) -> u32 {
            self.next() % n
        }

        /// Short strings over an alphabet rich in the format's special characters.
        fn string(&mut self) -> String {
            const ALPHABET: [char; 10] = ['a', 'b', ':', '\\', '(', ')', '~', '-', '{', '0'];
            let len = self.below(4);
            (0..len)
                .map(|_| ALPHABET[self.below(ALPHABET.len() as u32) as usize])
                .collect()
        }
    }

    #[test]
    fn ten_thousand_distinct_generated_keys_give_distinct_texts() {
        let mut rng = Lcg(0x5eed);
        let mut values: HashSet<(String, u8, Vec<String>)> = HashSet::new();
        while values.len() < 10_000 {
            let s = rng.string();
            let n = rng.below(3) as u8;
            let len = rng.below(4);
            let v: Vec<String> = (0..len).map(|_| rng.string()).collect();
            values.insert((s, n, v));
        }
        let mut buf = String::new();
        let mut texts: HashSet<String> = HashSet::with_capacity(values.len());
        for v in &values {
            assert!(write_key_text(v, &mut buf).is_ok());
            assert_eq!(
                split_components(&buf).len(),
                3,
                "{buf:?} does not split into 3 components"
            );
            texts.insert(buf.clone());
        }
        assert_eq!(texts.len(), 10_000);
    }

    /// Splits a composite body at its unescaped `:`s outside parentheses, as the
    /// module docs describe a reader would.
    fn split_components(body: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut depth, mut start, mut escaped) = (0usize, 0, false);
        for (i, b) in body.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'(' => depth += 1,
                b')' => depth = depth.checked_sub(1).expect("unbalanced `)`"),
                b':' if depth == 0 => {
                    parts.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        assert!(!escaped && depth == 0, "{body:?} is not a well-formed body");
        parts.push(&body[start..]);
        parts
    }

    #[test]
    fn composite_bodies_split_into_their_components() {
        assert_eq!(split_components(&text(&(7u32, "alice"))), ["7", "alice"]);
        assert_eq!(
            split_components(&text(&(
                "a:b",
                ("(", vec![":)"]),
                Scope::Pair(1, ":".to_owned()),
                None::<u8>
            ))),
            ["a\\:b", "(\\(:(1:\\:\\)))", "(Pair:1:\\:)", "~"]
        );
        assert_eq!(
            split_components(&text(&Scope::Named {
                id: 2,
                name: ")".to_owned()
            })),
            ["Named", "2", "\\)"]
        );
    }

    #[test]
    fn exhaustive_small_nested_values_are_injective() {
        let atoms: Vec<Option<String>> = [
            None,
            Some(""),
            Some("~"),
            Some(":"),
            Some("\\"),
            Some("("),
            Some(")"),
            Some("\\-"),
        ]
        .iter()
        .map(|o| o.map(str::to_owned))
        .collect();
        let mut seqs: Vec<Vec<Option<String>>> = vec![Vec::new()];
        for a in &atoms {
            seqs.push(vec![a.clone()]);
            for b in &atoms {
                seqs.push(vec![a.clone(), b.clone()]);
                for c in &atoms {
                    seqs.push(vec![a.clone(), b.clone(), c.clone()]);
                }
            }
        }
        assert_injective(&seqs);
        let nested: Vec<Vec<Vec<Option<String>>>> = seqs
            .iter()
            .take(80)
            .flat_map(|a| {
                seqs.iter()
                    .take(80)
                    .map(move |b| vec![a.clone(), b.clone()])
            })
            .chain(seqs.iter().map(|a| vec![a.clone()]))
            .collect();
        assert_injective(&nested);
    }
}
