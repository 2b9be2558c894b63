//! Every reference form resolved by the real `vault-env` binary against a real OpenBao dev
//! server, checked in the environment of the app it execs; plus the request economy counted
//! from OpenBao's audit log.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use base64::Engine;
use serde_json::json;
use strongroom_testbed::TRANSIT_KEY;
use support::{Bed, run, with};

#[test]
fn resolve_kv1_and_kv2_latest_and_pinned_versions() {
    let bed = Bed::start();
    bed.bao
        .write_kv1("legacy", json!({ "key": "v1-value" }))
        .unwrap();
    assert_eq!(
        bed.bao
            .write_kv2("app/db", json!({ "pass": "first" }))
            .unwrap(),
        1
    );
    assert_eq!(
        bed.bao
            .write_kv2("app/db", json!({ "pass": "second", "port": 5432 }))
            .unwrap(),
        2
    );
    let env = with(
        &bed.env(),
        &[
            ("KV1", "vault:kv1/legacy#key"),
            ("LATEST", "vault:secret/data/app/db#pass"),
            ("PINNED", "vault:secret/data/app/db#pass#1"),
            ("NUMBER", "vault:secret/data/app/db#port"),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("KV1"), Some("v1-value"));
    assert_eq!(report.get("LATEST"), Some("second"));
    assert_eq!(report.get("PINNED"), Some("first"));
    assert_eq!(report.get("NUMBER"), Some("5432"));
    // The pinned read went out as ?version=1: two distinct reads of the same path.
    assert_eq!(bed.reads("secret/data/app/db"), 2);
}

#[test]
fn resolve_templates_render_functions_over_the_secret() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("aws", json!({ "id": "AKIA1", "key": "s3cr3t" }))
        .unwrap();
    let env = with(
        &bed.env(),
        &[
            ("B64", "vault:secret/data/aws#${.key | b64enc}"),
            (
                "TEXT",
                "vault:secret/data/aws#id=${.id} key=${.key | upper}",
            ),
            ("SUM", "vault:secret/data/aws#${.key | sha256sum}"),
        ],
    );
    let report = run(&env, &[]).report();
    let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t");
    assert_eq!(report.get("B64"), Some(b64.as_str()));
    assert_eq!(report.get("TEXT"), Some("id=AKIA1 key=S3CR3T"));
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"s3cr3t"));
    assert_eq!(report.get("SUM"), Some(sum.as_str()));
    // One read for the three variables.
    assert_eq!(bed.reads("secret/data/aws"), 1);
}

#[test]
fn resolve_inline_references_several_per_value() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("db", json!({ "user": "alice", "pass": "p@ss" }))
        .unwrap();
    bed.bao
        .write_kv1("host", json!({ "name": "db.local" }))
        .unwrap();
    let env = with(
        &bed.env(),
        &[(
            "DSN",
            "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#pass}@${vault:kv1/host#name}/app?x=${HOME}",
        )],
    );
    let report = run(&env, &[]).report();
    assert_eq!(
        report.get("DSN"),
        Some("postgres://alice:p@ss@db.local/app?x=${HOME}")
    );
    assert_eq!(bed.reads("secret/data/db"), 1);
}

#[test]
fn resolve_write_reference_posts_its_body() {
    let bed = Bed::start();
    let ciphertext = bed
        .bao
        .transit_encrypt(TRANSIT_KEY, b"written-plain")
        .unwrap();
    let value = format!(
        ">>vault:transit/decrypt/{TRANSIT_KEY}#${{.plaintext | b64dec}}#{{\"ciphertext\":\"{ciphertext}\"}}"
    );
    let env = with(&bed.env(), &[("WRITTEN", value.as_str())]);
    let report = run(&env, &[]).report();
    assert_eq!(report.get("WRITTEN"), Some("written-plain"));
    let decrypts: Vec<_> = bed
        .bao
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.is_request() && e.path == format!("transit/decrypt/{TRANSIT_KEY}"))
        .collect();
    assert_eq!(decrypts.len(), 1);
    assert_eq!(decrypts[0].operation, "update");
}

#[test]
fn resolve_transit_single_and_batched() {
    let bed = Bed::start();
    let plain = ["one", "two", "three"];
    let cts: Vec<String> = plain
        .iter()
        .map(|p| bed.bao.transit_encrypt(TRANSIT_KEY, p.as_bytes()).unwrap())
        .collect();
    let decrypt_path = format!("transit/decrypt/{TRANSIT_KEY}");

    // Single: one ciphertext, one request.
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TRANSIT_KEY_ID", TRANSIT_KEY),
            ("T0", cts[0].as_str()),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("T0"), Some("one"));
    assert_eq!(bed.bao.audit_request_count(&decrypt_path).unwrap(), 1);
    assert!(report.get("VAULT_TRANSIT_KEY_ID").is_none());

    // Batched: three ciphertexts (one used twice), batches of two: two requests.
    let env = with(
        &bed.env(),
        &[
            ("VAULT_TRANSIT_KEY_ID", TRANSIT_KEY),
            ("VAULT_TRANSIT_BATCH_SIZE", "2"),
            ("T1", cts[0].as_str()),
            ("T2", cts[1].as_str()),
            ("T3", cts[2].as_str()),
            ("T4", cts[1].as_str()),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("T1"), Some("one"));
    assert_eq!(report.get("T2"), Some("two"));
    assert_eq!(report.get("T3"), Some("three"));
    assert_eq!(report.get("T4"), Some("two"));
    assert_eq!(bed.bao.audit_request_count(&decrypt_path).unwrap(), 1 + 2);
}

