//! Template functions and template errors, rendered against real-looking secret data.

use vault_env::secret::SecretJson;
use vault_env::template::{MAX_DEPTH, MAX_OUTPUT_LEN, MAX_TEMPLATE_LEN, Template, TemplateError};

const DATA: &str = r#"{
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "password": "p@ss w/rd&<x>",
    "user": "admin",
    "empty": "",
    "b64": "aGVsbG8gd29ybGQ=",
    "b64nl": "aGVs\nbG8=",
    "notb64": "%%%",
    "latin1": "/w==",
    "padded": "  \t hi there \n",
    "words": "hello wide-world foo_bar ñandú",
    "eszett": "straße",
    "api-key": "k-1",
    "count": 42,
    "zero": 0,
    "float": 1.5,
    "flag": true,
    "off": false,
    "nothing": null,
    "list": [1, "two", {"three": 3}],
    "nested": {"inner": {"deep": "deepsecret9"}, "n": 7},
    "emptyobj": {},
    "quotes": "say \"hi\"\n\tand\u0001 é",
    "html": "<a href=\"x\">&</a>"
}"#;

fn data() -> SecretJson {
    SecretJson::from_slice(DATA.as_bytes()).expect("test data parses")
}

fn render(template: &str) -> Result<String, TemplateError> {
    let t = Template::parse(template)?;
    t.render(&data()).map(|s| s.to_string())
}

fn ok(template: &str) -> String {
    render(template).unwrap_or_else(|e| panic!("{template:?}: {e}"))
}

