//! `SecretJson`: built from real Vault response shapes, redacted in Debug, bounded on hostile
//! input, and turned into env text the way Bank-Vaults does.

use serde::Deserialize;
use vault_env::secret::SecretJson;
use zeroize::Zeroize;

/// A KV v2 read answer as OpenBao returns it.
const KV2_ANSWER: &str = r#"{
  "request_id": "6bd2fa6b-5ef6-0d5c-64d7-e4a1c3d2a0b1",
  "lease_id": "",
  "renewable": false,
  "lease_duration": 0,
  "data": {
    "data": {"password": "s3cr3t-value", "port": 5432, "enabled": true, "tags": ["a", "b"]},
    "metadata": {"created_time": "2026-11-29T20:00:00Z", "deletion_time": "", "destroyed": false, "version": 2}
  },
  "wrap_info": null,
  "warnings": null,
  "auth": null
}"#;

#[derive(Deserialize)]
struct Answer {
    data: SecretJson,
    lease_duration: u64,
}

#[test]
fn deserialize_inside_struct_keeps_nested_data() {
    let answer: Answer = serde_json::from_str(KV2_ANSWER).expect("answer parses");
    assert_eq!(answer.lease_duration, 0);
    let inner = answer.data.get("data").expect("kv2 data");
    assert_eq!(
        inner.get("password").and_then(SecretJson::as_str),
        Some("s3cr3t-value")
    );
    assert_eq!(
        inner
            .get("port")
            .map(|v| v.to_env_string().to_string())
            .as_deref(),
        Some("5432")
    );
    assert_eq!(
        inner
            .get("enabled")
            .map(|v| v.to_env_string().to_string())
            .as_deref(),
        Some("true")
    );
    assert_eq!(
        inner
            .get("tags")
            .map(|v| v.to_env_string().to_string())
            .as_deref(),
        Some(r#"["a","b"]"#)
    );
    assert_eq!(
        answer
            .data
            .get("metadata")
            .and_then(|m| m.get("version"))
            .map(SecretJson::kind),
        Some("number")
    );
    assert!(inner.get("nope").is_none());
    assert!(inner.get("password").and_then(|p| p.get("x")).is_none());
    assert_eq!(inner.as_object().map(|m| m.len()), Some(4));
}

#[test]
fn debug_of_parsed_answer_never_shows_values() {
    let root = SecretJson::from_slice(KV2_ANSWER.as_bytes()).expect("parses");
    let shown = format!("{root:?} {:?} {:#?}", root.get("data"), root.get("data"));
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn numbers_keep_exact_integer_text() {
    let root = SecretJson::from_slice(
        br#"{"max":18446744073709551615,"min":-9223372036854775808,"f":0.1,"e":1e3,"z":-0}"#,
    )
    .expect("parses");
    let text = |k: &str| root.get(k).map(|v| v.to_env_string().to_string());
    assert_eq!(text("max").as_deref(), Some("18446744073709551615"));
    assert_eq!(text("min").as_deref(), Some("-9223372036854775808"));
    assert_eq!(text("f").as_deref(), Some("0.1"));
    assert_eq!(text("e").as_deref(), Some("1000"));
    assert_eq!(text("z").as_deref(), Some("-0"));
}

#[test]
fn hostile_input_is_rejected_without_panic() {
    // Nesting beyond serde_json's recursion limit: an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(SecretJson::from_slice(deep.as_bytes()).is_err());
    // A number outside f64's range.
    assert!(SecretJson::from_slice(b"1e400").is_err());
    // Invalid UTF-8 inside a string.
    assert!(SecretJson::from_slice(b"\"\xff\xfe\"").is_err());
    // Lone surrogate escape.
    assert!(SecretJson::from_slice(br#""\ud800""#).is_err());
    // Trailing garbage.
    assert!(SecretJson::from_slice(b"{} x").is_err());
}

#[test]
fn zeroize_clears_every_string() {
    let mut root = SecretJson::from_slice(KV2_ANSWER.as_bytes()).expect("parses");
    root.zeroize();
    assert_eq!(root, SecretJson::Null);
    assert_eq!(root.to_env_string().as_str(), "");
}

#[test]
fn clone_is_independent_and_equal() {
    let root = SecretJson::from_slice(KV2_ANSWER.as_bytes()).expect("parses");
    let mut copy = root.clone();
    assert_eq!(copy, root);
    copy.zeroize();
    assert_ne!(copy, root);
    assert_eq!(
        root.get("data")
            .and_then(|d| d.get("data"))
            .and_then(|d| d.get("password"))
            .and_then(SecretJson::as_str),
        Some("s3cr3t-value")
    );
}
