//! AdmissionReview wire types for `admission.k8s.io/v1` and `v1beta1` (their request and
//! response fields are the same; only `apiVersion` differs), and the JSON Patch operations
//! the webhook returns.
//!
//! # Security
//!
//! A review body is attacker-influenced (object fields come from the user creating it). It is
//! parsed into these types with a size limit enforced before (see [`crate::server`]); the
//! object itself stays raw JSON text borrowed from the body (syntax-checked, not yet
//! interpreted) until the decision parses it once, as a Pod or, for Secrets and ConfigMaps,
//! as a [`serde_json::Value`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The two admission API versions the webhook answers.
pub const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The entry of [`API_VERSIONS`] equal to `api_version`, if any.
pub fn known_api_version(api_version: &str) -> Option<&'static str> {
    API_VERSIONS.into_iter().find(|v| *v == api_version)
}

/// An AdmissionReview as sent by the API server, borrowing the object from the body.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview<'a> {
    /// `admission.k8s.io/v1` or `admission.k8s.io/v1beta1`.
    #[serde(default)]
    pub api_version: String,
    /// Must be `AdmissionReview`.
    #[serde(default)]
    pub kind: String,
    /// The request; absent in a malformed review.
    #[serde(borrow)]
    pub request: Option<AdmissionRequest<'a>>,
}

/// Group, version and kind of the admitted object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// The fields of `request` the webhook uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    /// Echoed in the response.
    pub uid: String,
    /// Kind of the object.
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// Object name; absent for `generateName` pods.
    #[serde(default)]
    pub name: Option<String>,
    /// Object namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    #[serde(default)]
    pub operation: String,
    /// The request will not be persisted.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// The object being admitted, as raw JSON text (`None` when absent or `null`). Parsed
    /// once by the decision, straight into the type it needs.
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
}

/// A `metav1.Status` subset carried by a refused review.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// HTTP-like code: 400 for invalid input, 403 for a policy denial.
    pub code: u16,
    /// A message the user can act on.
    pub message: String,
}

