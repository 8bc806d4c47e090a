//! How values become bytes for remote stores, and how they come back.
//!
//! Every stored blob starts with a 4-byte header so that a value written by another
//! codec, another format version, or corrupted in transit is *detected*: decoding it is
//! an [`Error::Decode`], which the cache turns into a miss plus a counted decode error,
//! never a panic and never a wrong value. Such bytes are absent to the operations that
//! read values, and a write that wants the key absent (`put_if_absent`, a load, an
//! entry processor's creation) replaces them; see `docs/ARCHITECTURE.md`.
//!
//! ```text
//! byte 0      MAGIC (0xC7)
//! byte 1      FORMAT_VERSION (1)
//! byte 2      codec id (1 = postcard, 2 = JSON)
//! byte 3..    varint length of the encoded key, the encoded key, then the encoded value
//! ```
//!
//! The key travels inside the blob so that iterating a remote cache can return typed
//! keys without a reverse mapping from the key's text form.
//!
//! Local stores never use a codec: they keep decoded values behind `Arc`s.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// First byte of every blob partcache writes.
pub const MAGIC: u8 = 0xC7;
/// Version of the blob layout described in the module docs.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 3;

/// The serde format a cache stores its values in. Chosen per cache; fixed for its
/// life (a blob written with another codec decodes as an error, not as garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// [postcard](https://docs.rs/postcard): compact, fast, the default.
    #[default]
    Postcard,
    /// JSON: larger and slower, but readable with `redis-cli`.
    Json,
}

impl Codec {
    /// The id written in byte 2 of the header.
    pub fn id(self) -> u8 {
        match self {
            Codec::Postcard => 1,
            Codec::Json => 2,
        }
    }

    /// The codec's name as used in configuration (`postcard`, `json`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Postcard => "postcard",
            Codec::Json => "json",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "postcard" | "binary" => Ok(Codec::Postcard),
            "json" => Ok(Codec::Json),
            other => Err(Error::Config(format!(
                "unknown codec `{other}`: expected `postcard` or `json`"
            ))),
        }
    }

    fn encode_into<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Codec::Postcard => postcard::to_io(value, &mut *out)
                .map(|_| ())
                .map_err(|e| Error::Encode(e.to_string())),
            Codec::Json => {
                serde_json::to_writer(&mut *out, value).map_err(|e| Error::Encode(e.to_string()))
            }
        }
    }

    fn decode_from<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            Codec::Postcard => {
                let (value, rest) = postcard::take_from_bytes(bytes)
                    .map_err(|e| Error::Decode(format!("postcard: {e}")))?;
                if !rest.is_empty() {
                    return Err(Error::Decode(format!(
                        "postcard: {} trailing bytes",
                        rest.len()
                    )));
                }
                Ok(value)
            }
            Codec::Json => {
                serde_json::from_slice(bytes).map_err(|e| Error::Decode(format!("json: {e}")))
            }
        }
    }

    /// Encodes a key and its value into one blob with the header.
    pub fn encode_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        self,
        key: &K,
        value: &V,
    ) -> Result<Vec<u8>> {
        let mut key_bytes = Vec::with_capacity(32);
        self.encode_into(key, &mut key_bytes)?;
        let mut out = Vec::with_capacity(HEADER_LEN + 5 + key_bytes.len() + 64);
        out.extend_from_slice(&[MAGIC, FORMAT_VERSION, self.id()]);
        write_varint(key_bytes.len() as u64, &mut out);
        out.extend_from_slice(&key_bytes);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Decodes a blob written by [`Codec::encode_entry`] with this codec.
    pub fn decode_entry<K: DeserializeOwned, V: DeserializeOwned>(
        self,
        blob: &[u8],
    ) -> Result<(K, V)> {
        let (key_bytes, value_bytes) = self.split(blob)?;
        Ok((self.decode_from(key_bytes)?, self.decode_from(value_bytes)?))
    }

    /// Decodes only the key of a blob (iteration of keys does not pay for values).
    pub fn decode_key<K: DeserializeOwned>(self, blob: &[u8]) -> Result<K> {
        let (key_bytes, _) = self.split(blob)?;
        self.decode_from(key_bytes)
    }

    /// Decodes only the value of a blob (a get already knows its key).
    pub fn decode_value<V: DeserializeOwned>(self, blob: &[u8]) -> Result<V> {
        let (_, value_bytes) = self.split(blob)?;
        self.decode_from(value_bytes)
    }

    /// The blob cut right after its key: what a remote store keeps to announce an event
    /// about an entry whose value is gone (see [`crate::store::raw::RawEvent`]).
    /// [`Codec::decode_entry_or_key`] decodes it with no value.
    pub fn key_only_blob(self, blob: &[u8]) -> Result<Vec<u8>> {
        let (_, value_bytes) = self.split(blob)?;
        Ok(blob[..blob.len() - value_bytes.len()].to_vec())
    }

    /// Decodes a full blob as [`Codec::decode_entry`] does, or a key-only blob
    /// ([`Codec::key_only_blob`]) as its key and no value.
    pub fn decode_entry_or_key<K: DeserializeOwned, V: DeserializeOwned>(
        self,
        blob: &[u8],
    ) -> Result<(K, Option<V>)> {
        let (key_bytes, value_bytes) = self.split(blob)?;
        let key = self.decode_from(key_bytes)?;
        match self.decode_from(value_bytes) {
            Ok(value) => Ok((key, Some(value))),
            // A value type that encodes to nothing (`()` in postcard) decoded above.
            Err(_) if value_bytes.is_empty() => Ok((key, None)),
            Err(e) => Err(e),
        }
    }

    fn split(self, blob: &[u8]) -> Result<(&[u8], &[u8])> {
        let header = blob
            .get(..HEADER_LEN)
            .ok_or_else(|| Error::Decode(format!("blob of {} bytes has no header", blob.len())))?;
        if header[0] != MAGIC {
            return Err(Error::Decode(format!(
                "not a partcache value (first byte {:#04x})",
                header[0]
            )));
        }
        if header[1] != FORMAT_VERSION {
            return Err(Error::Decode(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                header[1]
            )));
        }
        if header[2] != self.id() {
            return Err(Error::Decode(format!(
                "value written with codec id {}, cache uses `{}` (id {})",
                header[2],
                self.name(),
                self.id()
            )));
        }
        let rest = &blob[HEADER_LEN..];
        let (key_len, used) = read_varint(rest)?;
        let rest = &rest[used..];
        let key_len = usize::try_from(key_len)
            .ok()
            .filter(|len| *len <= rest.len())
            .ok_or_else(|| Error::Decode("key length exceeds the blob".to_string()))?;
        Ok(rest.split_at(key_len))
    }
}