#[test]
fn resolve_transit_without_key_id_fails_clearly() {
    let bed = Bed::start();
    let ct = bed.bao.transit_encrypt(TRANSIT_KEY, b"x").unwrap();
    let env = with(&bed.env(), &[("T", ct.as_str())]);
    let line = run(&env, &[]).error_line();
    assert!(line.contains("variable T"), "{line}");
    assert!(line.contains("VAULT_TRANSIT_KEY_ID is not set"), "{line}");
}

#[test]
fn resolve_from_path_with_and_without_version() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("fp", json!({ "FP_A": "a1", "FP_B": "b1" }))
        .unwrap();
    bed.bao
        .write_kv2("fp", json!({ "FP_A": "a2", "FP_C": "c2" }))
        .unwrap();
    bed.bao
        .write_kv1("fp1", json!({ "FP_V1": "legacy" }))
        .unwrap();

    let env = with(
        &bed.env(),
        &[
            ("FP_C", "explicit wins"),
            ("VAULT_ENV_FROM_PATH", "secret/data/fp,kv1/fp1"),
        ],
    );
    let report = run(&env, &[]).report();
    assert_eq!(report.get("FP_A"), Some("a2"));
    assert_eq!(report.get("FP_B"), None);
    assert_eq!(report.get("FP_C"), Some("explicit wins"));
    assert_eq!(report.get("FP_V1"), Some("legacy"));
    assert!(report.get("VAULT_ENV_FROM_PATH").is_none());

    let env = with(&bed.env(), &[("VAULT_ENV_FROM_PATH", "secret/data/fp#1")]);
    let report = run(&env, &[]).report();
    assert_eq!(report.get("FP_A"), Some("a1"));
    assert_eq!(report.get("FP_B"), Some("b1"));
    assert_eq!(report.get("FP_C"), None);
}

#[test]
fn resolve_ignore_missing_on_drops_only_missing_variables() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("present", json!({ "k": "here" }))
        .unwrap();
    let env = with(
        &bed.env(),
        &[
            ("VAULT_IGNORE_MISSING_SECRETS", "true"),
            ("OK", "vault:secret/data/present#k"),
            ("NO_PATH", "vault:secret/data/absent#k"),
            ("NO_KEY", "vault:secret/data/present#nope"),
            ("NO_INLINE", "x${vault:secret/data/present#nope}y"),
        ],
    );
    let run = run(&env, &[]);
    let report = run.report();
    assert_eq!(report.get("OK"), Some("here"));
    for dropped in ["NO_PATH", "NO_KEY", "NO_INLINE"] {
        assert!(report.get(dropped).is_none(), "{dropped} should be dropped");
        assert!(run.stderr().contains(dropped), "warning names {dropped}");
    }
    assert!(run.stderr().contains("vault:secret/data/absent#k"));
}

#[test]
fn resolve_ignore_missing_off_fails_naming_variable_and_reference() {
    let bed = Bed::start();
    bed.bao
        .write_kv2("present", json!({ "k": "here" }))
        .unwrap();
    let env = with(&bed.env(), &[("NO_PATH", "vault:secret/data/absent#k")]);
    let line = run(&env, &[]).error_line();
    assert!(line.contains("variable NO_PATH"), "{line}");
    assert!(line.contains("vault:secret/data/absent#k"), "{line}");
    assert!(line.contains("no secret at this path"), "{line}");
}

#[test]
fn resolve_twenty_variables_over_four_paths_cost_one_login_and_four_reads() {
    let bed = Bed::start();
    for p in 0..4 {
        let data: serde_json::Map<String, serde_json::Value> = (0..5)
            .map(|k| (format!("k{k}"), json!(format!("value-{p}-{k}"))))
            .collect();
        bed.bao
            .write_kv2(&format!("econ/p{p}"), serde_json::Value::Object(data))
            .unwrap();
    }
    let mut extra = Vec::new();
    for p in 0..4 {
        for k in 0..5 {
            let value = match k {
                // Mix the forms: plain key, template, inline.
                3 => format!("vault:secret/data/econ/p{p}#${{.k{k} | upper}}"),
                4 => format!("<${{vault:secret/data/econ/p{p}#k{k}}}>"),
                _ => format!("vault:secret/data/econ/p{p}#k{k}"),
            };
            extra.push((format!("E_{p}_{k}"), value));
        }
    }
    let mut env = bed.env();
    env.extend(extra);
    let before = bed.audit_requests();
    let report = run(&env, &[]).report();
    for p in 0..4 {
        assert_eq!(
            report.get(&format!("E_{p}_0")),
            Some(format!("value-{p}-0").as_str())
        );
        assert_eq!(
            report.get(&format!("E_{p}_3")),
            Some(format!("VALUE-{p}-3").as_str())
        );
        assert_eq!(
            report.get(&format!("E_{p}_4")),
            Some(format!("<value-{p}-4>").as_str())
        );
    }
    let entries = bed.bao.audit_entries().unwrap();
    let requests: Vec<_> = entries
        .iter()
        .filter(|e| e.is_request())
        .skip(before)
        .collect();
    let paths: Vec<&str> = requests.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(requests.len(), 5, "requests: {paths:?}");
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "auth/kubernetes/login")
            .count(),
        1
    );
    for p in 0..4 {
        let path = format!("secret/data/econ/p{p}");
        assert_eq!(paths.iter().filter(|x| **x == path).count(), 1, "{paths:?}");
    }
}
