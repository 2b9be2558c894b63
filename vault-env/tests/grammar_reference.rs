//! Table tests for the reference grammar: every form, every error, and every vault-looking value
//! captured from a real kube-apiserver in `../shared/fixtures/admission/`.

use std::path::PathBuf;

use vault_env::reference::{
    self, EnvValue, MAX_VALUE_LEN, ReadKey, ReferenceError, SecretRef, Segment, Selector,
    TransitCiphertext, WriteRef, contains_reference, parse, parse_from_path,
};
use vault_env::template::{Template, TemplateError};

fn key(path: &str, key: &str, version: Option<u64>) -> SecretRef {
    SecretRef {
        path: path.to_owned(),
        selector: Selector::Key(key.to_owned()),
        version,
    }
}

fn tmpl(path: &str, template: &str, version: Option<u64>) -> SecretRef {
    SecretRef {
        path: path.to_owned(),
        selector: Selector::Template(Template::parse(template).expect("test template parses")),
        version,
    }
}

fn text(t: &str) -> Segment {
    Segment::Text(t.to_owned())
}

fn parsed(value: &str) -> EnvValue {
    match parse(value) {
        Ok(v) => v,
        Err(e) => panic!("{value:?} should parse, got: {e}"),
    }
}

#[test]
fn parse_valid_forms_give_expected_ast() {
    let cases: Vec<(&str, EnvValue)> = vec![
        (
            "vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY",
            EnvValue::Secret(key(
                "secret/data/accounts/aws",
                "AWS_SECRET_ACCESS_KEY",
                None,
            )),
        ),
        (
            "vault:secret/data/account#password#1",
            EnvValue::Secret(key("secret/data/account", "password", Some(1))),
        ),
        (
            "vault:secret/data/account#password#0",
            EnvValue::Secret(key("secret/data/account", "password", Some(0))),
        ),
        (
            "vault:secret/data/account#password#18446744073709551615",
            EnvValue::Secret(key("secret/data/account", "password", Some(u64::MAX))),
        ),
        (
            "vault:kv1#key with spaces",
            EnvValue::Secret(key("kv1", "key with spaces", None)),
        ),
        (
            "vault:database/creds/app#username",
            EnvValue::Secret(key("database/creds/app", "username", None)),
        ),
        (
            "vault:secret/data/accounts/aws#${.AWS_SECRET_ACCESS_KEY}",
            EnvValue::Secret(tmpl(
                "secret/data/accounts/aws",
                "${.AWS_SECRET_ACCESS_KEY}",
                None,
            )),
        ),
        (
            "vault:secret/data/accounts/aws#AWS key in base64: ${.AWS_ACCESS_KEY_ID | b64enc}",
            EnvValue::Secret(tmpl(
                "secret/data/accounts/aws",
                "AWS key in base64: ${.AWS_ACCESS_KEY_ID | b64enc}",
                None,
            )),
        ),
        (
            "vault:p#text ${.A} and ${.B}#7",
            EnvValue::Secret(tmpl("p", "text ${.A} and ${.B}", Some(7))),
        ),
        // A `#` inside a template action's string literal does not split.
        (
            r##"vault:p#${ "#" | quote }#2"##,
            EnvValue::Secret(tmpl("p", r##"${ "#" | quote }"##, Some(2))),
        ),
        (
            "vault:p#${ `#}` }",
            EnvValue::Secret(tmpl("p", "${ `#}` }", None)),
        ),
        ("vault:login", EnvValue::Login),
        (
            "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==",
            EnvValue::Transit(TransitCiphertext {
                ciphertext: "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w=="
                    .to_owned(),
            }),
        ),
        // Transit is checked before the `#` split, as in Bank-Vaults.
        (
            "vault:v12:abc#def",
            EnvValue::Transit(TransitCiphertext {
                ciphertext: "vault:v12:abc#def".to_owned(),
            }),
        ),
        (
            ">>vault:pki/root/generate/internal#certificate",
            EnvValue::Write(WriteRef {
                path: "pki/root/generate/internal".to_owned(),
                selector: Selector::Key("certificate".to_owned()),
                body: "{}".to_owned(),
            }),
        ),
        (
            r#">>vault:transit/decrypt/k#${.plaintext | b64dec}#{"ciphertext":"vault:v1:abc"}"#,
            EnvValue::Write(WriteRef {
                path: "transit/decrypt/k".to_owned(),
                selector: Selector::Template(
                    Template::parse("${.plaintext | b64dec}").expect("parses"),
                ),
                body: r#"{"ciphertext":"vault:v1:abc"}"#.to_owned(),
            }),
        ),
        // Every `#` after the key belongs to the body.
        (
            r##">>vault:database/roles/x#name#{"a":"#b#","c":{"d":[1,"#"]}}"##,
            EnvValue::Write(WriteRef {
                path: "database/roles/x".to_owned(),
                selector: Selector::Key("name".to_owned()),
                body: r##"{"a":"#b#","c":{"d":[1,"#"]}}"##.to_owned(),
            }),
        ),
        (
            "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#password}@db:5432/app",
            EnvValue::Inline(vec![
                text("postgres://"),
                Segment::Ref(key("secret/data/db", "user", None)),
                text(":"),
                Segment::Ref(key("secret/data/db", "password", None)),
                text("@db:5432/app"),
            ]),
        ),
        (
            "${vault:a#b}",
            EnvValue::Inline(vec![Segment::Ref(key("a", "b", None))]),
        ),
        (
            "${vault:a#b#3}${vault:c#d}",
            EnvValue::Inline(vec![
                Segment::Ref(key("a", "b", Some(3))),
                Segment::Ref(key("c", "d", None)),
            ]),
        ),
        // Nested template braces inside an inline reference.
        (
            "scheme://${vault:secret/data/account#username}:${vault:secret/data/account#${.password | urlquery}}@127.0.0.1:8080",
            EnvValue::Inline(vec![
                text("scheme://"),
                Segment::Ref(key("secret/data/account", "username", None)),
                text(":"),
                Segment::Ref(tmpl("secret/data/account", "${.password | urlquery}", None)),
                text("@127.0.0.1:8080"),
            ]),
        ),
        (
            r#"x${vault:p#${ "}" }#4}y"#,
            EnvValue::Inline(vec![
                text("x"),
                Segment::Ref(tmpl("p", r#"${ "}" }"#, Some(4))),
                text("y"),
            ]),
        ),
        // Inline wins over a leading `vault:`; `${HOME}` in text stays literal.
        (
            "vault:x ${HOME} ${vault:a#b}",
            EnvValue::Inline(vec![
                text("vault:x ${HOME} "),
                Segment::Ref(key("a", "b", None)),
            ]),
        ),
        // The first `}` outside a template closes the reference.
        (
            "${vault:a#b}}",
            EnvValue::Inline(vec![Segment::Ref(key("a", "b", None)), text("}")]),
        ),
        ("hello", EnvValue::Plain),
        ("", EnvValue::Plain),
        ("my-vault:x#y", EnvValue::Plain),
        ("VAULT:p#k", EnvValue::Plain),
        (" vault:p#k", EnvValue::Plain),
        ("${HOME}/bin", EnvValue::Plain),
        ("$(DATABASE_URL)", EnvValue::Plain),
        (">vault:p#k", EnvValue::Plain),
    ];
    for (value, expected) in cases {
        assert_eq!(parsed(value), expected, "value {value:?}");
    }
}

#[test]
fn parse_every_form_round_trips_through_text() {
    let values = [
        "vault:secret/data/a#k",
        "vault:secret/data/a#k#9",
        "vault:p#text ${.A} and ${.B}",
        "vault:login",
        "vault:v3:abc=",
        ">>vault:pki/issue/x#certificate",
        r#">>vault:transit/decrypt/k#${.plaintext | b64dec}#{"ciphertext":"vault:v1:abc"}"#,
        "a${vault:p#k}b${vault:q#${.x | upper}#2}c",
    ];
    for value in values {
        let first = parsed(value);
        let text = first.to_reference_string().expect("not plain");
        assert_eq!(parsed(&text), first, "{value:?} printed as {text:?}");
    }
    assert_eq!(EnvValue::Plain.to_reference_string(), None);
}

/// Each invalid value, and the error variant it must give.
#[test]
fn parse_invalid_values_give_specific_errors() {
    type Check = fn(&ReferenceError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("vault:secret/data/a", |e| {
            matches!(e, ReferenceError::MissingKey { .. })
        }),
        ("vault:", |e| matches!(e, ReferenceError::MissingKey { .. })),
        ("vault:v1", |e| {
            matches!(e, ReferenceError::MissingKey { .. })
        }),
        ("vault:login#", |e| {
            matches!(e, ReferenceError::EmptyKey { .. })
        }),
        ("vault:p#", |e| matches!(e, ReferenceError::EmptyKey { .. })),
        ("vault:p##1", |e| {
            matches!(e, ReferenceError::EmptyKey { .. })
        }),
        (
            "vault:#k",
            |e| matches!(e, ReferenceError::InvalidPath { reason, .. } if reason.contains("empty")),
        ),
        (
            "vault:/secret/a#k",
            |e| matches!(e, ReferenceError::InvalidPath { reason, .. } if reason.contains("starts")),
        ),
        (
            "vault:secret//a#k",
            |e| matches!(e, ReferenceError::InvalidPath { reason, .. } if reason.contains("segment")),
        ),
        (
            "vault:secret/a/#k",
            |e| matches!(e, ReferenceError::InvalidPath { reason, .. } if reason.contains("segment")),
        ),
        (
            "vault:secret/../sys/raw#k",
            |e| matches!(e, ReferenceError::InvalidPath { reason, .. } if reason.contains("..")),
        ),
        ("vault:secret/./a#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:..#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:secret/a b#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:secret/a\tb#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:secret/a\u{0}b#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:secret/a?version=2#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:secret/%2e%2e/a#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:secret\\a#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        ("vault:p#k#", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k#latest", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k#-1", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k#+1", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k# 1", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k#1#2", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k#18446744073709551616", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("vault:p#k#١", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        // A `#` in the plain text of a template splits (as in Bank-Vaults).
        ("vault:p#a # ${.b}", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        (">>vault:p", |e| {
            matches!(e, ReferenceError::MissingKey { .. })
        }),
        (">>vault:v1:abc", |e| {
            matches!(e, ReferenceError::MissingKey { .. })
        }),
        (">>vault:p#k#", |e| {
            matches!(e, ReferenceError::InvalidBody { .. })
        }),
        (">>vault:p#k#[1,2]", |e| {
            matches!(e, ReferenceError::InvalidBody { .. })
        }),
        (">>vault:p#k#{\"a\":", |e| {
            matches!(e, ReferenceError::InvalidBody { .. })
        }),
        (">>vault:p#k#{} trailing", |e| {
            matches!(e, ReferenceError::InvalidBody { .. })
        }),
        (">>vault:p#k#\"str\"", |e| {
            matches!(e, ReferenceError::InvalidBody { .. })
        }),
        (">>vault:/p#k", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        (">>vault:p##{}", |e| {
            matches!(e, ReferenceError::EmptyKey { .. })
        }),
        ("vault:v1:", |e| {
            matches!(e, ReferenceError::InvalidTransit { .. })
        }),
        ("vault:v1:abc def", |e| {
            matches!(e, ReferenceError::InvalidTransit { .. })
        }),
        ("vault:v1:abc\n", |e| {
            matches!(e, ReferenceError::InvalidTransit { .. })
        }),
        ("x ${vault:p#k", |e| {
            matches!(e, ReferenceError::UnterminatedInline { offset: 2 })
        }),
        ("${vault:p#k#1", |e| {
            matches!(e, ReferenceError::UnterminatedInline { offset: 0 })
        }),
        ("${vault:p#${.a}", |e| {
            matches!(e, ReferenceError::UnterminatedInline { .. })
        }),
        ("${vault:p}", |e| {
            matches!(e, ReferenceError::MissingKey { .. })
        }),
        ("${vault:p#}", |e| {
            matches!(e, ReferenceError::EmptyKey { .. })
        }),
        ("${vault:p#k#x}", |e| {
            matches!(e, ReferenceError::InvalidVersion { .. })
        }),
        ("${vault:/p#k}", |e| {
            matches!(e, ReferenceError::InvalidPath { .. })
        }),
        (
            "a ${>>vault:pki/issue/x#certificate} b",
            |e| matches!(e, ReferenceError::UnsupportedInline { form, .. } if form.contains("write")),
        ),
        (
            "${vault:login}",
            |e| matches!(e, ReferenceError::UnsupportedInline { form, .. } if form.contains("login")),
        ),
        (
            "${vault:v1:abc}",
            |e| matches!(e, ReferenceError::UnsupportedInline { form, .. } if form.contains("transit")),
        ),
        (
            "ok ${vault:a#b} then ${vault:bad}",
            |e| matches!(e, ReferenceError::MissingKey { reference } if reference == "${vault:bad}"),
        ),
        ("vault:p#${.a", |e| {
            matches!(
                e,
                ReferenceError::Template {
                    error: TemplateError::UnterminatedAction { .. },
                    ..
                }
            )
        }),
        ("vault:p#${ \"a }", |e| {
            matches!(
                e,
                ReferenceError::Template {
                    error: TemplateError::UnterminatedString { .. },
                    ..
                }
            )
        }),
        ("vault:p#${.a | nosuchfunc}", |e| {
            matches!(
                e,
                ReferenceError::Template { error: TemplateError::UnknownFunction { name }, .. }
                    if name == "nosuchfunc"
            )
        }),
        ("vault:p#${if .a}x${end}", |e| {
            matches!(
                e,
                ReferenceError::Template {
                    error: TemplateError::UnsupportedAction { .. },
                    ..
                }
            )
        }),
        (">>vault:p#${.a | replace \"x\"}#{}", |e| {
            matches!(
                e,
                ReferenceError::Template {
                    error: TemplateError::Arity { .. },
                    ..
                }
            )
        }),
    ];
    for (value, check) in cases {
        match parse(value) {
            Ok(v) => panic!("{value:?} should fail, parsed as {v:?}"),
            Err(e) => assert!(check(&e), "{value:?} gave unexpected error: {e:?}"),
        }
    }
}

#[test]
fn parse_value_over_limit_is_too_long() {
    let value = format!("vault:p#{}", "k".repeat(MAX_VALUE_LEN));
    assert_eq!(
        parse(&value),
        Err(ReferenceError::TooLong {
            len: value.len(),
            max: MAX_VALUE_LEN
        })
    );
    let at_limit = format!("vault:p#{}", "k".repeat(MAX_VALUE_LEN - 8));
    assert!(matches!(parse(&at_limit), Ok(EnvValue::Secret(_))));
    // A huge plain value is not a reference and is never rejected.
    assert_eq!(parse(&"x".repeat(4 * MAX_VALUE_LEN)), Ok(EnvValue::Plain));
}

#[test]
fn parse_many_inline_refs_at_limit_all_found() {
    // ~5000 references and as many non-reference `${` in one 64 KiB value.
    let unit = "${x}${vault:a#b}";
    let value = unit.repeat(MAX_VALUE_LEN / unit.len());
    let segments = match parse(&value) {
        Ok(EnvValue::Inline(segments)) => segments,
        other => panic!("expected inline, got {other:?}"),
    };
    let refs = segments
        .iter()
        .filter(|s| matches!(s, Segment::Ref(r) if *r == key("a", "b", None)))
        .count();
    assert_eq!(refs, MAX_VALUE_LEN / unit.len());
    assert_eq!(segments.len(), 2 * refs);
    assert_eq!(segments[0], text("${x}"));
}

/// Work is linear in the value's length: the slowest 64 KiB shapes parse in milliseconds.
/// (A quadratic scan took ~1.7 s for the first shape in a debug build; the bound is generous
/// so a loaded CI machine does not flake, and the best of three runs is taken.)
#[test]
fn parse_worst_case_values_take_bounded_time() {
    let shapes = [
        "${x}${vault:a#b}".repeat(MAX_VALUE_LEN / 16),
        format!("vault:p#{}", "${.a | b64enc}".repeat(MAX_VALUE_LEN / 16)),
        format!("vault:p#{}", "${(((.a)))}".repeat(MAX_VALUE_LEN / 12)),
        format!(
            ">>vault:p#k#{{\"a\":\"{}\"}}",
            "#".repeat(MAX_VALUE_LEN - 30)
        ),
        "${".repeat(MAX_VALUE_LEN / 2 - 8) + "${vault:",
        format!("x${{vault:p#{}", "${\"}\"}".repeat(MAX_VALUE_LEN / 8 - 2)),
    ];
    for value in &shapes {
        assert!(
            value.len() <= MAX_VALUE_LEN,
            "shape too long: {}",
            value.len()
        );
        let best = (0..3)
            .map(|_| {
                let start = std::time::Instant::now();
                let _ = parse(value);
                start.elapsed()
            })
            .min()
            .unwrap_or_default();
        assert!(
            best < std::time::Duration::from_millis(750),
            "{:?}… took {best:?}",
            &value[..20]
        );
    }
}

#[test]
fn error_message_quotes_reference_shortened() {
    let long_path = "a".repeat(1000);
    let value = format!("vault:{long_path}");
    let msg = parse(&value)
        .map(|_| ())
        .expect_err("must fail")
        .to_string();
    assert!(msg.starts_with("reference \"vault:aaa"), "{msg}");
    assert!(
        msg.len() < 400,
        "message not shortened: {} bytes",
        msg.len()
    );
    assert!(msg.contains('…'));
}

#[test]
fn error_messages_are_lower_case_and_name_the_problem() {
    let cases = [
        ("vault:secret/a", "has no `#KEY`"),
        ("vault:p#k#x1", "version \"x1\""),
        (">>vault:p#k#[]", "body is not a JSON object"),
        ("vault:v1:", "ciphertext"),
        ("${vault:login}", "not supported inside"),
        (
            "vault:p#${.a | nope}",
            "invalid key template: unknown template function `nope`",
        ),
    ];
    for (value, needle) in cases {
        let msg = parse(value).map(|_| ()).expect_err(value).to_string();
        assert!(msg.contains(needle), "{value:?}: {msg}");
        assert!(
            msg.chars().next().is_some_and(|c| !c.is_uppercase()),
            "{msg}"
        );
    }
}

#[test]
fn contains_reference_matches_prefixes_and_inline() {
    let yes = [
        "vault:p#k",
        "vault:login",
        "vault:v1:abc",
        "vault:",
        ">>vault:p#k",
        "x${vault:p#k}",
        "x${>>vault:p#k}",
        "${vault:",
    ];
    let no = [
        "",
        "vault",
        "Vault:p#k",
        " vault:p#k",
        ">vault:p#k",
        "x vault:p#k",
        "$(vault:p#k)",
        "{vault:p#k}",
        "$ {vault:p#k}",
    ];
    for v in yes {
        assert!(contains_reference(v), "{v:?}");
    }
    for v in no {
        assert!(!contains_reference(v), "{v:?}");
        assert_eq!(parse(v), Ok(EnvValue::Plain), "{v:?}");
    }
}

#[test]
fn read_key_ignores_selector_and_keeps_version() {
    let a = parsed("vault:secret/data/db#user");
    let b = parsed("vault:secret/data/db#${.password | b64enc}");
    let c = parsed("vault:secret/data/db#user#2");
    let key_of = |v: &EnvValue| v.secret_refs()[0].read_key();
    assert_eq!(key_of(&a), key_of(&b));
    assert_ne!(key_of(&a), key_of(&c));
    assert_eq!(
        key_of(&c),
        ReadKey {
            path: "secret/data/db".to_owned(),
            version: Some(2)
        }
    );
    assert_eq!(key_of(&c).to_string(), "secret/data/db#2");
    assert_eq!(key_of(&a).to_string(), "secret/data/db");
}

#[test]
fn kind_names_each_form() {
    let cases = [
        ("x", "plain"),
        ("vault:login", "login"),
        ("vault:a#b", "secret"),
        ("a${vault:a#b}", "inline"),
        (">>vault:a#b", "write"),
        ("vault:v1:abc", "transit"),
    ];
    for (value, kind) in cases {
        assert_eq!(parsed(value).kind(), kind, "{value:?}");
    }
}

#[test]
fn secret_refs_lists_inline_refs_in_order() {
    let v = parsed("${vault:a#1}-${vault:b#2#5}-${vault:a#3}");
    let paths: Vec<String> = v.secret_refs().iter().map(|r| r.to_string()).collect();
    assert_eq!(paths, ["vault:a#1", "vault:b#2#5", "vault:a#3"]);
    assert!(parsed("vault:login").secret_refs().is_empty());
    assert!(parsed(">>vault:p#k").secret_refs().is_empty());
}

#[test]
fn write_key_distinguishes_bodies() {
    let a = parsed(">>vault:pki/issue/r#certificate#{\"common_name\":\"a\"}");
    let b = parsed(">>vault:pki/issue/r#private_key#{\"common_name\":\"a\"}");
    let c = parsed(">>vault:pki/issue/r#certificate#{\"common_name\":\"b\"}");
    let wk = |v: &EnvValue| match v {
        EnvValue::Write(w) => w.write_key(),
        other => panic!("not a write: {other:?}"),
    };
    assert_eq!(wk(&a), wk(&b));
    assert_ne!(wk(&a), wk(&c));
}

#[test]
fn parse_from_path_splits_paths_and_versions() {
    assert_eq!(
        parse_from_path("secret/data/account1#1,secret/data/account2"),
        Ok(vec![
            ReadKey {
                path: "secret/data/account1".to_owned(),
                version: Some(1)
            },
            ReadKey {
                path: "secret/data/account2".to_owned(),
                version: None
            },
        ])
    );
    assert!(matches!(
        parse_from_path("a,,b"),
        Err(ReferenceError::InvalidPath { .. })
    ));
    assert!(matches!(
        parse_from_path("a#x"),
        Err(ReferenceError::InvalidVersion { .. })
    ));
    assert!(matches!(
        parse_from_path("/a"),
        Err(ReferenceError::InvalidPath { .. })
    ));
    assert!(matches!(
        parse_from_path(&"a".repeat(MAX_VALUE_LEN + 1)),
        Err(ReferenceError::TooLong { .. })
    ));
}

// --- captured admission fixtures ------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRONGROOM_ADMISSION_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/admission")
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                // ConfigMap binaryData holds base64 of the value; decode it too.
                if k == "binaryData"
                    && let Some(bin) = v.as_object()
                {
                    for b in bin.values().filter_map(|b| b.as_str()) {
                        use base64::Engine as _;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .expect("binaryData is base64");
                        out.push(String::from_utf8(bytes).expect("utf-8"));
                    }
                }
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

#[test]
fn admission_fixtures_every_vault_value_parses() {
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "admission fixtures not found at {} ({e}); set STRONGROOM_ADMISSION_FIXTURES",
            dir.display()
        )
    });
    let mut files = 0;
    let mut refs = 0;
    let mut seen = [false; 5]; // secret, template, inline, write, transit-or-login
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        files += 1;
        let body = std::fs::read(&path).expect("read fixture");
        let review: serde_json::Value = serde_json::from_slice(&body).expect("fixture is JSON");
        let mut strings = Vec::new();
        collect_strings(&review, &mut strings);
        for s in strings.iter().filter(|s| contains_reference(s)) {
            refs += 1;
            let v = parse(s).unwrap_or_else(|e| panic!("{}: {s:?}: {e}", path.display()));
            match &v {
                EnvValue::Plain => panic!("{s:?} looks like a reference but parsed as plain"),
                EnvValue::Secret(r) => {
                    seen[0] = true;
                    seen[1] |= matches!(r.selector, Selector::Template(_));
                }
                EnvValue::Inline(_) => seen[2] = true,
                EnvValue::Write(_) => seen[3] = true,
                EnvValue::Login | EnvValue::Transit(_) => seen[4] = true,
            }
            // Every parsed value prints back as text that parses to the same value; the
            // captured forms (no default body added) print back byte for byte.
            let printed = v.to_reference_string().expect("not plain");
            assert_eq!(parsed(&printed), v, "{s:?} printed as {printed:?}");
            if !matches!(&v, EnvValue::Write(w) if !s.ends_with(&w.body)) {
                assert_eq!(&printed, s);
            }
        }
    }
    assert!(
        files >= 20,
        "only {files} fixture files in {}",
        dir.display()
    );
    assert!(refs >= 230, "only {refs} references found");
    assert_eq!(seen, [true; 5], "fixtures should cover every form");
}

#[test]
fn admission_fixture_transit_inline_write_values_parse_exactly() {
    let path = fixtures_dir().join("pod-transit-inline-write.json");
    let body = std::fs::read(&path).expect("pod-transit-inline-write.json");
    let review: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let env = review["request"]["object"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env array");
    let value_of = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no env {name}"))
            .to_owned()
    };
    let mut got = Vec::new();
    for e in env {
        if let Some(v) = e["value"].as_str() {
            got.push((e["name"].as_str().unwrap_or_default().to_owned(), parsed(v)));
        }
    }
    assert!(got.iter().any(|(_, v)| *v == EnvValue::Login));
    assert!(got.iter().any(|(_, v)| *v
        == EnvValue::Inline(vec![
            text("pre-"),
            Segment::Ref(key("secret/data/a", "b", None)),
            text("-post"),
        ])));
    assert!(got.iter().any(|(_, v)| *v
        == EnvValue::Write(WriteRef {
            path: "transit/decrypt/my-key".to_owned(),
            selector: Selector::Template(
                Template::parse("${.plaintext | b64dec}").expect("parses")
            ),
            body: r#"{"ciphertext":"vault:v1:abc"}"#.to_owned(),
        })));
    assert!(got.iter().any(|(_, v)| matches!(v, EnvValue::Transit(t)
        if t.ciphertext == "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==")));
    assert_eq!(parsed(&value_of("VAULT_TOKEN")), EnvValue::Login);
}

#[test]
fn reference_module_reexports_are_usable() {
    // The webhook uses only these two entry points.
    assert!(reference::contains_reference("vault:a#b"));
    assert!(matches!(
        reference::parse("vault:a#b"),
        Ok(EnvValue::Secret(_))
    ));
}

#[test]
fn parse_path_character_rules_follow_unicode_for_every_ascii_and_sample_char() {
    // The path check takes a byte fast path for ASCII; it must refuse exactly the characters
    // the Unicode definitions (white space, control) and the three listed ones name.
    let samples = (0u8..=0x7f).map(char::from).chain([
        '\u{85}', '\u{a0}', '\u{9f}', '\u{2028}', '\u{3000}', 'é', '語',
    ]);
    for c in samples {
        if matches!(c, '#' | '/' | '}' | '$') {
            continue; // grammar delimiters, not path characters
        }
        let forbidden = c.is_whitespace() || c.is_control() || matches!(c, '?' | '%' | '\\');
        for value in [format!("vault:se{c}cret/a#k"), format!("vault:{c}/x#k")] {
            let refused = matches!(
                parse(&value),
                Err(ReferenceError::InvalidPath { reason, .. }) if reason.contains("white space")
            );
            assert_eq!(refused, forbidden, "{c:?} in {value:?}");
        }
    }
}
