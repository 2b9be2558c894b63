//! The reference grammar: what a `vault:` environment value means.
//!
//! The webhook (deciding whether to mutate a pod) and vault-env (resolving values before exec)
//! both call [`parse`], so they can never disagree on what a reference is. The semantics are
//! Bank-Vaults' (`injector.go` in `bank-vaults/vault-sdk`), made explicit and stricter where
//! Bank-Vaults would silently send garbage to Vault.
//!
//! # Grammar
//!
//! ```text
//! value    = login | transit | write | secret | inline | plain
//! login    = "vault:login"
//! transit  = "vault:v" DIGITS ":" CIPHERTEXT           CIPHERTEXT: 1+ chars, no white space/control
//! secret   = "vault:" PATH "#" KEY [ "#" VERSION ]
//! write    = ">>vault:" PATH "#" KEY [ "#" BODY ]        BODY: a JSON object, default {}
//! inline   = TEXT { "${vault:" PATH "#" KEY [ "#" VERSION ] "}" TEXT }
//! PATH     = SEGMENT { "/" SEGMENT }                    no leading "/", no empty, "." or ".." segment
//! KEY      = a map key, or a template (any KEY containing "${", see crate::template)
//! VERSION  = DIGITS                                     an unsigned 64-bit integer (KV v2 version)
//! ```
//!
//! Examples:
//!
//! | value | parses as |
//! |---|---|
//! | `vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY` | [`EnvValue::Secret`], latest version |
//! | `vault:secret/data/account#password#1` | [`EnvValue::Secret`], version 1 |
//! | `vault:secret/data/accounts/aws#${.AWS_SECRET_ACCESS_KEY}` | [`EnvValue::Secret`], template key |
//! | `vault:secret/data/aws#AWS key in base64: ${.AWS_ACCESS_KEY_ID \| b64enc}` | [`EnvValue::Secret`], template key with text |
//! | `postgres://${vault:db#user}:${vault:db#pass}@h/db` | [`EnvValue::Inline`]: text, ref, text, ref, text |
//! | `>>vault:pki/root/generate/internal#certificate` | [`EnvValue::Write`], body `{}` |
//! | `>>vault:transit/decrypt/k#${.plaintext \| b64dec}#{"ciphertext":"vault:v1:abc"}` | [`EnvValue::Write`] |
//! | `vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==` | [`EnvValue::Transit`] |
//! | `vault:login` | [`EnvValue::Login`] |
//! | `hello`, `my-vault:x`, `${HOME}` | [`EnvValue::Plain`] |
//!
//! # Rules for the ambiguous cases
//!
//! 1. **Which form.** A value that contains `${vault:` (or `${>>vault:`) anywhere is inline,
//!    even if it also starts with `vault:` (Bank-Vaults checks inline first). Otherwise a value
//!    starting with `>>vault:` is a write, one starting with `vault:` is login, transit or a
//!    secret, in that order; everything else is plain and never touched. [`contains_reference`]
//!    is exactly this test, so `contains_reference(v) == false` implies `parse(v) == Ok(Plain)`.
//! 2. **`vault:` needs `#`.** After `vault:` the text up to the first `#` is the PATH; a
//!    `vault:` value without `#` is an error unless it is exactly `vault:login` or a transit
//!    ciphertext (`vault:v1:…`, checked before any `#` split, so a ciphertext may contain `#`).
//!    `vault:login` is returned for any variable; the resolver honours it only for
//!    `VAULT_TOKEN`, as Bank-Vaults does (elsewhere Bank-Vaults fails with "secret data key or
//!    template not defined"). `>>vault:v1:…` is a write reference without `#KEY`, an error
//!    (Bank-Vaults would quietly treat it as a ciphertext).
//! 3. **Where the KEY ends.** The KEY runs to the next `#` that is *not inside a template
//!    action*: a `${` opens an action that ends at the first `}` outside a string literal
//!    (`"…"` with backslash escapes, or `` `…` ``), exactly as Go's template lexer does. So
//!    `>>vault:transit/decrypt/k#${.plaintext | b64dec}#{"ciphertext":"vault:v1:abc"}` is path
//!    `transit/decrypt/k`, template key `${.plaintext | b64dec}`, body
//!    `{"ciphertext":"vault:v1:abc"}`, and `vault:p#${ "#" | quote }` is one template key.
//!    A `#` in the plain text of a template key does split: `vault:p#a # ${.b}` is key `a ` and
//!    version ` ${.b}`, which is invalid (Bank-Vaults splits the same way).
//! 4. **After the KEY.** For a read (secret, inline), the rest after `#` must be a VERSION:
//!    ASCII digits only, no sign, no spaces, fitting in `u64`; anything else is an error
//!    (Bank-Vaults would pass it to Vault as `?version=…`). For a write, the whole rest is the
//!    BODY, `#` characters included, and must be a JSON object (`{}` when absent).
//! 5. **Inline references** start at `${vault:` and end at the first `}` that is not inside a
//!    template action, so a template key nests: `${vault:db#${.password | urlquery}}`. Plain
//!    keys inside an inline reference cannot contain `}`. Only the read form is supported
//!    inline; `${>>vault:…}`, `${vault:login}` and `${vault:v1:…}` (which Bank-Vaults accepts)
//!    are rejected with [`ReferenceError::UnsupportedInline`] rather than left as text. A
//!    `${vault:` that is never closed is [`ReferenceError::UnterminatedInline`] (Bank-Vaults
//!    would pass the value through as text). Text between references is kept verbatim
//!    (`${HOME}` in it stays literal). `${vault:a#b}}` is the reference `a#b` followed by the
//!    text `}` (Bank-Vaults' regex would read the key `b}`).
//! 6. **PATH** must be non-empty, not start or end with `/`, have no empty, `.` or `..`
//!    segment, and contain no white space, control character, `?`, `%` or `\` (these would
//!    change the request URL rather than name a secret).
//! 7. **KEY** must be non-empty. A KEY containing `${` is parsed as a
//!    [`crate::template::Template`] here, so template syntax errors and unknown functions are
//!    found at admission time, not in the pod.
//!
//! # Differences from Bank-Vaults
//!
//! Everything Bank-Vaults accepts and resolves to a value parses the same way here, except:
//!
//! - Inline `${>>vault:…}`, `${vault:login}` and `${vault:v1:…}` are rejected (rule 5).
//! - Errors where Bank-Vaults would send a malformed request or pass text through: a
//!   non-numeric VERSION, a bad PATH, an unclosed `${vault:`, a transit ciphertext with white
//!   space, a write BODY that is not a JSON object, `>>vault:vN:…` (rules 2–6).
//! - Templates: a missing key is an error (Go prints `<no value>`), `b64dec` of bad input is an
//!   error (Sprig returns the error text as the value), and only the functions listed in
//!   [`crate::template`] exist, checked before the pod starts.
//! - A structured (array or object) value becomes compact JSON instead of failing
//!   ([`crate::secret::SecretJson::to_env_string`]).
//!
//! `VAULT_ENV_FROM_PATH` uses a smaller grammar, `PATH [ "#" VERSION ] { "," PATH [ "#" VERSION ] }`,
//! parsed by [`parse_from_path`].
//!
//! # Security
//!
//! Every env value in an admitted object is attacker-controlled. The parser is total: any
//! `&str` gives `Ok` or `Err`, never a panic (property-tested with arbitrary and huge Unicode
//! input). Work is linear in the value's length, recursion is bounded (template parentheses,
//! serde_json's depth limit for bodies), and a value that looks like a reference is rejected
//! above [`MAX_VALUE_LEN`] (64 KiB) before any parsing. Errors quote the reference (at most
//! 200 characters of it), which is configuration, never a resolved value.

