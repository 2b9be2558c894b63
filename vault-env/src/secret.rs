//! Secret JSON: the data of one Vault response, held so that every string in it is zeroized.
//!
//! [`SecretJson`] is built straight from the response bytes by a custom serde visitor, so a
//! secret never passes through a plain `String` or a `serde_json::Value` on its way in. Its
//! `Debug` prints `<redacted>` and it has no `Display`; the only ways to get text out are
//! [`SecretJson::to_env_string`] and [`SecretJson::as_str`], both of which stay in zeroizing
//! buffers.
//!
//! # Security
//!
//! Strings (and number texts) are wiped when the value is dropped. Object keys are kept in plain
//! `String`s: they are field names (`password`, `username`), not secrets, and error messages
//! name them. serde_json itself copies escaped strings through a small scratch buffer it does
//! not wipe; callers should read responses into a `Zeroizing<Vec<u8>>` and parse with
//! [`SecretJson::from_slice`], which keeps unescaped strings out of any intermediate buffer.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A JSON value whose strings are zeroized on drop.
///
/// Numbers keep their text (`"3"`, `"-7"`, `"1.5"`), since a number can be a secret too (a PIN)
/// and Bank-Vaults hands numbers to the app as their JSON text.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum SecretJson {
    /// JSON `null`.
    #[default]
    Null,
    /// JSON `true` / `false`.
    Bool(bool),
    /// A JSON number, as text. Integers are exact; other numbers use the shortest text that
    /// reads back as the same `f64`.
    Number(String),
    /// A JSON string.
    String(Zeroizing<String>),
    /// A JSON array.
    Array(Vec<SecretJson>),
    /// A JSON object, keys sorted (as Go's `encoding/json` prints maps).
    Object(BTreeMap<String, SecretJson>),
}

impl SecretJson {
    /// Parses one JSON document from response bytes.
    ///
    /// # Errors
    ///
    /// The serde_json syntax error; it carries a line and column, never the input text.
    pub fn from_slice(bytes: &[u8]) -> Result<SecretJson, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The member `key` of an object; `None` for a missing key or a non-object.
    pub fn get(&self, key: &str) -> Option<&SecretJson> {
        match self {
            SecretJson::Object(map) => map.get(key),
            _ => None,
        }
    }

    /// The string inside a JSON string; `None` for every other kind.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SecretJson::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The object map, if this is an object (for `VAULT_ENV_FROM_PATH`: every key a variable).
    pub fn as_object(&self) -> Option<&BTreeMap<String, SecretJson>> {
        match self {
            SecretJson::Object(map) => Some(map),
            _ => None,
        }
    }

