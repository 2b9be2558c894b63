//! From a request body to a response body: parses the AdmissionReview, runs the decision and
//! wraps the answer in the API version that was asked. Shared by the HTTPS server and tests.
//!
//! # Security
//!
//! The body is untrusted. Parse errors are answered with a 400 review whose message comes from
//! the JSON parser; nothing of the body is logged.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::admission::{
    API_VERSIONS, AdmissionResponse, AdmissionReview, PatchText, known_api_version,
};
use crate::mutate::{Decision, Mutator, Outcome};

/// Fields of the request kept for the per-review log line and metrics (no env values).
#[derive(Clone, Debug, Default)]
pub struct ReviewMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub operation: String,
    pub dry_run: bool,
}

/// The answer to one body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status: 200 for every parsed review (even when denied), 400 for a body that is
    /// not an AdmissionReview.
    pub http_status: u16,
    /// `apiVersion` of the response review: the one the request used.
    pub api_version: &'static str,
    /// The decision; its `response` is the body of the response review.
    pub outcome: Outcome,
    pub meta: ReviewMeta,
}

impl Answer {
    /// The response AdmissionReview as JSON text, as the server sends it.
    pub fn to_json(&self) -> Vec<u8> {
        // Sized for the patch up front: growing a many-kilobyte buffer by doubling copies it
        // several times over.
        let patch_len = self
            .outcome
            .response
            .patch
            .as_ref()
            .map_or(0, PatchText::base64_len);
        let mut body = Vec::with_capacity(patch_len + 512);
        if self
            .outcome
            .response
            .write_review(self.api_version, &mut body)
            .is_err()
        {
            body.clear();
        }
        body
    }

    /// The response AdmissionReview as a JSON value (the same document as [`Self::to_json`]).
    pub fn body(&self) -> Value {
        self.outcome.response.to_review(self.api_version)
    }
}

/// Answers one request body.
pub async fn answer(mutator: &Mutator, body: &[u8]) -> Answer {
    let review: AdmissionReview<'_> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => {
            return bad_review(
                API_VERSIONS[0],
                format!("the body is not an AdmissionReview: {error}"),
            );
        }
    };
    let Some(api_version) = known_api_version(&review.api_version) else {
        return bad_review(
            API_VERSIONS[0],
            format!(
                "unsupported apiVersion {:?}; expected admission.k8s.io/v1 or v1beta1",
                review.api_version
            ),
        );
    };
    if review.kind != "AdmissionReview" {
        return bad_review(api_version, "kind must be AdmissionReview".to_owned());
    }
    let Some(request) = review.request else {
        return bad_review(api_version, "the review has no request".to_owned());
    };
    let (outcome, generate_name) = mutator.review_named(&request).await;
    let meta = ReviewMeta {
        uid: request.uid,
        namespace: request.namespace.unwrap_or_default(),
        name: request.name.unwrap_or_else(|| {
            // The Pod's, when the decision parsed one; otherwise read from the raw object.
            generate_name.unwrap_or_else(|| raw_generate_name(request.object))
        }),
        kind: request.kind.kind,
        operation: request.operation,
        dry_run: request.dry_run.unwrap_or(false),
    };
    Answer {
        http_status: 200,
        api_version,
        outcome,
        meta,
    }
}

/// `metadata.generateName` of the raw object, or empty (read for the log line when the
/// request has no name). Only maps are looked into, as a JSON pointer would (a derived struct
/// would also accept an array in place of the metadata map).
fn raw_generate_name(object: Option<&RawValue>) -> String {
    fn field<'a>(raw: &'a RawValue, name: &str) -> Option<&'a RawValue> {
        let mut fields: HashMap<Cow<'a, str>, &'a RawValue> =
            serde_json::from_str(raw.get()).ok()?;
        fields.remove(name)
    }
    object
        .and_then(|object| field(object, "metadata"))
        .and_then(|metadata| field(metadata, "generateName"))
        .and_then(|name| serde_json::from_str::<String>(name.get()).ok())
        .unwrap_or_default()
}

/// The benchmark baseline's answer: `allowed: true` for the uid, no decision.
pub fn answer_noop(body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    struct UidOnly {
        #[serde(rename = "apiVersion", default)]
        api_version: String,
        request: Option<Uid>,
    }
    #[derive(serde::Deserialize)]
    struct Uid {
        uid: String,
    }
    match serde_json::from_slice::<UidOnly>(body) {
        Ok(UidOnly {
            api_version,
            request: Some(Uid { uid }),
        }) => {
            let response = AdmissionResponse::allow(&uid);
            Answer {
                http_status: 200,
                api_version: known_api_version(&api_version).unwrap_or(API_VERSIONS[0]),
                outcome: Outcome {
                    response,
                    decision: Decision::NotOurs,
                    injected_containers: 0,
                },
                meta: ReviewMeta {
                    uid,
                    ..ReviewMeta::default()
                },
            }
        }
        _ => bad_review(
            API_VERSIONS[0],
            "the body is not an AdmissionReview".to_owned(),
        ),
    }
}

fn bad_review(api_version: &'static str, message: String) -> Answer {
    let response = AdmissionResponse::invalid("", message);
    Answer {
        http_status: 400,
        api_version,
        outcome: Outcome {
            response,
            decision: Decision::Invalid,
            injected_containers: 0,
        },
        meta: ReviewMeta::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_generate_name_reads_the_string_and_is_empty_otherwise() {
        let raw =
            |text: &str| RawValue::from_string(text.to_owned()).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (
                r#"{"kind":"Secret","metadata":{"generateName":"db-","x":1}}"#,
                "db-",
            ),
            (r#"{"metadata":{"name":"n"}}"#, ""),
            (r#"{"metadata":{"generateName":7}}"#, ""),
            (r#"{"metadata":["generateName"]}"#, ""),
            (r#"[1,2]"#, ""),
        ];
        for (text, want) in cases {
            assert_eq!(raw_generate_name(Some(&raw(text))), want, "{text}");
        }
        assert_eq!(raw_generate_name(None), "");
    }
}