use std::fmt;

use crate::template::{Template, TemplateError, action_end};

/// Longest env value that is parsed as a reference, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// How much of a reference an error message quotes, in characters.
const QUOTE_CHARS: usize = 200;

/// What one env value asks vault-env to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvValue {
    /// Not a reference: passed to the app unchanged.
    Plain,
    /// Exactly `vault:login`: hand the login token to the app (only for `VAULT_TOKEN`).
    Login,
    /// `vault:PATH#KEY[#VERSION]`; KEY may be a template.
    Secret(SecretRef),
    /// Text with one or more `${vault:PATH#KEY[#VERSION]}`.
    Inline(Vec<Segment>),
    /// `>>vault:PATH#KEY[#JSON_BODY]`: POST the body, then select KEY from the response.
    Write(WriteRef),
    /// `vault:vN:BASE64`: a transit ciphertext to decrypt.
    Transit(TransitCiphertext),
}

/// A read of one key (or template) from one path, optionally at a KV v2 version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// Vault path as written (`secret/data/db`), without leading `/`.
    pub path: String,
    /// Which part of the secret's data becomes the value.
    pub selector: Selector,
    /// KV v2 version; `None` for the latest.
    pub version: Option<u64>,
}

/// What one Vault read serves: all references with equal `ReadKey` share one request (and so,
/// for a dynamic secret, one lease).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadKey {
    /// Vault path.
    pub path: String,
    /// KV v2 version; `None` for the latest.
    pub version: Option<u64>,
}