/// The response half of an AdmissionReview.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The JSON Patch (base64 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// Allowed without a patch.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    /// Refused by policy (403).
    pub fn deny(uid: &str, message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            status: Some(Status {
                code: 403,
                message: message.into(),
            }),
            ..Self::allow(uid)
        }
    }

    /// Refused because the review or object is malformed (400).
    pub fn invalid(uid: &str, message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            status: Some(Status {
                code: 400,
                message: message.into(),
            }),
            ..Self::allow(uid)
        }
    }

    /// Allowed with a JSON Patch.
    pub fn with_patch(mut self, patch: JsonPatch) -> Self {
        self.patch = Some(PatchText(patch.into_json()));
        self.patch_type = Some("JSONPatch".to_owned());
        self
    }

    /// Adds admission warnings (shown by kubectl).
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// The JSON Patch as a value, if any.
    pub fn decoded_patch(&self) -> Option<Value> {
        serde_json::from_slice(self.patch.as_ref()?.as_json()).ok()
    }

    /// Wraps a copy of the response in a review of the given API version.
    pub fn to_review(&self, api_version: &str) -> Value {
        serde_json::json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": self,
        })
    }

    /// Appends the review of the given API version wrapping this response, as JSON text: the
    /// same document as [`Self::to_review`], written straight from the fields. No [`Value`]
    /// tree is built, and the patch is base64-encoded directly into `out` without a JSON
    /// escaping pass (the base64 alphabet needs none): it is most of the bytes.
    ///
    /// # Errors
    ///
    /// Only if serialisation fails, which these types do not do.
    pub fn write_review(&self, api_version: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"apiVersion":"#);
        serde_json::to_writer(&mut *out, api_version)?;
        out.extend_from_slice(br#","kind":"AdmissionReview","response":{"uid":"#);
        serde_json::to_writer(&mut *out, &self.uid)?;
        out.extend_from_slice(if self.allowed {
            br#","allowed":true"#
        } else {
            br#","allowed":false"#
        });
        if let Some(status) = &self.status {
            out.extend_from_slice(br#","status":"#);
            serde_json::to_writer(&mut *out, status)?;
        }
        if let Some(patch) = &self.patch {
            out.extend_from_slice(br#","patch":""#);
            patch.append_base64(out);
            out.push(b'"');
        }
        if let Some(patch_type) = &self.patch_type {
            out.extend_from_slice(br#","patchType":"#);
            serde_json::to_writer(&mut *out, patch_type)?;
        }
        if !self.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            serde_json::to_writer(&mut *out, &self.warnings)?;
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// The JSON Patch of a response, kept as JSON text; base64 (as the wire carries it) is made
/// only when the response is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchText(Vec<u8>);

impl PatchText {
    /// From the base64 text of a response's `patch` field.
    ///
    /// # Errors
    ///
    /// When the text is not standard, padded base64.
    pub fn from_base64(text: &str) -> Result<Self, base64_simd::Error> {
        base64_simd::STANDARD.decode_type(text).map(Self)
    }

    /// The patch as JSON text.
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }

    /// Length of the base64 text.
    pub fn base64_len(&self) -> usize {
        base64_simd::STANDARD.encoded_length(self.0.len())
    }

    /// Appends the base64 text to `out` (SIMD: several times faster than a scalar encoder on
    /// a patch of several kilobytes).
    fn append_base64(&self, out: &mut Vec<u8>) {
        base64_simd::STANDARD.encode_append(&self.0, out);
    }
}

impl Serialize for PatchText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64_simd::STANDARD.encode_type::<String>(&self.0))
    }
}

impl<'de> Deserialize<'de> for PatchText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// A JSON Patch (RFC 6902) written straight to its JSON text, one `add` operation at a time
/// (`add` also replaces an existing object member, so it is the only operation needed).
/// Values are serialised in place: no intermediate [`Value`] tree is built.
#[derive(Clone, Debug)]
pub struct JsonPatch {
    json: Vec<u8>,
    ops: usize,
}

impl Default for JsonPatch {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonPatch {
    /// An empty patch.
    pub fn new() -> Self {
        let mut json = Vec::with_capacity(4096);
        json.push(b'[');
        Self { json, ops: 0 }
    }

    /// Appends `{"op":"add","path":<pointer of tokens>,"value":<value>}`.
    ///
    /// # Errors
    ///
    /// When `value` fails to serialise (not expected for the webhook's types); the patch is
    /// then unusable.
    pub fn add<T: Serialize + ?Sized>(
        &mut self,
        tokens: &[&str],
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.begin_add(tokens)?;
        serde_json::to_writer(&mut self.json, value)?;
        self.json.push(b'}');
        self.ops += 1;
        Ok(())
    }

    /// Appends an `add` whose value is an array: the items of `head`, then those of `tail`
    /// (serialised once, shared by several operations).
    ///
    /// # Errors
    ///
    /// As [`Self::add`].
    pub fn add_array<T: Serialize>(
        &mut self,
        tokens: &[&str],
        head: &[T],
        tail: &JsonItems,
    ) -> Result<(), serde_json::Error> {
        self.begin_add(tokens)?;
        self.json.push(b'[');
        write_items(&mut self.json, head)?;
        if !head.is_empty() && !tail.json.is_empty() {
            self.json.push(b',');
        }
        self.json.extend_from_slice(&tail.json);
        self.json.extend_from_slice(b"]}");
        self.ops += 1;
        Ok(())
    }

    /// Writes `{"op":"add","path":<pointer>,"value":` (after a comma unless first).
    fn begin_add(&mut self, tokens: &[&str]) -> Result<(), serde_json::Error> {
        if self.ops > 0 {
            self.json.push(b',');
        }
        self.json.extend_from_slice(br#"{"op":"add","path":"#);
        serde_json::to_writer(&mut self.json, &pointer(tokens))?;
        self.json.extend_from_slice(br#","value":"#);
        Ok(())
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// The patch as JSON text.
    pub fn into_json(mut self) -> Vec<u8> {
        self.json.push(b']');
        self.json
    }
}

/// Array items serialised once to JSON text (comma-separated, without brackets) for a patch
/// that repeats them, e.g. the env entries and mounts every injected container gets:
/// serialising many short strings is most of what building a patch costs.
#[derive(Clone, Debug)]
pub struct JsonItems {
    json: Vec<u8>,
}

impl JsonItems {
    /// Serialises `items`.
    ///
    /// # Errors
    ///
    /// When an item fails to serialise (not expected for the webhook's types).
    pub fn new<T: Serialize>(items: &[T]) -> Result<Self, serde_json::Error> {
        let mut json = Vec::new();
        write_items(&mut json, items)?;
        Ok(Self { json })
    }
}

/// Appends `items` as JSON values separated by commas (the inside of an array).
fn write_items<T: Serialize>(out: &mut Vec<u8>, items: &[T]) -> Result<(), serde_json::Error> {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, item)?;
    }
    Ok(())
}

/// Builds a JSON Pointer (RFC 6901) from unescaped reference tokens.
pub fn pointer(tokens: &[&str]) -> String {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for token in tokens {
        out.push('/');
        // Nearly every token (field names, indexes) has nothing to escape.
        if !token.contains(['~', '/']) {
            out.push_str(token);
            continue;
        }
        for c in token.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_tilde_and_slash() {
        assert_eq!(
            pointer(&["metadata", "annotations", "strongroom.dev/injected"]),
            "/metadata/annotations/strongroom.dev~1injected"
        );
        assert_eq!(pointer(&["a~b", "-"]), "/a~0b/-");
        assert_eq!(pointer(&[]), "");
    }

    #[test]
    fn with_patch_round_trips_base64() {
        let mut patch = JsonPatch::new();
        patch
            .add(&["spec", "x"], &1)
            .unwrap_or_else(|e| panic!("serialise: {e}"));
        patch
            .add(&["metadata", "a/b"], &["v"])
            .unwrap_or_else(|e| panic!("serialise: {e}"));
        assert_eq!(patch.len(), 2);
        let response = AdmissionResponse::allow("u").with_patch(patch);
        // Through the wire form (base64 in the `patch` field) and back.
        let mut text = Vec::new();
        response
            .write_review(API_VERSIONS[0], &mut text)
            .unwrap_or_else(|e| panic!("write: {e}"));
        let wire: Value = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse: {e}"));
        let encoded = wire["response"]["patch"].as_str().unwrap_or_default();
        assert!(
            encoded.len() > 8 && encoded.len().is_multiple_of(4),
            "{encoded}"
        );
        let response: AdmissionResponse = serde_json::from_value(wire["response"].clone())
            .unwrap_or_else(|e| panic!("deserialise: {e}"));
        assert_eq!(
            response.decoded_patch(),
            Some(serde_json::json!([
                {"op": "add", "path": "/spec/x", "value": 1},
                {"op": "add", "path": "/metadata/a~1b", "value": ["v"]},
            ]))
        );
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
    }

    #[test]
    fn write_review_is_the_same_document_as_to_review() {
        let mut patch = JsonPatch::new();
        patch
            .add(&["metadata", "annotations", "a/b"], "quote \" and \\")
            .unwrap_or_else(|e| panic!("serialise: {e}"));
        for response in [
            AdmissionResponse::allow("u-1")
                .with_patch(patch)
                .with_warnings(vec!["w \"1\"".to_owned()]),
            AdmissionResponse::deny("u-2", "no \u{1} way"),
            AdmissionResponse::allow("u-3"),
        ] {
            for version in API_VERSIONS {
                let mut text = Vec::new();
                response
                    .write_review(version, &mut text)
                    .unwrap_or_else(|e| panic!("write: {e}"));
                let written: Value =
                    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse: {e}"));
                assert_eq!(written, response.to_review(version));
            }
        }
    }

    #[test]
    fn patch_text_not_base64_is_refused() {
        assert!(PatchText::from_base64("not base64!").is_err());
        let parsed: Result<AdmissionResponse, _> =
            serde_json::from_str(r#"{"uid":"u","allowed":true,"patch":"\"}"#);
        assert!(parsed.is_err());
        for len in 0..8 {
            let patch = PatchText(vec![b'x'; len]);
            let mut out = b"prefix".to_vec();
            patch.append_base64(&mut out);
            assert_eq!(out.len(), 6 + patch.base64_len());
            let text = std::str::from_utf8(&out[6..]).unwrap_or_default();
            // The same text as the scalar `base64` crate's standard engine.
            assert_eq!(
                text,
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &patch.0)
            );
            assert_eq!(PatchText::from_base64(text).ok(), Some(patch));
        }
    }

    #[test]
    fn add_array_joins_head_and_shared_tail_as_one_array() {
        let tail = JsonItems::new(&["t1", "t\"2"]).unwrap_or_else(|e| panic!("items: {e}"));
        let empty = JsonItems::new::<&str>(&[]).unwrap_or_else(|e| panic!("items: {e}"));
        let mut patch = JsonPatch::new();
        for (head, tail) in [
            (&["h1"][..], &tail),
            (&[][..], &tail),
            (&["h1", "h2"][..], &empty),
            (&[][..], &empty),
        ] {
            patch
                .add_array(&["a"], head, tail)
                .unwrap_or_else(|e| panic!("add: {e}"));
        }
        let value: Value =
            serde_json::from_slice(&patch.into_json()).unwrap_or_else(|e| panic!("parse: {e}"));
        let values: Vec<&Value> = value
            .as_array()
            .map(|ops| ops.iter().map(|op| &op["value"]).collect())
            .unwrap_or_default();
        assert_eq!(
            values,
            [
                &serde_json::json!(["h1", "t1", "t\"2"]),
                &serde_json::json!(["t1", "t\"2"]),
                &serde_json::json!(["h1", "h2"]),
                &serde_json::json!([]),
            ]
        );
    }

    #[test]
    fn json_patch_empty_is_empty_array() {
        let patch = JsonPatch::new();
        assert!(patch.is_empty());
        assert_eq!(patch.into_json(), b"[]");
    }

    #[test]
    fn review_object_borrowed_raw_null_is_none() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":null}}"#;
        let review: AdmissionReview<'_> =
            serde_json::from_slice(body).unwrap_or_else(|e| panic!("parse: {e}"));
        assert!(review.request.is_some_and(|r| r.object.is_none()));
        let body = br#"{"request":{"uid":"u","object":{"kind":"Pod", "x": [1, 2]}}}"#;
        let review: AdmissionReview<'_> =
            serde_json::from_slice(body).unwrap_or_else(|e| panic!("parse: {e}"));
        let object = review.request.and_then(|r| r.object).map(RawValue::get);
        assert_eq!(object, Some(r#"{"kind":"Pod", "x": [1, 2]}"#));
    }

    #[test]
    fn into_review_keeps_requested_version() {
        let review = AdmissionResponse::deny("u", "no").to_review(API_VERSIONS[1]);
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(review["response"]["status"]["code"], 403);
        assert_eq!(review["response"]["allowed"], false);
    }
}