#[test]
fn render_functions_match_sprig() {
    let cases: &[(&str, &str)] = &[
        ("${.user}", "admin"),
        ("${ .user }", "admin"),
        (
            "text ${.user} and ${.AWS_ACCESS_KEY_ID}!",
            "text admin and AKIAIOSFODNN7EXAMPLE!",
        ),
        ("no actions at all", "no actions at all"),
        (
            "${.AWS_ACCESS_KEY_ID | b64enc}",
            "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=",
        ),
        ("${.b64 | b64dec}", "hello world"),
        // Go's decoder skips newlines.
        ("${.b64nl | b64dec}", "hello"),
        ("${.user | upper}", "ADMIN"),
        ("${upper .user}", "ADMIN"),
        ("${.AWS_ACCESS_KEY_ID | lower}", "akiaiosfodnn7example"),
        // Go's simple case mapping keeps ß (Rust's full mapping would give SS).
        ("${.eszett | upper}", "STRAßE"),
        ("${.words | title}", "Hello Wide-World Foo_bar Ñandú"),
        ("${.padded | trim}", "hi there"),
        ("${.padded | nospace}", "hithere"),
        ("${.user | trimAll \"an\"}", "dmi"),
        ("${.user | trimPrefix \"ad\"}", "min"),
        ("${.user | trimPrefix \"zz\"}", "admin"),
        ("${.user | trimSuffix \"in\"}", "adm"),
        ("${.user | replace \"a\" \"A\"}", "Admin"),
        ("${.user | replace \"\" \"-\"}", "-a-d-m-i-n-"),
        ("${replace \"m\" \"M\" .user}", "adMin"),
        ("${.user | quote}", "\"admin\""),
        ("${.quotes | quote}", r#""say \"hi\"\n\tand\x01 é""#),
        ("${quote .user .count}", "\"admin\" \"42\""),
        ("${quote .nothing .user}", "\"admin\""),
        ("${.user | squote}", "'admin'"),
        ("${squote .user .flag}", "'admin' 'true'"),
        ("${squote .nothing .user}", "'admin'"),
        ("${quote .nothing}", ""),
        ("${.user | toJson}", "\"admin\""),
        (
            "${.html | toJson}",
            r#""\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e""#,
        ),
        (
            "${.nested | toJson}",
            r#"{"inner":{"deep":"deepsecret9"},"n":7}"#,
        ),
        ("${.list | toJson}", r#"[1,"two",{"three":3}]"#),
        ("${.count | toJson}", "42"),
        ("${.nothing | toJson}", "null"),
        ("${toJson 5}", "5"),
        ("${.count | toString}", "42"),
        ("${.user | default \"x\"}", "admin"),
        ("${.empty | default \"x\"}", "x"),
        ("${.missing | default \"x\"}", "x"),
        ("${.nothing | default \"x\"}", "x"),
        ("${.off | default \"x\"}", "x"),
        ("${.emptyobj | default \"x\"}", "x"),
        // Vault numbers are json.Number (a string kind) in Bank-Vaults: 0 is not empty.
        ("${.zero | default \"x\"}", "0"),
        ("${default \"x\"}", "x"),
        ("${default \"x\" .user}", "admin"),
        ("${.missing | default .user | upper}", "ADMIN"),
        ("${default (.user | upper) .missing}", "ADMIN"),
        (
            "${.user | sha256sum}",
            "8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918",
        ),
        (
            "${\"\" | sha256sum}",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("${.password | urlquery}", "p%40ss+w%2Frd%26%3Cx%3E"),
        ("${index . \"api-key\"}", "k-1"),
        ("${index . \"api-key\" | upper}", "K-1"),
        ("${index .nested \"inner\" \"deep\"}", "deepsecret9"),
        ("${index .list 1}", "two"),
        ("${index .list 2 \"three\"}", "3"),
        ("${.nested.inner.deep}", "deepsecret9"),
        ("${.nested.n}", "7"),
        ("${.count}", "42"),
        ("${.float}", "1.5"),
        ("${.flag}", "true"),
        ("${.nothing}", ""),
        ("${.list}", r#"[1,"two",{"three":3}]"#),
        ("${(.user)}", "admin"),
        ("${(.user | upper) | lower}", "admin"),
        ("${\"lit\\t\\u00e9\\x41\"}", "lit\té\u{41}"),
        ("${`raw \\n }`}", "raw \\n }"),
        ("${42}", "42"),
        ("${-7}", "-7"),
        ("${true}", "true"),
        ("a  ${- .user -}  b", "aadminb"),
        ("a ${-3} b", "a -3 b"),
        ("${.count | b64enc}", "NDI="),
        ("${printf \"%s:%s\" .user .password}", "admin:p@ss w/rd&<x>"),
        ("${.user | printf \"user=%s\"}", "user=admin"),
        ("${printf \"%d%%\" .count}", "42%"),
        ("${printf \"%d\" -3}", "-3"),
        ("${printf \"%q\" .user}", "\"admin\""),
        ("${printf \"%v-%v\" .flag .count}", "true-42"),
        ("${printf \"no verbs\"}", "no verbs"),
        ("${printf \"%s\" (.user | upper)}", "ADMIN"),
        ("${print .user .count}", "admin42"),
        ("${print 1 2}", "1 2"),
        ("${print .flag .off}", "true false"),
        ("${print \"a\" 1 .flag}", "a1 true"),
        ("${print}", ""),
    ];
    for (template, expected) in cases {
        assert_eq!(ok(template), *expected, "template {template:?}");
    }
}

#[test]
fn render_printf_errors_name_argument_not_value() {
    assert_eq!(
        render("${printf \"%s=%d\" .user .user}"),
        Err(TemplateError::WrongType {
            function: "printf",
            position: 3,
            found: "string",
            expected: "an integer for %d"
        })
    );
    assert_eq!(
        render("${printf \"%d\" .float}").map_err(|e| matches!(e, TemplateError::WrongType { .. })),
        Err(true)
    );
    assert_eq!(
        render("${printf \"%s\" .nope}"),
        Err(TemplateError::MissingKey {
            key: ".nope".to_owned()
        })
    );
}

#[test]
fn render_b64dec_invalid_input_is_decode_error() {
    assert_eq!(
        render("${.notb64 | b64dec}"),
        Err(TemplateError::Decode { function: "b64dec" })
    );
    assert_eq!(
        render("${.latin1 | b64dec}"),
        Err(TemplateError::NotUtf8 { function: "b64dec" })
    );
    // Unpadded input is rejected, as by Go's StdEncoding.
    assert_eq!(
        render("${\"aGk\" | b64dec}"),
        Err(TemplateError::Decode { function: "b64dec" })
    );
}

#[test]
fn render_missing_key_names_key_only() {
    let cases = [
        ("${.nope}", ".nope"),
        ("${.nope | upper}", ".nope"),
        ("${.nested.nope}", ".nested.nope"),
        ("${.nested.inner.nope | b64enc}", ".nested.inner.nope"),
        ("${quote .nope}", ".nope"),
        ("${.nope | toJson}", ".nope"),
        ("${index . \"nope\"}", ".[\"nope\"]"),
        ("${index .list 9}", ".list[9]"),
        ("prefix ${.user} ${.nope}", ".nope"),
    ];
    for (template, key) in cases {
        let err = render(template).expect_err(template);
        assert_eq!(
            err,
            TemplateError::MissingKey {
                key: key.to_owned()
            },
            "{template}"
        );
        let msg = err.to_string();
        assert!(!msg.contains("admin"), "{msg}");
    }
}

#[test]
fn render_wrong_types_are_errors_without_values() {
    let cases: &[(&str, &str, usize, &str)] = &[
        ("${.nested | upper}", "upper", 1, "object"),
        ("${.list | b64enc}", "b64enc", 1, "array"),
        ("${.flag | lower}", "lower", 1, "boolean"),
        ("${.nothing | trim}", "trim", 1, "null"),
        ("${replace .nested \"a\" .user}", "replace", 1, "object"),
        ("${index \"lit\" \"x\"}", "index", 1, "string"),
    ];
    for (template, function, position, found) in cases {
        match render(template) {
            Err(TemplateError::WrongType {
                function: f,
                position: p,
                found: k,
                ..
            }) => {
                assert_eq!((f, p, k), (*function, *position, *found), "{template}");
            }
            other => panic!("{template}: expected WrongType, got {other:?}"),
        }
    }
    assert_eq!(
        render("${.user.inner}"),
        Err(TemplateError::NotAnObject {
            key: ".user.inner".to_owned(),
            found: "string"
        })
    );
}

#[test]
fn parse_errors_are_specific() {
    type Check = fn(&TemplateError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("${.a", |e| {
            matches!(e, TemplateError::UnterminatedAction { offset: 0 })
        }),
        ("x ${\"a}", |e| {
            matches!(e, TemplateError::UnterminatedString { offset: 4 })
        }),
        ("${`a}", |e| {
            matches!(e, TemplateError::UnterminatedString { .. })
        }),
        (
            "${.a | frobnicate}",
            |e| matches!(e, TemplateError::UnknownFunction { name } if name == "frobnicate"),
        ),
        (
            "${env \"HOME\"}",
            |e| matches!(e, TemplateError::UnknownFunction { name } if name == "env"),
        ),
        (
            "${if .a}",
            |e| matches!(e, TemplateError::UnsupportedAction { keyword } if keyword == "if"),
        ),
        ("${range .a}", |e| {
            matches!(e, TemplateError::UnsupportedAction { .. })
        }),
        ("${end}", |e| {
            matches!(e, TemplateError::UnsupportedAction { .. })
        }),
        ("${$x := .a}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${/* c */}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${ }", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${.a |}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${| upper}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${.a | .b}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${.a .b}", |e| matches!(e, TemplateError::Syntax { .. })),
        (
            "${.a-b}",
            |e| matches!(e, TemplateError::Syntax { reason, .. } if reason.contains("index")),
        ),
        ("${.a.}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${(.a}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${.a)}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${\"\\q\"}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${\"\\xff\"}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${\"\\ud800\"}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${12abc}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${99999999999999999999}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${#}", |e| matches!(e, TemplateError::Syntax { .. })),
        ("${upper upper}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${index . .user}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${\"k\" | index .}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${.a | upper \"x\"}", |e| {
            matches!(
                e,
                TemplateError::Arity {
                    function: "upper",
                    got: 2,
                    ..
                }
            )
        }),
        ("${b64enc}", |e| {
            matches!(
                e,
                TemplateError::Arity {
                    function: "b64enc",
                    got: 0,
                    ..
                }
            )
        }),
        ("${.a | replace \"x\"}", |e| {
            matches!(
                e,
                TemplateError::Arity {
                    function: "replace",
                    got: 2,
                    ..
                }
            )
        }),
        ("${default}", |e| {
            matches!(
                e,
                TemplateError::Arity {
                    function: "default",
                    got: 0,
                    ..
                }
            )
        }),
        (
            "${printf \"%x\" .a}",
            |e| matches!(e, TemplateError::Syntax { reason, .. } if reason.contains("%x")),
        ),
        ("${printf \"%5s\" .a}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        (
            "${printf \"%s %s\" .a}",
            |e| matches!(e, TemplateError::Syntax { reason, .. } if reason.contains("2 verbs")),
        ),
        ("${printf \"%s\"}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${printf \"x\" .a}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${printf .fmt .a}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${.a | printf}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${printf \"100%\"}", |e| {
            matches!(e, TemplateError::Syntax { .. })
        }),
        ("${printf}", |e| {
            matches!(
                e,
                TemplateError::Arity {
                    function: "printf",
                    got: 0,
                    ..
                }
            )
        }),
        ("${.a | default \"x\" \"y\"}", |e| {
            matches!(
                e,
                TemplateError::Arity {
                    function: "default",
                    got: 3,
                    ..
                }
            )
        }),
    ];
    for (template, check) in cases {
        match Template::parse(template) {
            Ok(t) => panic!("{template:?} should not parse: {t:?}"),
            Err(e) => assert!(check(&e), "{template:?}: unexpected {e:?}"),
        }
    }
}

#[test]
fn parse_nesting_beyond_limit_is_too_deep() {
    let ok_depth = format!(
        "${{{}.user{}}}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    );
    assert_eq!(
        Template::parse(&ok_depth).and_then(|t| t.render(&data()).map(|s| s.to_string())),
        Ok("admin".to_owned())
    );
    let deep = format!(
        "${{{}.user{}}}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(
        Template::parse(&deep),
        Err(TemplateError::TooDeep { max: MAX_DEPTH })
    );
    // Far deeper than the limit still returns an error rather than overflowing the stack.
    let very_deep = format!("${{{}.user}}", "(".repeat(60_000));
    assert!(Template::parse(&very_deep).is_err());
}

#[test]
fn parse_text_over_limit_is_too_long() {
    let text = "x".repeat(MAX_TEMPLATE_LEN + 1);
    assert_eq!(
        Template::parse(&text),
        Err(TemplateError::TooLong {
            len: MAX_TEMPLATE_LEN + 1,
            max: MAX_TEMPLATE_LEN
        })
    );
}

#[test]
fn render_output_over_limit_is_refused_before_allocating() {
    let big = format!(r#"{{"s":"{}"}}"#, "a".repeat(2048));
    let data = SecretJson::from_slice(big.as_bytes()).expect("json");
    // 2049 insertions of a 1 KiB string would be ~2 MiB.
    let t = Template::parse(&format!("${{.s | replace \"\" \"{}\"}}", "b".repeat(1024)))
        .expect("parses");
    assert_eq!(
        t.render(&data).map(|s| s.len()),
        Err(TemplateError::OutputTooLarge {
            max: MAX_OUTPUT_LEN
        })
    );
    // Many actions whose sum exceeds the limit.
    let many = "${.s}".repeat(600);
    let t = Template::parse(&many).expect("parses");
    assert_eq!(
        t.render(&data).map(|s| s.len()),
        Err(TemplateError::OutputTooLarge {
            max: MAX_OUTPUT_LEN
        })
    );
}

#[test]
fn source_and_referenced_keys_reflect_template() {
    let text = "a ${.x | upper} ${.y.z} ${index . \"k-1\"} ${default .w .x}";
    let t = Template::parse(text).expect("parses");
    assert_eq!(t.source(), text);
    assert_eq!(t.referenced_keys(), ["k-1", "w", "x", "y"]);
}

#[test]
fn render_same_template_twice_is_stable() {
    let t = Template::parse("${.password | b64enc | b64dec | sha256sum}").expect("parses");
    let d = data();
    let first = t.render(&d).expect("renders");
    let second = t.render(&d).expect("renders");
    assert_eq!(*first, *second);
    assert_eq!(first.len(), 64);
}

#[test]
fn render_errors_never_contain_secret_values() {
    let secrets = [
        "AKIAIOSFODNN7EXAMPLE",
        "p@ss w/rd",
        "admin",
        "deepsecret9",
        "k-1",
    ];
    let templates = [
        "${.nope}",
        "${.password | b64dec}",
        "${.nested | upper}",
        "${.user.x}",
        "${index .nested \"inner\" \"nope\"}",
        "${.AWS_ACCESS_KEY_ID | b64dec}",
    ];
    for template in templates {
        let err = render(template).expect_err(template);
        let shown = format!("{err} {err:?}");
        for s in secrets {
            assert!(!shown.contains(s), "{template}: {shown}");
        }
    }
}
