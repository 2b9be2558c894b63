//! Offline injection (`vault-secrets-webhook inject -f FILE`): reads Pods and workload
//! templates (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, and `List`s of
//! them), runs each pod (template) through the same [`Mutator::review_pod`] the server uses,
//! applies the resulting JSON Patch and prints the objects, like `istioctl kube-inject`.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::mutate::{Decision, Mutator};

/// Why a manifest could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {index} is not valid YAML or JSON")]
    ParseDocument {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{kind} {name}: the pod template is not a valid Pod spec: {reason}")]
    InvalidTemplate {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{kind} {name}: {message}")]
    Refused {
        kind: String,
        name: String,
        message: String,
    },
    #[error("{kind} {name}: applying the patch failed")]
    ApplyPatch {
        kind: String,
        name: String,
        #[source]
        source: json_patch::PatchError,
    },
    #[error("writing the output")]
    Serialize(#[source] serde_yaml::Error),
}

/// One injected document and the warnings for it.
#[derive(Debug, Clone)]
pub struct Injected {
    pub object: Value,
    pub warnings: Vec<String>,
    pub decision: Option<Decision>,
}

/// Parses a multi-document YAML (or JSON) stream.
///
/// # Errors
///
/// [`InjectError::ParseDocument`] for a document that does not parse.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, InjectError> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|source| InjectError::ParseDocument { index, source })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Injects every document.
///
/// # Errors
///
/// [`InjectError`] for a template that is invalid or refused by policy.
pub async fn inject_documents(
    mutator: &Mutator,
    documents: Vec<Value>,
    default_namespace: &str,
) -> Result<Vec<Injected>, InjectError> {
    let mut out = Vec::with_capacity(documents.len());
    for document in documents {
        out.push(inject_object(mutator, document, default_namespace).await?);
    }
    Ok(out)
}

/// Injects one object (recursing into `List` items).
///
/// # Errors
///
/// See [`inject_documents`].
pub async fn inject_object(
    mutator: &Mutator,
    mut object: Value,
    default_namespace: &str,
) -> Result<Injected, InjectError> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_namespace)
        .to_owned();
    let mut warnings = Vec::new();
    if kind == "List" {
        let mut decision = None;
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                let injected =
                    Box::pin(inject_object(mutator, item.take(), default_namespace)).await?;
                *item = injected.object;
                warnings.extend(injected.warnings);
                decision = decision.or(injected.decision);
            }
        }
        return Ok(Injected {
            object,
            warnings,
            decision,
        });
    }
    let template_pointer = match kind.as_str() {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => {
            return Ok(Injected {
                object,
                warnings,
                decision: None,
            });
        }
    };
    let Some(template) = object.pointer_mut(template_pointer) else {
        return Ok(Injected {
            object,
            warnings,
            decision: None,
        });
    };
    // A pod template is a Pod without apiVersion/kind; the decision sees the same shape the
    // API server would send when the controller creates the pod.
    let mut pod_value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if pod_value["metadata"].get("namespace").is_none() && !namespace.is_empty() {
        pod_value["metadata"]["namespace"] = json!(namespace);
    }
    let pod: Pod =
        serde_json::from_value(pod_value.clone()).map_err(|e| InjectError::InvalidTemplate {
            kind: kind.clone(),
            name: name.clone(),
            reason: e.to_string(),
        })?;
    let outcome = mutator.review_pod("inject", &pod, &namespace).await;
    let response = &outcome.response;
    warnings.extend(response.warnings.iter().cloned());
    if !response.allowed {
        let message = response
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        return Err(InjectError::Refused {
            kind,
            name,
            message,
        });
    }
    if let Some(patch) = response.decoded_patch() {
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| InjectError::InvalidTemplate {
                kind: kind.clone(),
                name: name.clone(),
                reason: e.to_string(),
            })?;
        json_patch::patch(&mut pod_value, &patch).map_err(|source| InjectError::ApplyPatch {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
        if template_pointer.is_empty() {
            *template = pod_value;
        } else {
            if let Some(meta) = pod_value["metadata"].as_object_mut()
                && template
                    .get("metadata")
                    .and_then(|m| m.get("namespace"))
                    .is_none()
            {
                // The namespace was only added for the decision.
                meta.remove("namespace");
            }
            template["metadata"] = pod_value["metadata"].take();
            template["spec"] = pod_value["spec"].take();
        }
    }
    Ok(Injected {
        object,
        warnings,
        decision: Some(outcome.decision),
    })
}

/// Renders documents as a YAML stream.
///
/// # Errors
///
/// [`InjectError::Serialize`] (not expected for JSON values).
pub fn render_yaml(documents: &[Injected]) -> Result<String, InjectError> {
    let mut out = String::new();
    for document in documents {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&document.object).map_err(InjectError::Serialize)?);
    }
    Ok(out)
}
