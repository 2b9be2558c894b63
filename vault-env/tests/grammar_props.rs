//! Property tests for the reference grammar and templates: the parser is total, the cheap
//! webhook check agrees with the full parse, valid references round-trip through text, and
//! `b64enc`/`b64dec` are inverse. Case counts are modest so the suite stays fast in debug;
//! set `PROPTEST_CASES` for a longer run.

use base64::Engine as _;
use proptest::prelude::*;
use vault_env::reference::{
    EnvValue, MAX_VALUE_LEN, SecretRef, Segment, Selector, TransitCiphertext, WriteRef,
    contains_reference, parse,
};
use vault_env::secret::SecretJson;
use vault_env::template::Template;

/// Pieces of the grammar, so random strings hit the interesting paths far more often than
/// uniformly random text would.
const FRAGMENTS: &[&str] = &[
    "vault:",
    ">>vault:",
    "${vault:",
    "${>>vault:",
    "${",
    "}",
    "{",
    "#",
    "##",
    "\"",
    "\\",
    "`",
    "(",
    ")",
    "|",
    ".",
    "/",
    "//",
    "..",
    " ",
    "-",
    "a",
    "KEY",
    "1",
    "99999999999999999999999",
    "é",
    "😀",
    "\u{0}",
    "\n",
    "login",
    "v1:",
    "b64enc",
    "b64dec",
    "default",
    "index",
    "replace \"\" \"xx\"",
    "printf \"%s%d%q%%\"",
    "print",
    "\"%",
    " .a",
    "quote",
    "{\"a\":",
    "[",
    "]",
    "secret/data/x",
];

fn fragment_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..max).prop_map(|v| v.concat())
}

/// Modest case counts by default; `PROPTEST_CASES=N` (read by proptest's default config)
/// runs every property N times for a longer fuzzing session.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn parse_arbitrary_unicode_never_panics(value in any::<String>()) {
        let _ = parse(&value);
        for prefix in ["vault:", ">>vault:", "${vault:"] {
            let _ = parse(&format!("{prefix}{value}"));
        }
    }

    #[test]
    fn parse_grammar_fragments_never_panics(value in fragment_string(40)) {
        let result = parse(&value);
        // Consistency: whatever parses as a reference was flagged by the cheap check.
        if let Ok(v) = &result && *v != EnvValue::Plain {
            prop_assert!(contains_reference(&value));
        }
    }

    #[test]
    fn contains_reference_false_implies_plain(value in prop_oneof![any::<String>(), fragment_string(30)]) {
        if !contains_reference(&value) {
            prop_assert_eq!(parse(&value), Ok(EnvValue::Plain));
        }
    }

    #[test]
    fn template_parse_and_render_never_panic(text in fragment_string(30)) {
        let data = SecretJson::from_slice(br#"{"a":"x","KEY":"YQ==","n":{"m":[1]}}"#)
            .unwrap_or_default();
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render(&data);
        }
        let _ = Template::parse(&format!("${{{text}}}"));
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// Values far beyond the limit: rejected (or plain) without panicking, quickly.
    #[test]
    fn parse_huge_values_never_panics(
        chunk in fragment_string(12),
        repeat in (MAX_VALUE_LEN / 8)..(MAX_VALUE_LEN / 2),
        prefix in prop::sample::select(&["", "vault:p#", ">>vault:p#k#", "x${vault:p#"][..]),
    ) {
        let value = format!("{prefix}{}", chunk.repeat(repeat.min(4 * MAX_VALUE_LEN / chunk.len().max(1))));
        let _ = parse(&value);
        let _ = Template::parse(&value);
    }
}

// --- generators of valid references ---------------------------------------------------------

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_-][A-Za-z0-9_.-]{0,7}", 1..5)
        .prop_map(|segs| segs.join("/"))
        .prop_filter("no . or .. segments", |p| {
            p.split('/').all(|s| s != "." && s != "..")
        })
}

fn plain_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_ .:/@-]{0,11}"
}

fn template_text() -> impl Strategy<Value = String> {
    let action = prop_oneof![
        "[A-Za-z_][A-Za-z0-9_]{0,6}".prop_map(|k| format!("${{.{k}}}")),
        "[A-Za-z_][A-Za-z0-9_]{0,6}".prop_map(|k| format!("${{.{k} | b64enc}}")),
        "[A-Za-z_][A-Za-z0-9_]{0,6}".prop_map(|k| format!("${{ .{k} | default \"#}}\" | quote }}")),
        "[a-z-]{1,6}".prop_map(|k| format!("${{index . \"{k}\" | upper}}")),
    ];
    (
        prop::collection::vec(("[A-Za-z ,:]{0,5}", action), 1..4),
        "[A-Za-z ,]{0,5}",
    )
        .prop_map(|(parts, tail)| {
            let mut s = String::new();
            for (text, action) in parts {
                s.push_str(&text);
                s.push_str(&action);
            }
            s.push_str(&tail);
            s
        })
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        plain_key().prop_map(Selector::Key),
        template_text().prop_filter_map("template parses", |t| {
            Template::parse(&t).ok().map(Selector::Template)
        }),
    ]
}

fn secret_ref() -> impl Strategy<Value = SecretRef> {
    (path(), selector(), prop::option::of(any::<u64>())).prop_map(|(path, selector, version)| {
        SecretRef {
            path,
            selector,
            version,
        }
    })
}

fn body() -> impl Strategy<Value = String> {
    prop::collection::btree_map("[a-z_]{1,6}", "[ -~]{0,10}", 0..4).prop_map(|m| {
        let obj: serde_json::Map<String, serde_json::Value> = m
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::Value::Object(obj).to_string()
    })
}

