//! AdmissionReview wire types for `admission.k8s.io/v1` and `v1beta1` (their request and
//! response fields are the same; only `apiVersion` differs), and the JSON Patch operations
//! the webhook returns.
//!
//! # Security
//!
//! A review body is attacker-influenced (object fields come from the user creating it). It is
//! parsed into these types with a size limit enforced before (see [`crate::server`]); the
//! object itself stays a [`serde_json::Value`] until the decision parses it as a Pod.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The two admission API versions the webhook answers.
pub const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// An AdmissionReview as sent by the API server.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1` or `admission.k8s.io/v1beta1`.
    #[serde(default)]
    pub api_version: String,
    /// Must be `AdmissionReview`.
    #[serde(default)]
    pub kind: String,
    /// The request; absent in a malformed review.
    pub request: Option<AdmissionRequest>,
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
pub struct AdmissionRequest {
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
    /// The object being admitted.
    #[serde(default)]
    pub object: Option<Value>,
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
    /// Base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
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
    ///
    /// # Errors
    ///
    /// Serialising the operations cannot fail for these types; the error is passed on.
    pub fn with_patch(mut self, ops: &[PatchOp]) -> Result<Self, serde_json::Error> {
        let json = serde_json::to_vec(ops)?;
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        self.patch_type = Some("JSONPatch".to_owned());
        Ok(self)
    }

    /// Adds admission warnings (shown by kubectl).
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// The decoded JSON Patch, if any.
    pub fn decoded_patch(&self) -> Option<Value> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.patch.as_deref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Wraps the response in a review of the given API version.
    pub fn into_review(self, api_version: &str) -> Value {
        serde_json::json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": self,
        })
    }
}

/// One JSON Patch (RFC 6902) operation; only `add` is needed (it also replaces an existing
/// object member).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PatchOp {
    /// Always `add`.
    pub op: &'static str,
    /// A JSON Pointer built by [`pointer`].
    pub path: String,
    /// The value to add.
    pub value: Value,
}

impl PatchOp {
    /// An `add` operation at the pointer made of `tokens`.
    pub fn add(tokens: &[&str], value: Value) -> Self {
        Self {
            op: "add",
            path: pointer(tokens),
            value,
        }
    }
}

/// Builds a JSON Pointer (RFC 6901) from unescaped reference tokens.
pub fn pointer(tokens: &[&str]) -> String {
    let mut out = String::new();
    for token in tokens {
        out.push('/');
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
        let ops = [PatchOp::add(&["spec", "x"], serde_json::json!(1))];
        let response = AdmissionResponse::allow("u")
            .with_patch(&ops)
            .unwrap_or_else(|e| {
                panic!("serialise: {e}");
            });
        assert_eq!(
            response.decoded_patch(),
            Some(serde_json::json!([{"op": "add", "path": "/spec/x", "value": 1}]))
        );
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
    }

    #[test]
    fn into_review_keeps_requested_version() {
        let review = AdmissionResponse::deny("u", "no").into_review(API_VERSIONS[1]);
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(review["response"]["status"]["code"], 403);
        assert_eq!(review["response"]["allowed"], false);
    }
}
