//! Property tests of the pure decision: arbitrary env values and annotations never panic the
//! webhook, every patch applies and yields a valid Pod, and a second review is a no-op.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::json;
use webhook::mutate::Decision;

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./-]{0,20}",
        "vault:[a-z/#${}.0-9]{0,24}",
        ">>vault:[a-z/#{}\":]{0,24}",
        "pre-\\$\\{vault:[a-z/#]{0,12}\\}-post",
        "vault:v1:[A-Za-z0-9+/=]{0,16}",
    ]
}

fn annotation() -> impl Strategy<Value = (String, String)> {
    let prefix = prop_oneof![
        Just("vault.security.banzaicloud.io/"),
        Just("secrets-webhook.security.bank-vaults.io/"),
        Just("strongroom.dev/"),
    ];
    let name = prop_oneof![
        Just("vault-addr".to_owned()),
        Just("vault-role".to_owned()),
        Just("mutate-probes".to_owned()),
        Just("vault-env-daemon".to_owned()),
        Just("run-as-user".to_owned()),
        Just("guard-mode".to_owned()),
        "[a-z-]{1,20}",
    ];
    (prefix, name, "[a-zA-Z0-9:/._-]{0,30}").prop_map(|(p, n, v)| (format!("{p}{n}"), v))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn review_arbitrary_env_and_annotations_patch_applies_and_is_idempotent(
        values in proptest::collection::vec(env_value(), 1..5),
        annotations in proptest::collection::vec(annotation(), 0..5),
    ) {
        let mut review = fixture_json("pod-basic");
        let object = &mut review["request"]["object"];
        let env: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"name": format!("V{i}"), "value": v}))
            .collect();
        object["spec"]["containers"][0]["env"] = json!(env);
        for (key, value) in &annotations {
            object["metadata"]["annotations"][key] = json!(value);
        }
        let first = answer(&test_mutator(), &serde_json::to_vec(&review).unwrap());
        let object = &review["request"]["object"];
        let patched = apply(object, &first.body());
        as_pod(&patched);
        if first.outcome.decision == Decision::Patched {
            let second = answer(&test_mutator(), &pod_review(&patched));
            prop_assert_eq!(second.outcome.decision, Decision::AlreadyMutated);
            // Every original env value is still there, unchanged.
            let text = serde_json::to_string(&patched["spec"]["containers"][0]["env"]).unwrap();
            for value in &values {
                prop_assert!(text.contains(&serde_json::to_string(value).unwrap()));
            }
        } else {
            prop_assert!(first.body()["response"].get("patch").is_none());
        }
    }
}
