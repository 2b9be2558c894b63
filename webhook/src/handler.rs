//! From a request body to a response body: parses the AdmissionReview, runs the decision and
//! wraps the answer in the API version that was asked. Shared by the HTTPS server and tests.
//!
//! # Security
//!
//! The body is untrusted. Parse errors are answered with a 400 review whose message comes from
//! the JSON parser; nothing of the body is logged.

use serde_json::Value;

use crate::admission::{API_VERSIONS, AdmissionResponse, AdmissionReview};
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
    /// The response AdmissionReview.
    pub body: Value,
    pub outcome: Outcome,
    pub meta: ReviewMeta,
}

/// Answers one request body.
pub async fn answer(mutator: &Mutator, body: &[u8]) -> Answer {
    let review: AdmissionReview = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => {
            return bad_review(
                API_VERSIONS[0],
                format!("the body is not an AdmissionReview: {error}"),
            );
        }
    };
    let Some(api_version) = API_VERSIONS.iter().find(|v| **v == review.api_version) else {
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
    let meta = ReviewMeta {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone().unwrap_or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|o| o.pointer("/metadata/generateName"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        }),
        kind: request.kind.kind.clone(),
        operation: request.operation.clone(),
        dry_run: request.dry_run.unwrap_or(false),
    };
    let outcome = mutator.review(&request).await;
    Answer {
        http_status: 200,
        body: outcome.response.clone().into_review(api_version),
        outcome,
        meta,
    }
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
                body: response.clone().into_review(&api_version),
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

fn bad_review(api_version: &str, message: String) -> Answer {
    let response = AdmissionResponse::invalid("", message);
    Answer {
        http_status: 400,
        body: response.clone().into_review(api_version),
        outcome: Outcome {
            response,
            decision: Decision::Invalid,
            injected_containers: 0,
        },
        meta: ReviewMeta::default(),
    }
}