/// What one Vault write serves: Bank-Vaults caches writes by path and body, so two identical
/// write references share one response (one certificate, one decryption).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteKey {
    /// Vault path.
    pub path: String,
    /// The JSON body text, as written.
    pub body: String,
}

/// The KEY part of a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// A key of the secret's data map.
    Key(String),
    /// A template rendered against the whole data map (the KEY contained `${`).
    Template(Template),
}

/// One piece of an inline value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Literal text, kept as written.
    Text(String),
    /// A `${vault:…}` reference, replaced by its value.
    Ref(SecretRef),
}

/// A write reference (`>>vault:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteRef {
    /// Vault path to POST to.
    pub path: String,
    /// Which part of the response data becomes the value.
    pub selector: Selector,
    /// The request body: validated JSON object text, `{}` by default.
    pub body: String,
}

/// A transit ciphertext value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransitCiphertext {
    /// The whole value, `vault:v1:…`, as Vault's transit decrypt expects it.
    pub ciphertext: String,
}

/// Why a value is not a valid reference. Messages quote the reference, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("reference is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Length of the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `vault:PATH` with no `#KEY`.
    #[error("reference {reference:?} has no `#KEY` after the path")]
    MissingKey {
        /// The reference (shortened).
        reference: String,
    },
    /// `vault:PATH#` or `vault:PATH##1`.
    #[error("reference {reference:?} has an empty key")]
    EmptyKey {
        /// The reference (shortened).
        reference: String,
    },
    /// The path breaks a PATH rule.
    #[error("reference {reference:?} has an invalid path: {reason}")]
    InvalidPath {
        /// The reference (shortened).
        reference: String,
        /// Which rule.
        reason: &'static str,
    },
    /// The part after the key's `#` is not an unsigned integer.
    #[error("reference {reference:?}: version {version:?} is not an unsigned integer")]
    InvalidVersion {
        /// The reference (shortened).
        reference: String,
        /// The version text (shortened).
        version: String,
    },
    /// A write body that is not a JSON object.
    #[error("write reference {reference:?}: body is not a JSON object: {reason}")]
    InvalidBody {
        /// The reference (shortened).
        reference: String,
        /// The JSON error (position and kind).
        reason: String,
    },
    /// `vault:vN:` with an empty or malformed ciphertext.
    #[error("transit ciphertext {reference:?} is invalid: {reason}")]
    InvalidTransit {
        /// The value (shortened).
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `${vault:` with no closing `}`.
    #[error("inline reference starting at byte {offset} is not closed with `}}`")]
    UnterminatedInline {
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// A form that is not supported inside `${…}`.
    #[error("inline reference {reference:?}: {form} is not supported inside `${{…}}`")]
    UnsupportedInline {
        /// The inline reference (shortened).
        reference: String,
        /// Which form (`a write reference` …).
        form: &'static str,
    },
    /// The KEY is a template that does not parse. The template error is part of the message
    /// (not a `source`), so a one-line denial or log line shows what is wrong.
    #[error("reference {reference:?} has an invalid key template: {error}")]
    Template {
        /// The reference (shortened).
        reference: String,
        /// The template error.
        error: TemplateError,
    },
}

impl EnvValue {
    /// A short name of the form (`plain`, `login`, `secret`, `inline`, `write`, `transit`),
    /// for log fields and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EnvValue::Plain => "plain",
            EnvValue::Login => "login",
            EnvValue::Secret(_) => "secret",
            EnvValue::Inline(_) => "inline",
            EnvValue::Write(_) => "write",
            EnvValue::Transit(_) => "transit",
        }
    }

    /// The value written back as text (`None` for [`EnvValue::Plain`]); parsing it again gives
    /// an equal `EnvValue`.
    pub fn to_reference_string(&self) -> Option<String> {
        match self {
            EnvValue::Plain => None,
            EnvValue::Login => Some("vault:login".to_owned()),
            EnvValue::Secret(r) => Some(r.to_string()),
            EnvValue::Inline(segments) => {
                let mut out = String::new();
                for s in segments {
                    out.push_str(&s.to_string());
                }
                Some(out)
            }
            EnvValue::Write(w) => Some(w.to_string()),
            EnvValue::Transit(t) => Some(t.ciphertext.clone()),
        }
    }

    /// Every read this value needs (the secret, or each inline reference), in order.
    pub fn secret_refs(&self) -> Vec<&SecretRef> {
        match self {
            EnvValue::Secret(r) => vec![r],
            EnvValue::Inline(segments) => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Ref(r) => Some(r),
                    Segment::Text(_) => None,
                })
                .collect(),
            EnvValue::Plain | EnvValue::Login | EnvValue::Write(_) | EnvValue::Transit(_) => {
                Vec::new()
            }
        }
    }
}