    /// A short name of the JSON kind (`"string"`, `"object"` …) for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretJson::Null => "null",
            SecretJson::Bool(_) => "boolean",
            SecretJson::Number(_) => "number",
            SecretJson::String(_) => "string",
            SecretJson::Array(_) => "array",
            SecretJson::Object(_) => "object",
        }
    }

    /// The env-var text of a value.
    ///
    /// Bank-Vaults converts with `cast.ToStringE`: a string as is, a number as its JSON text,
    /// a boolean as `true`/`false`, `null` as the empty string. For arrays and objects it fails
    /// ("value can't be cast to a string"); we print them as compact JSON instead (keys sorted),
    /// so a structured secret can still be handed over whole.
    pub fn to_env_string(&self) -> Zeroizing<String> {
        match self {
            SecretJson::Null => Zeroizing::new(String::new()),
            SecretJson::Bool(b) => Zeroizing::new(b.to_string()),
            SecretJson::Number(n) => Zeroizing::new(n.clone()),
            SecretJson::String(s) => s.clone(),
            SecretJson::Array(_) | SecretJson::Object(_) => self.to_json(),
        }
    }

    /// Compact JSON text, escaped as Go's `json.Marshal` does (`<`, `>`, `&`, U+2028 and
    /// U+2029 as `\u` escapes), with object keys sorted. Used by the `toJson` template function.
    pub fn to_json(&self) -> Zeroizing<String> {
        // Exact-size buffer: a growing String would leave unwiped copies in freed blocks.
        let mut out = Zeroizing::new(String::with_capacity(self.json_len()));
        self.write_json(&mut out);
        out
    }

    /// Length in bytes of [`SecretJson::to_json`]'s output.
    fn json_len(&self) -> usize {
        match self {
            SecretJson::Null => 4,
            SecretJson::Bool(b) => {
                if *b {
                    4
                } else {
                    5
                }
            }
            SecretJson::Number(n) => n.len(),
            SecretJson::String(s) => json_string_len(s),
            SecretJson::Array(items) => {
                2 + items.len().saturating_sub(1) + items.iter().map(Self::json_len).sum::<usize>()
            }
            SecretJson::Object(map) => {
                2 + map.len().saturating_sub(1)
                    + map
                        .iter()
                        .map(|(k, v)| json_string_len(k) + 1 + v.json_len())
                        .sum::<usize>()
            }
        }
    }

    fn write_json(&self, out: &mut String) {
        match self {
            SecretJson::Null => out.push_str("null"),
            SecretJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            SecretJson::Number(n) => out.push_str(n),
            SecretJson::String(s) => push_json_string(s, out),
            SecretJson::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            SecretJson::Object(map) => {
                out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_string(k, out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

/// Appends `s` as a JSON string literal with Go `encoding/json` escaping.
///
/// Reserves the worst case first, so a secret is never copied by a growing reallocation
/// (a reallocation would leave an unwiped copy behind in the freed block).
pub(crate) fn write_json_string(s: &str, out: &mut String) {
    out.reserve(json_string_len(s));
    push_json_string(s, out);
}

/// The escaped form of one character, if it needs one (Go `encoding/json` rules).
fn json_escape(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\u{8}' => "\\b",
        '\u{c}' => "\\f",
        _ => return None,
    })
}

fn needs_u_escape(c: char) -> bool {
    (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}')
}

/// Length of `s` as a JSON string literal, quotes included.
fn json_string_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match json_escape(c) {
            Some(e) => e.len(),
            None if needs_u_escape(c) => 6,
            None => c.len_utf8(),
        })
        .sum::<usize>()
}

/// Appends `s` as a JSON string literal without reserving (the caller sized the buffer).
fn push_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match json_escape(c) {
            Some(e) => out.push_str(e),
            None if needs_u_escape(c) => push_u_escape(c as u32, out),
            None => out.push(c),
        }
    }
    out.push('"');
}

fn push_u_escape(code: u32, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12u32, 8, 4, 0] {
        let nibble = ((code >> shift) & 0xf) as usize;
        out.push(char::from(HEX[nibble]));
    }
}

impl fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Zeroize for SecretJson {
    fn zeroize(&mut self) {
        match self {
            SecretJson::Null | SecretJson::Bool(_) => {}
            SecretJson::Number(n) => n.zeroize(),
            SecretJson::String(s) => s.zeroize(),
            SecretJson::Array(items) => items.iter_mut().for_each(Zeroize::zeroize),
            SecretJson::Object(map) => map.values_mut().for_each(Zeroize::zeroize),
        }
        *self = SecretJson::Null;
    }
}

impl Drop for SecretJson {
    fn drop(&mut self) {
        // Strings wipe themselves (Zeroizing); the number text is a plain String.
        if let SecretJson::Number(n) = self {
            n.zeroize();
        }
    }
}

impl ZeroizeOnDrop for SecretJson {}

impl<'de> Deserialize<'de> for SecretJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretJsonVisitor)
    }
}

struct SecretJsonVisitor;