fn inline_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 /:@.${}#-]{1,10}".prop_filter("no reference start", |t| {
        !t.contains("${vault:") && !t.contains("${>>vault:") && !t.ends_with('$')
    })
}

fn inline() -> impl Strategy<Value = Vec<Segment>> {
    (
        prop::option::of(inline_text()),
        prop::collection::vec((secret_ref(), prop::option::of(inline_text())), 1..4),
    )
        .prop_map(|(lead, refs)| {
            let mut segs = Vec::new();
            if let Some(t) = lead {
                segs.push(Segment::Text(t));
            }
            for (r, t) in refs {
                segs.push(Segment::Ref(r));
                if let Some(t) = t {
                    segs.push(Segment::Text(t));
                }
            }
            segs
        })
        // A plain key inside `${…}` ends at `}`; keep generated inline keys free of it.
        .prop_filter("inline plain keys have no }", |segs| {
            segs.iter().all(|s| match s {
                Segment::Ref(SecretRef {
                    selector: Selector::Key(k),
                    ..
                }) => !k.contains('}'),
                _ => true,
            })
        })
}

fn env_value() -> impl Strategy<Value = EnvValue> {
    prop_oneof![
        Just(EnvValue::Login),
        secret_ref().prop_map(EnvValue::Secret),
        inline().prop_map(EnvValue::Inline),
        (path(), selector(), body()).prop_map(|(path, selector, body)| {
            EnvValue::Write(WriteRef {
                path,
                selector,
                body,
            })
        }),
        (1u32..100, "[A-Za-z0-9+/]{4,40}={0,2}").prop_map(|(n, b)| {
            EnvValue::Transit(TransitCiphertext {
                ciphertext: format!("vault:v{n}:{b}"),
            })
        }),
    ]
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn valid_reference_round_trips_through_text(value in env_value()) {
        let text = value.to_reference_string().unwrap_or_default();
        prop_assert!(contains_reference(&text), "{text:?}");
        let reparsed = parse(&text);
        prop_assert_eq!(reparsed.as_ref(), Ok(&value), "text {:?}", text);
        // And printing the reparsed value gives the same text back.
        let again = reparsed.ok().and_then(|v| v.to_reference_string());
        prop_assert_eq!(again.as_deref(), Some(text.as_str()));
    }

    #[test]
    fn b64enc_then_b64dec_is_identity(secret in any::<String>()) {
        let mut map = serde_json::Map::new();
        map.insert("s".to_owned(), serde_json::Value::String(secret.clone()));
        let json = serde_json::Value::Object(map).to_string();
        let data = SecretJson::from_slice(json.as_bytes()).unwrap_or_default();

        let enc = Template::parse("${.s | b64enc}").and_then(|t| t.render(&data));
        let expected = base64::engine::general_purpose::STANDARD.encode(secret.as_bytes());
        prop_assert_eq!(enc.as_ref().map(|s| s.as_str()), Ok(expected.as_str()));

        let round = Template::parse("${.s | b64enc | b64dec}").and_then(|t| t.render(&data));
        prop_assert_eq!(round.as_ref().map(|s| s.as_str()), Ok(secret.as_str()));
    }

    #[test]
    fn b64dec_then_b64enc_is_identity_for_utf8(secret in any::<String>()) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret.as_bytes());
        let json = format!(r#"{{"e":"{encoded}"}}"#);
        let data = SecretJson::from_slice(json.as_bytes()).unwrap_or_default();
        let round = Template::parse("${.e | b64dec | b64enc}").and_then(|t| t.render(&data));
        prop_assert_eq!(round.as_ref().map(|s| s.as_str()), Ok(encoded.as_str()));
    }

    #[test]
    fn replace_matches_go_strings_replace(
        input in "[ab😀 ]{0,12}",
        old in "[ab]{0,2}",
        new in "[xyé]{0,3}",
    ) {
        let json = serde_json::json!({"s": input, "o": old, "n": new}).to_string();
        let data = SecretJson::from_slice(json.as_bytes()).unwrap_or_default();
        let got = Template::parse("${.s | replace .o .n}").and_then(|t| t.render(&data));
        // Rust's str::replace has Go's semantics, also for an empty `old`.
        let expected = input.replace(&old, &new);
        prop_assert_eq!(got.as_ref().map(|s| s.as_str()), Ok(expected.as_str()));
    }

    #[test]
    fn render_field_is_identity_for_any_string(secret in any::<String>(), prefix in "[a-z :]{0,6}") {
        let json = serde_json::json!({"s": secret}).to_string();
        let data = SecretJson::from_slice(json.as_bytes()).unwrap_or_default();
        let got = Template::parse(&format!("{prefix}${{.s}}")).and_then(|t| t.render(&data));
        let expected = format!("{prefix}{secret}");
        prop_assert_eq!(got.as_ref().map(|s| s.as_str()), Ok(expected.as_str()));
    }

    #[test]
    fn to_json_output_reparses_to_same_value(secret in any::<String>(), n in any::<i64>(), b in any::<bool>()) {
        let original = serde_json::json!({"s": secret, "n": n, "b": b, "a": [secret, null], "o": {"k": n}});
        let data = SecretJson::from_slice(original.to_string().as_bytes()).unwrap_or_default();
        let printed = data.to_json();
        let back: serde_json::Value = serde_json::from_str(&printed).unwrap_or_default();
        prop_assert_eq!(back, original);
    }
}