impl SecretRef {
    /// What one Vault read serves.
    pub fn read_key(&self) -> ReadKey {
        ReadKey {
            path: self.path.clone(),
            version: self.version,
        }
    }
}

impl WriteRef {
    /// What one Vault write serves.
    pub fn write_key(&self) -> WriteKey {
        WriteKey {
            path: self.path.clone(),
            body: self.body.clone(),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault:{}#{}", self.path, self.selector)?;
        if let Some(v) = self.version {
            write!(f, "#{v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for WriteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ">>vault:{}#{}#{}", self.path, self.selector, self.body)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Key(k) => f.write_str(k),
            Selector::Template(t) => f.write_str(t.source()),
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Text(t) => f.write_str(t),
            Segment::Ref(r) => write!(f, "${{{r}}}"),
        }
    }
}

impl fmt::Display for ReadKey {
    /// `path` or `path#version`, as a log field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(v) = self.version {
            write!(f, "#{v}")?;
        }
        Ok(())
    }
}

/// Would vault-env touch this env value? (The webhook's cheap check.)
///
/// True for values starting with `vault:` (including `vault:v1:…` and `vault:login`) or
/// `>>vault:`, and for values containing `${vault:` or `${>>vault:`.
pub fn contains_reference(value: &str) -> bool {
    value.starts_with("vault:")
        || value.starts_with(">>vault:")
        || value.contains("${vault:")
        || value.contains("${>>vault:")
}