impl<'de> Visitor<'de> for SecretJsonVisitor {
    type Value = SecretJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<SecretJson, E> {
        Ok(SecretJson::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<SecretJson, E> {
        Ok(SecretJson::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<SecretJson, D::Error> {
        d.deserialize_any(SecretJsonVisitor)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<SecretJson, E> {
        Ok(SecretJson::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretJson, E> {
        Ok(SecretJson::Number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretJson, E> {
        Ok(SecretJson::Number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<SecretJson, E> {
        if v.is_finite() {
            Ok(SecretJson::Number(v.to_string()))
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretJson, E> {
        // Exact-size allocation, then one copy: no reallocation leaves a stray copy behind.
        let mut s = Zeroizing::new(String::with_capacity(v.len()));
        s.push_str(v);
        Ok(SecretJson::String(s))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretJson, E> {
        // Take ownership without copying; the Zeroizing wrapper wipes it on drop.
        Ok(SecretJson::String(Zeroizing::new(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SecretJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<SecretJson>()? {
            items.push(item);
        }
        Ok(SecretJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<SecretJson, A::Error> {
        let mut map = BTreeMap::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value::<SecretJson>()?;
            // A duplicate key replaces the earlier value (as Go does); the old one drops and wipes.
            map.insert(key, value);
        }
        Ok(SecretJson::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SecretJson {
        SecretJson::from_slice(text.as_bytes()).unwrap_or_default()
    }

    #[test]
    fn to_env_string_scalars_match_bank_vaults_cast() {
        let data = parse(r#"{"s":"x y","n":42,"neg":-7,"f":1.5,"t":true,"z":null}"#);
        let text = |k: &str| data.get(k).map(|v| v.to_env_string().to_string());
        assert_eq!(text("s").as_deref(), Some("x y"));
        assert_eq!(text("n").as_deref(), Some("42"));
        assert_eq!(text("neg").as_deref(), Some("-7"));
        assert_eq!(text("f").as_deref(), Some("1.5"));
        assert_eq!(text("t").as_deref(), Some("true"));
        assert_eq!(text("z").as_deref(), Some(""));
    }

    #[test]
    fn to_env_string_object_is_compact_sorted_json() {
        let data = parse(r#"{"o":{"b":[1,"<&>"],"a":"q\"\n"}}"#);
        let got = data.get("o").map(|v| v.to_env_string().to_string());
        assert_eq!(
            got.as_deref(),
            Some(r#"{"a":"q\"\n","b":[1,"\u003c\u0026\u003e"]}"#)
        );
    }

    #[test]
    fn to_json_buffer_is_sized_exactly() {
        let data = parse(r#"{"a":["x\u0001<\u2028>",1.5,null,true,false],"b\"":{"c":"é😀"}}"#);
        let json = data.to_json();
        assert_eq!(json.len(), data.json_len());
        assert_eq!(json.capacity(), json.len());
        let back = SecretJson::from_slice(json.as_bytes()).unwrap_or_default();
        assert_eq!(back, data);
    }

    #[test]
    fn debug_any_value_prints_redacted() {
        let data = parse(r#"{"password":"hunter2"}"#);
        assert_eq!(format!("{data:?}"), "<redacted>");
        assert_eq!(format!("{:?}", data.get("password")), "Some(<redacted>)");
    }

    #[test]
    fn zeroize_object_leaves_null() {
        let mut data = parse(r#"{"a":"b","n":1}"#);
        data.zeroize();
        assert_eq!(data, SecretJson::Null);
    }

    #[test]
    fn from_slice_escaped_and_unicode_strings_decode() {
        let data = parse(r#"{"k":"a\u00e9\ud83d\ude00\\"}"#);
        assert_eq!(data.get("k").and_then(SecretJson::as_str), Some("aé😀\\"));
    }

    #[test]
    fn from_slice_duplicate_key_last_wins() {
        let data = parse(r#"{"k":"1","k":"2"}"#);
        assert_eq!(data.get("k").and_then(SecretJson::as_str), Some("2"));
    }

    #[test]
    fn from_slice_syntax_error_does_not_quote_input() {
        let err = SecretJson::from_slice(br#"{"k":"topsecret"#).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!msg.is_empty());
        assert!(!msg.contains("topsecret"), "{msg}");
    }
}