fn write_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((n, i + 1));
        }
    }
    Err(Error::Decode("truncated key length".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
        email: Option<String>,
    }

    fn alice() -> User {
        User {
            id: 7,
            name: "alice".into(),
            email: None,
        }
    }

    #[test]
    fn key_only_blobs_decode_as_the_key_without_a_value() {
        for codec in [Codec::Postcard, Codec::Json] {
            let blob = codec.encode_entry(&"k1".to_string(), &alice()).unwrap();
            let key_only = codec.key_only_blob(&blob).unwrap();
            assert!(key_only.len() < blob.len());
            let (key, value) = codec
                .decode_entry_or_key::<String, User>(&key_only)
                .unwrap();
            assert_eq!((key.as_str(), value), ("k1", None));
            let (_, value) = codec.decode_entry_or_key::<String, User>(&blob).unwrap();
            assert_eq!(value, Some(alice()));
            assert!(
                codec
                    .decode_entry_or_key::<String, User>(&blob[..blob.len() - 1])
                    .is_err()
            );
        }
    }

    #[test]
    fn entries_round_trip_in_both_codecs() {
        for codec in [Codec::Postcard, Codec::Json] {
            let blob = codec.encode_entry(&(1u32, "k"), &alice()).unwrap();
            let (key, user): ((u32, String), User) = codec.decode_entry(&blob).unwrap();
            assert_eq!(key, (1, "k".to_string()));
            assert_eq!(user, alice());
            assert_eq!(codec.decode_value::<User>(&blob).unwrap(), alice());
        }
    }

    #[test]
    fn a_blob_of_another_codec_is_a_decode_error() {
        let blob = Codec::Json.encode_entry(&1u8, &alice()).unwrap();
        let err = Codec::Postcard.decode_value::<User>(&blob).unwrap_err();
        assert!(
            matches!(err, Error::Decode(ref m) if m.contains("codec")),
            "{err}"
        );
    }

    #[test]
    fn corrupted_and_foreign_bytes_are_decode_errors_not_panics() {
        let good = Codec::Postcard.encode_entry(&1u8, &alice()).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"hello".to_vec(),
            vec![MAGIC],
            vec![MAGIC, FORMAT_VERSION + 1, 1, 0],
            vec![MAGIC, FORMAT_VERSION, 1, 0xff, 0xff],
            good[..good.len() - 2].to_vec(),
        ];
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push(trailing);
        for bytes in cases {
            let result = Codec::Postcard.decode_entry::<u8, User>(&bytes);
            assert!(
                matches!(result, Err(Error::Decode(_))),
                "{bytes:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn codec_names_parse_and_unknown_names_are_config_errors() {
        assert_eq!(Codec::from_name("json").unwrap(), Codec::Json);
        assert_eq!(Codec::from_name("postcard").unwrap(), Codec::Postcard);
        let err = Codec::from_name("xml").unwrap_err();
        assert!(err.to_string().contains("`xml`"));
    }
}