/// Parses one env value.
///
/// # Errors
///
/// [`ReferenceError`] when the value looks like a reference but breaks the grammar (see the
/// module documentation). A value for which [`contains_reference`] is false is always
/// `Ok(EnvValue::Plain)`.
pub fn parse(value: &str) -> Result<EnvValue, ReferenceError> {
    if !contains_reference(value) {
        return Ok(EnvValue::Plain);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(ReferenceError::TooLong {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    if value.contains("${vault:") || value.contains("${>>vault:") {
        return parse_inline(value).map(EnvValue::Inline);
    }
    if let Some(rest) = value.strip_prefix(">>vault:") {
        let (path, key, tail) = split_body(value, rest)?;
        let body = match tail {
            None => "{}".to_owned(),
            Some(body) => {
                validate_body(value, body)?;
                body.to_owned()
            }
        };
        return Ok(EnvValue::Write(WriteRef {
            path: path.to_owned(),
            selector: selector(value, key)?,
            body,
        }));
    }
    // contains_reference and the checks above leave only the `vault:` prefix here.
    let rest = value.strip_prefix("vault:").unwrap_or(value);
    if rest == "login" {
        return Ok(EnvValue::Login);
    }
    if is_transit_prefix(rest) {
        validate_transit(value)?;
        return Ok(EnvValue::Transit(TransitCiphertext {
            ciphertext: value.to_owned(),
        }));
    }
    let (path, key, tail) = split_body(value, rest)?;
    Ok(EnvValue::Secret(SecretRef {
        path: path.to_owned(),
        selector: selector(value, key)?,
        version: tail.map(|v| version(value, v)).transpose()?,
    }))
}

/// Parses `VAULT_ENV_FROM_PATH`: comma-separated `PATH[#VERSION]` entries.
///
/// # Errors
///
/// [`ReferenceError::InvalidPath`] or [`ReferenceError::InvalidVersion`] for a bad entry
/// (an empty entry is an invalid path), [`ReferenceError::TooLong`] above [`MAX_VALUE_LEN`].
pub fn parse_from_path(value: &str) -> Result<Vec<ReadKey>, ReferenceError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ReferenceError::TooLong {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    value
        .split(',')
        .map(|entry| {
            let (path, version_text) = match entry.split_once('#') {
                Some((p, v)) => (p, Some(v)),
                None => (entry, None),
            };
            validate_path(entry, path)?;
            Ok(ReadKey {
                path: path.to_owned(),
                version: version_text.map(|v| version(entry, v)).transpose()?,
            })
        })
        .collect()
}

/// `vault:v` DIGITS `:` — the transit prefix (after `vault:` is stripped: `v1:…`).
fn is_transit_prefix(rest: &str) -> bool {
    let Some(after_v) = rest.strip_prefix('v') else {
        return false;
    };
    let digits = after_v.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && after_v.as_bytes().get(digits) == Some(&b':')
}

fn validate_transit(value: &str) -> Result<(), ReferenceError> {
    let rest = value.strip_prefix("vault:v").unwrap_or(value);
    let ciphertext = rest.split_once(':').map_or("", |(_, c)| c);
    let reason = if ciphertext.is_empty() {
        Some("the ciphertext after `vault:vN:` is empty")
    } else if ciphertext
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        Some("the ciphertext contains white space or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ReferenceError::InvalidTransit {
            reference: shorten(value),
            reason,
        }),
        None => Ok(()),
    }
}

/// Splits `PATH#KEY[#REST]` (the part after `vault:` / `>>vault:`). `value` is for errors.
fn split_body<'v>(
    value: &str,
    rest: &'v str,
) -> Result<(&'v str, &'v str, Option<&'v str>), ReferenceError> {
    let Some((path, after)) = rest.split_once('#') else {
        return Err(ReferenceError::MissingKey {
            reference: shorten(value),
        });
    };
    validate_path(value, path)?;
    let key_end = scan_key(value, after, false)?;
    let key = &after[..key_end];
    let tail = (key_end < after.len()).then(|| &after[key_end + 1..]);
    Ok((path, key, tail))
}

/// Index in `s` where a KEY ends: the first `#` (or, inside an inline reference, `}`) outside
/// template actions, or `s.len()`.
fn scan_key(value: &str, s: &str, inline: bool) -> Result<usize, ReferenceError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => return Ok(i),
            b'}' if inline => return Ok(i),
            b'$' if bytes.get(i + 1) == Some(&b'{') => match action_end(s, i + 2) {
                Ok(Some(close)) => i = close + 1,
                Ok(None) => {
                    return Err(template_error(
                        value,
                        TemplateError::UnterminatedAction { offset: i },
                    ));
                }
                Err(offset) => {
                    return Err(template_error(
                        value,
                        TemplateError::UnterminatedString { offset },
                    ));
                }
            },
            _ => i += 1,
        }
    }
    Ok(bytes.len())
}

fn template_error(value: &str, error: TemplateError) -> ReferenceError {
    ReferenceError::Template {
        reference: shorten(value),
        error,
    }
}

fn selector(value: &str, key: &str) -> Result<Selector, ReferenceError> {
    if key.is_empty() {
        return Err(ReferenceError::EmptyKey {
            reference: shorten(value),
        });
    }
    if key.contains("${") {
        Template::parse(key)
            .map(Selector::Template)
            .map_err(|error| template_error(value, error))
    } else {
        Ok(Selector::Key(key.to_owned()))
    }
}

fn version(value: &str, text: &str) -> Result<u64, ReferenceError> {
    let err = || ReferenceError::InvalidVersion {
        reference: shorten(value),
        version: shorten(text),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    text.parse().map_err(|_| err())
}

fn validate_path(value: &str, path: &str) -> Result<(), ReferenceError> {
    let reason = if path.is_empty() {
        Some("it is empty")
    } else if path.starts_with('/') {
        Some("it starts with `/`")
    } else if has_forbidden_char(path) {
        Some("it contains white space, a control character, `?`, `%` or `\\`")
    } else {
        // One pass over the segments (the webhook validates every reference of every pod).
        path.split('/').find_map(|segment| match segment {
            "" => Some("it has an empty segment (`//` or a trailing `/`)"),
            "." | ".." => Some("it has a `.` or `..` segment"),
            _ => None,
        })
    };
    match reason {
        Some(reason) => Err(ReferenceError::InvalidPath {
            reference: shorten(value),
            reason,
        }),
        None => Ok(()),
    }
}

/// White space, a control character, `?`, `%` or `\\` anywhere in `path`. Byte checks for
/// ASCII text; the Unicode definitions only when there is non-ASCII text to apply them to.
fn has_forbidden_char(path: &str) -> bool {
    if path.is_ascii() {
        path.bytes().any(|b| {
            b.is_ascii_whitespace()
                // U+000B (vertical tab) is Unicode white space but not `is_ascii_whitespace`;
                // it is a control character either way.
                || b.is_ascii_control()
                || matches!(b, b'?' | b'%' | b'\\')
        })
    } else {
        path.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '%' | '\\'))
    }
}

fn validate_body(value: &str, body: &str) -> Result<(), ReferenceError> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
        .map(drop)
        .map_err(|e| ReferenceError::InvalidBody {
            reference: shorten(value),
            reason: e.to_string(),
        })
}

fn parse_inline(value: &str) -> Result<Vec<Segment>, ReferenceError> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut pos = 0;
    while pos < value.len() {
        let Some(open) = next_inline_start(value, pos) else {
            text.push_str(&value[pos..]);
            break;
        };
        text.push_str(&value[pos..open]);
        let inner_start = open + 2; // after "${"
        let inner = &value[inner_start..];
        let close = inline_end(value, inner)
            .ok_or(ReferenceError::UnterminatedInline { offset: open })??;
        let reference = &inner[..close];
        let shown = &value[open..inner_start + close + 1];
        if reference.starts_with(">>vault:") {
            return Err(unsupported(shown, "a write reference"));
        }
        let rest = reference.strip_prefix("vault:").unwrap_or(reference);
        if rest == "login" {
            return Err(unsupported(shown, "`vault:login`"));
        }
        if is_transit_prefix(rest) {
            return Err(unsupported(shown, "a transit ciphertext"));
        }
        let (path, key, tail) = split_body(shown, rest)?;
        if !text.is_empty() {
            segments.push(Segment::Text(std::mem::take(&mut text)));
        }
        segments.push(Segment::Ref(SecretRef {
            path: path.to_owned(),
            selector: selector(shown, key)?,
            version: tail.map(|v| version(shown, v)).transpose()?,
        }));
        pos = inner_start + close + 1;
    }
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(segments)
}

/// Byte index of the next `${vault:` or `${>>vault:` at or after `from`. One forward scan over
/// `${` occurrences, so a value with many references stays linear.
fn next_inline_start(value: &str, from: usize) -> Option<usize> {
    let mut pos = from;
    while let Some(rel) = value.get(pos..)?.find("${") {
        let open = pos + rel;
        let after = &value[open + 2..];
        if after.starts_with("vault:") || after.starts_with(">>vault:") {
            return Some(open);
        }
        pos = open + 2;
    }
    None
}

/// Where the `}` closing an inline reference is, within `inner` (which starts at `vault:`).
/// `None`: never closed.
fn inline_end(value: &str, inner: &str) -> Option<Result<usize, ReferenceError>> {
    // PATH: up to `#` or `}` (a `}` before any `#` closes a reference with no key).
    let path_end = inner.find(['#', '}'])?;
    if inner.as_bytes()[path_end] == b'}' {
        return Some(Ok(path_end));
    }
    let after_hash = path_end + 1;
    let key_end = match scan_key(value, &inner[after_hash..], true) {
        Ok(k) => after_hash + k,
        Err(e) => return Some(Err(e)),
    };
    match inner.as_bytes().get(key_end) {
        None => None,
        Some(b'}') => Some(Ok(key_end)),
        // `#` after the key: the version runs to the next `}`.
        Some(_) => inner[key_end..].find('}').map(|i| Ok(key_end + i)),
    }
}

fn unsupported(shown: &str, form: &'static str) -> ReferenceError {
    ReferenceError::UnsupportedInline {
        reference: shorten(shown),
        form,
    }
}

/// At most [`QUOTE_CHARS`] characters of `s`, for error messages.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}
