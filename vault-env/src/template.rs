//! Key templates: the Go-template subset Bank-Vaults accepts in the key position of a reference.
//!
//! Bank-Vaults renders a key that contains `${` with Go's `text/template` (delimiters `${` and
//! `}`) and the Sprig function map, against the secret's data map. This module reproduces the
//! part of that language that makes sense for one secret, parsed once and rendered per read:
//!
//! ```text
//! template  = { text | "${" ["- "] pipeline [" -"] "}" }
//! pipeline  = command { "|" command }        the value of each stage is the LAST argument of the next
//! command   = operand | FUNCTION { operand }
//! operand   = "." | "." KEY { "." KEY }       field of the secret (".a.b" nested), "." the whole secret
//!           | "\"…\"" | "`…`"                 string literal (Go escapes) | raw string
//!           | INTEGER | "true" | "false" | "(" pipeline ")"
//! KEY       = (letter | "_") { letter | digit | "_" }    (for other keys use: index . "my-key")
//! ```
//!
//! Examples: `${.password}`, `${.AWS_ACCESS_KEY_ID | b64enc}`, `text ${.A} and ${.B}`,
//! `${.plaintext | b64dec}`, `${.password | urlquery}`, `${ .user | default "admin" | quote }`,
//! `${index . "api-key" | upper}`. The trim markers `${- ` and ` -}` trim the whitespace around
//! an action, as in Go.
//!
//! Functions (Sprig semantics unless noted; `s` is a string argument):
//!
//! | function | result |
//! |---|---|
//! | `b64enc s` / `b64dec s` | standard base64 with padding; `b64dec` fails on bad input or non-UTF-8 bytes (Sprig would return the error text as the value) |
//! | `upper s` / `lower s` / `title s` | case mapping (`title`: first letter of each word, like Go `strings.Title`) |
//! | `trim s` / `nospace s` | strip surrounding / all white space |
//! | `trimAll cutset s` / `trimPrefix p s` / `trimSuffix p s` | Go `strings.Trim` / `TrimPrefix` / `TrimSuffix` |
//! | `replace old new s` | replace every occurrence |
//! | `quote v…` / `squote v…` | Go `%q` quoting / single quotes, joined by spaces (null arguments skipped) |
//! | `toJson v` / `toString v` | compact JSON as Go `json.Marshal` (sorted keys, HTML escapes) / text of a value |
//! | `default d v` | `v` unless it is empty (missing, null, `""`, `false`, `0`, `[]`, `{}`), else `d` |
//! | `sha256sum s` | lower-case hex SHA-256 |
//! | `urlquery s` | Go `url.QueryEscape` (the `text/template` builtin) |
//! | `index v k…` | nested lookup with literal keys (strings for objects, integers for arrays) |
//! | `printf "fmt" v…` | Go `fmt.Sprintf` with a literal format and the verbs `%s %v %d %q %%` (checked at parse time) |
//! | `print v…` | Go `fmt.Sprint` (a space between operands only when neither is a string) |
//!
//! Strings and numbers are accepted where a string is expected; booleans, null, arrays and
//! objects are type errors. Printing a value: strings as is, numbers as their JSON text,
//! booleans `true`/`false`, null as the empty string, arrays and objects as compact JSON.
//! A missing key is an error when printed or passed to any function but `default` (Go would
//! print `<no value>`).
//!
//! Not supported (parse errors): `if`/`range`/`with`/`define`/`template`/`block`, variables,
//! comments, method-style `.a.b` on parenthesised values, and Sprig functions not listed above.
//!
//! # Security
//!
//! Template text comes from the pod spec and is attacker-controlled. Parsing is total (every
//! input gives `Ok` or `Err`, never a panic), iterative except for parentheses (bounded at
//! [`MAX_DEPTH`]), and limited to [`MAX_TEMPLATE_LEN`] bytes. Rendering is bounded: no function
//! can produce more than [`MAX_OUTPUT_LEN`] bytes (sizes are checked *before* allocating).
//! Intermediate and final strings live in `Zeroizing` buffers; the output is assembled in one
//! exact-size allocation. Error messages name keys, functions and positions from the template
//! text, never a value from the secret.

use std::fmt;

use base64::Engine as _;
use sha2::Digest as _;
use zeroize::{Zeroize, Zeroizing};

use crate::secret::{SecretJson, write_json_string};

/// Longest template text accepted, in bytes (the same bound as a whole env value).
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;
/// Largest rendered output (and largest intermediate value), in bytes.
pub const MAX_OUTPUT_LEN: usize = 1024 * 1024;
/// Deepest nesting of parenthesised pipelines.
pub const MAX_DEPTH: usize = 32;

/// A parsed key template. Parse once with [`Template::parse`], render per secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    nodes: Vec<Node>,
}

/// Why a template failed to parse or render. Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is longer than [`MAX_TEMPLATE_LEN`].
    #[error("template is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `${` without a closing `}`.
    #[error("action opened at byte {offset} is not closed with `}}`")]
    UnterminatedAction {
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// A string literal without its closing quote.
    #[error("string literal at byte {offset} is not closed")]
    UnterminatedString {
        /// Byte offset of the opening quote.
        offset: usize,
    },
    /// Anything else the parser rejects.
    #[error("template syntax error at byte {offset}: {reason}")]
    Syntax {
        /// Byte offset in the template text.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A Go-template control action this subset does not implement.
    #[error("unsupported template action `{keyword}`: only pipelines of functions are supported")]
    UnsupportedAction {
        /// The keyword (`if`, `range`, …).
        keyword: String,
    },
    /// A function name that is not in the supported list.
    #[error("unknown template function `{name}`")]
    UnknownFunction {
        /// The name as written.
        name: String,
    },
    /// A function called with the wrong number of arguments (the piped value counts).
    #[error("template function `{function}` takes {expected} arguments, got {got}")]
    Arity {
        /// Function name.
        function: &'static str,
        /// Accepted counts, e.g. `1` or `1 to 2`.
        expected: String,
        /// Arguments given.
        got: usize,
    },
    /// Parentheses nested deeper than [`MAX_DEPTH`].
    #[error("template nests parentheses deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A key the template reads is not in the secret.
    #[error("key `{key}` not found in the secret")]
    MissingKey {
        /// The key path as written in the template (`.a.b`).
        key: String,
    },
    /// A field lookup on something that is not an object.
    #[error("cannot look up `{key}`: the value there is a {found}, not an object")]
    NotAnObject {
        /// The key path as written.
        key: String,
        /// JSON kind found.
        found: &'static str,
    },
    /// A function got an argument of the wrong kind.
    #[error(
        "template function `{function}`: argument {position} is a {found}, expected {expected}"
    )]
    WrongType {
        /// Function name.
        function: &'static str,
        /// 1-based argument position (the piped value is the last).
        position: usize,
        /// What was found (`object`, `boolean` …).
        found: &'static str,
        /// What the function wants.
        expected: &'static str,
    },
    /// `b64dec` input is not base64.
    #[error("template function `{function}`: input is not valid base64")]
    Decode {
        /// Function name.
        function: &'static str,
    },
    /// A function produced bytes that are not UTF-8.
    #[error("template function `{function}`: result is not valid UTF-8")]
    NotUtf8 {
        /// Function name.
        function: &'static str,
    },
    /// The output (or an intermediate value) would exceed [`MAX_OUTPUT_LEN`].
    #[error("template output would exceed {max} bytes")]
    OutputTooLarge {
        /// The limit.
        max: usize,
    },
}

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Text(String),
    Action(Pipeline),
}

#[derive(Clone, PartialEq, Eq)]
struct Pipeline {
    commands: Vec<Command>,
}

#[derive(Clone, PartialEq, Eq)]
enum Command {
    Operand(Operand),
    Call { func: Func, args: Vec<Operand> },
}

#[derive(Clone, PartialEq, Eq)]
enum Operand {
    /// `.` (empty) or `.a.b`.
    Field(Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
    Paren(Box<Pipeline>),
}

/// The supported functions.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Func {
    B64enc,
    B64dec,
    Upper,
    Lower,
    Title,
    Trim,
    Nospace,
    TrimAll,
    TrimPrefix,
    TrimSuffix,
    Replace,
    Quote,
    Squote,
    ToJson,
    ToString,
    Default,
    Sha256sum,
    Urlquery,
    Index,
    Printf,
    Print,
}

impl Func {
    const ALL: [Func; 21] = [
        Func::B64enc,
        Func::B64dec,
        Func::Upper,
        Func::Lower,
        Func::Title,
        Func::Trim,
        Func::Nospace,
        Func::TrimAll,
        Func::TrimPrefix,
        Func::TrimSuffix,
        Func::Replace,
        Func::Quote,
        Func::Squote,
        Func::ToJson,
        Func::ToString,
        Func::Default,
        Func::Sha256sum,
        Func::Urlquery,
        Func::Index,
        Func::Printf,
        Func::Print,
    ];

    fn name(self) -> &'static str {
        match self {
            Func::B64enc => "b64enc",
            Func::B64dec => "b64dec",
            Func::Upper => "upper",
            Func::Lower => "lower",
            Func::Title => "title",
            Func::Trim => "trim",
            Func::Nospace => "nospace",
            Func::TrimAll => "trimAll",
            Func::TrimPrefix => "trimPrefix",
            Func::TrimSuffix => "trimSuffix",
            Func::Replace => "replace",
            Func::Quote => "quote",
            Func::Squote => "squote",
            Func::ToJson => "toJson",
            Func::ToString => "toString",
            Func::Default => "default",
            Func::Sha256sum => "sha256sum",
            Func::Urlquery => "urlquery",
            Func::Index => "index",
            Func::Printf => "printf",
            Func::Print => "print",
        }
    }

    fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Accepted argument counts (the piped value included): `(min, max)`, `None` = variadic.
    fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::B64enc
            | Func::B64dec
            | Func::Upper
            | Func::Lower
            | Func::Title
            | Func::Trim
            | Func::Nospace
            | Func::ToJson
            | Func::ToString
            | Func::Sha256sum
            | Func::Urlquery => (1, Some(1)),
            Func::TrimAll | Func::TrimPrefix | Func::TrimSuffix => (2, Some(2)),
            Func::Replace => (3, Some(3)),
            Func::Default => (1, Some(2)),
            Func::Quote | Func::Squote | Func::Print => (0, None),
            Func::Printf => (1, None),
            Func::Index => (1, None),
        }
    }
}

impl Template {
    /// Parses template text (the key part of a reference, e.g. `${.a | b64enc}`).
    ///
    /// # Errors
    ///
    /// [`TemplateError`] for syntax errors, unknown functions, wrong argument counts and
    /// unsupported actions; all are found here, before anything is read from Vault.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong {
                len: text.len(),
                max: MAX_TEMPLATE_LEN,
            });
        }
        let mut nodes = Vec::new();
        let mut pos = 0;
        let mut trim_next_text = false;
        while pos < text.len() {
            let Some(rel) = text[pos..].find("${") else {
                push_text(&mut nodes, &text[pos..], trim_next_text);
                break;
            };
            let open = pos + rel;
            push_text(&mut nodes, &text[pos..open], trim_next_text);
            let body_start = open + 2;
            let close = match action_end(text, body_start) {
                Ok(Some(close)) => close,
                Ok(None) => return Err(TemplateError::UnterminatedAction { offset: open }),
                Err(offset) => return Err(TemplateError::UnterminatedString { offset }),
            };
            let mut body_from = body_start;
            let mut body_to = close;
            let body = &text[body_start..close];
            if body.len() >= 2 && body.starts_with('-') && is_trim_space(body.as_bytes()[1]) {
                trim_trailing_text(&mut nodes);
                body_from += 1;
            }
            trim_next_text = false;
            let bytes = text.as_bytes();
            if body_to >= body_from + 2
                && bytes[body_to - 1] == b'-'
                && is_trim_space(bytes[body_to - 2])
            {
                trim_next_text = true;
                body_to -= 1;
            }
            let pipeline = parse_action(text, body_from, body_to)?;
            nodes.push(Node::Action(pipeline));
            pos = close + 1;
        }
        Ok(Template {
            source: text.to_owned(),
            nodes,
        })
    }

    /// The template text as written (used to print a reference back).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders against one secret's data (the unwrapped KV map, or a response's `data`).
    ///
    /// # Errors
    ///
    /// [`TemplateError`] for a missing key, a type mismatch, bad base64, or output larger than
    /// [`MAX_OUTPUT_LEN`]. The error names the key or function, never a value.
    pub fn render(&self, data: &SecretJson) -> Result<Zeroizing<String>, TemplateError> {
        let mut parts: Vec<Part<'_>> = Vec::with_capacity(self.nodes.len());
        let mut total: usize = 0;
        for node in &self.nodes {
            let part = match node {
                Node::Text(t) => Part::Borrowed(t),
                Node::Action(p) => Part::Owned(print_value(eval_pipeline(p, data)?)?),
            };
            total = total.saturating_add(part.as_str().len());
            if total > MAX_OUTPUT_LEN {
                return Err(TemplateError::OutputTooLarge {
                    max: MAX_OUTPUT_LEN,
                });
            }
            parts.push(part);
        }
        // One exact-size allocation: growing the buffer would leave unwiped copies behind.
        let mut out = Zeroizing::new(String::with_capacity(total));
        for part in &parts {
            out.push_str(part.as_str());
        }
        Ok(out)
    }

    /// Top-level field keys the template reads (`.a.b` gives `a`), for diagnostics.
    pub fn referenced_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            if let Node::Action(p) = node {
                collect_keys(p, &mut keys);
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The template text is from the pod spec, not a secret.
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl std::hash::Hash for Template {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

fn collect_keys(p: &Pipeline, keys: &mut Vec<String>) {
    let operand = |o: &Operand, keys: &mut Vec<String>| match o {
        Operand::Field(path) => {
            if let Some(first) = path.first() {
                keys.push(first.clone());
            }
        }
        Operand::Paren(inner) => collect_keys(inner, keys),
        Operand::Str(_) | Operand::Int(_) | Operand::Bool(_) => {}
    };
    for c in &p.commands {
        match c {
            Command::Operand(o) => operand(o, keys),
            Command::Call { func, args } => {
                if *func == Func::Index
                    && let (Some(Operand::Field(base)), Some(Operand::Str(k))) =
                        (args.first(), args.get(1))
                    && base.is_empty()
                {
                    keys.push(k.clone());
                }
                for a in args {
                    operand(a, keys);
                }
            }
        }
    }
}

enum Part<'a> {
    Borrowed(&'a str),
    Owned(Zeroizing<String>),
}

impl Part<'_> {
    fn as_str(&self) -> &str {
        match self {
            Part::Borrowed(s) => s,
            Part::Owned(s) => s.as_str(),
        }
    }
}

fn push_text(nodes: &mut Vec<Node>, text: &str, trim_leading: bool) {
    let text = if trim_leading {
        text.trim_start_matches([' ', '\t', '\r', '\n'])
    } else {
        text
    };
    if !text.is_empty() {
        nodes.push(Node::Text(text.to_owned()));
    }
}

fn trim_trailing_text(nodes: &mut Vec<Node>) {
    if let Some(Node::Text(t)) = nodes.last_mut() {
        let keep = t.trim_end_matches([' ', '\t', '\r', '\n']).len();
        t.truncate(keep);
        if t.is_empty() {
            nodes.pop();
        }
    }
}

fn is_trim_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Finds the `}` that closes an action whose body starts at `from`, skipping string literals
/// (a `}` or `#` inside `"…"` or `` `…` `` does not end the action).
///
/// `Ok(None)`: no closing brace. `Err(offset)`: a string literal opened at `offset` never closes.
/// Shared with the reference parser so both agree on where a template action ends.
pub(crate) fn action_end(text: &str, from: usize) -> Result<Option<usize>, usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'}' => return Ok(Some(i)),
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') => return Err(start),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'`' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(start),
                        Some(b'`') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser for one action body.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Pipe,
    LParen,
    RParen,
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
}

fn syntax(offset: usize, reason: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        offset,
        reason: reason.into(),
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Tokenises `text[from..to]`; offsets in errors are absolute.
fn lex(text: &str, from: usize, to: usize) -> Result<Vec<(usize, Tok)>, TemplateError> {
    let body = &text[from..to];
    let mut toks = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        let at = from + i;
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
            }
            '|' => {
                chars.next();
                toks.push((at, Tok::Pipe));
            }
            '(' => {
                chars.next();
                toks.push((at, Tok::LParen));
            }
            ')' => {
                chars.next();
                toks.push((at, Tok::RParen));
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            let Some((j, e)) = chars.next() else { break };
                            unescape(e, &mut chars, &mut s)
                                .map_err(|reason| syntax(from + j, reason))?;
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err(TemplateError::UnterminatedString { offset: at });
                }
                toks.push((at, Tok::Str(s)));
            }
            '`' => {
                chars.next();
                let mut s = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '`' {
                        closed = true;
                        break;
                    }
                    s.push(c);
                }
                if !closed {
                    return Err(TemplateError::UnterminatedString { offset: at });
                }
                toks.push((at, Tok::Str(s)));
            }
            '.' => {
                chars.next();
                let mut path = Vec::new();
                // `.` alone is the whole secret; `.a.b` is a chain of identifiers.
                loop {
                    let mut name = String::new();
                    while let Some(&(_, c)) = chars.peek() {
                        if (name.is_empty() && is_ident_start(c))
                            || (!name.is_empty() && is_ident_char(c))
                        {
                            name.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    if name.is_empty() {
                        if !path.is_empty() {
                            return Err(syntax(at, "field chain ends with `.`"));
                        }
                        break;
                    }
                    path.push(name);
                    match chars.peek() {
                        Some(&(_, '.')) => {
                            chars.next();
                        }
                        _ => break,
                    }
                }
                if let Some(&(j, c)) = chars.peek()
                    && !matches!(c, ' ' | '\t' | '\r' | '\n' | '|' | ')' | '(')
                {
                    return Err(syntax(
                        from + j,
                        format!(
                            "unexpected {c:?} in a field name; for keys that are not \
                             identifiers use `index . \"key\"`"
                        ),
                    ));
                }
                toks.push((at, Tok::Field(path)));
            }
            c if c == '-' || c == '+' || c.is_ascii_digit() => {
                let mut num = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '+' || c == '_' {
                        num.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let value: i64 = num
                    .parse()
                    .map_err(|_| syntax(at, format!("bad number literal `{num}`")))?;
                toks.push((at, Tok::Int(value)));
            }
            c if is_ident_start(c) => {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if is_ident_char(c) {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                toks.push((at, Tok::Ident(name)));
            }
            '$' => return Err(syntax(at, "template variables are not supported")),
            '/' => return Err(syntax(at, "template comments are not supported")),
            c => return Err(syntax(at, format!("unexpected character {c:?}"))),
        }
    }
    Ok(toks)
}

/// Decodes one Go string-literal escape (after the backslash).
fn unescape(
    e: char,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    out: &mut String,
) -> Result<(), String> {
    let simple = match e {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        '\\' => Some('\\'),
        '"' => Some('"'),
        _ => None,
    };
    if let Some(c) = simple {
        out.push(c);
        return Ok(());
    }
    let digits = match e {
        'x' => 2,
        'u' => 4,
        'U' => 8,
        _ => return Err(format!("unknown escape sequence `\\{e}`")),
    };
    let mut code: u32 = 0;
    for _ in 0..digits {
        let d = chars
            .next()
            .and_then(|(_, c)| c.to_digit(16))
            .ok_or_else(|| format!("`\\{e}` needs {digits} hex digits"))?;
        code = code * 16 + d;
    }
    // `\xNN` is a byte in Go; only its ASCII half maps to one character in a Rust string.
    if e == 'x' && code > 0x7f {
        return Err("`\\x` escapes above 0x7f are not supported".to_owned());
    }
    let c = char::from_u32(code).ok_or_else(|| format!("`\\{e}` escape is not a character"))?;
    out.push(c);
    Ok(())
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end_offset: usize,
}

fn parse_action(text: &str, from: usize, to: usize) -> Result<Pipeline, TemplateError> {
    let toks = lex(text, from, to)?;
    if let Some((_, Tok::Ident(word))) = toks.first()
        && matches!(
            word.as_str(),
            "if" | "else"
                | "end"
                | "range"
                | "with"
                | "define"
                | "template"
                | "block"
                | "break"
                | "continue"
        )
    {
        return Err(TemplateError::UnsupportedAction {
            keyword: word.clone(),
        });
    }
    let mut parser = Parser {
        toks,
        pos: 0,
        end_offset: to,
    };
    let pipeline = parser.pipeline(0)?;
    if let Some((at, _)) = parser.toks.get(parser.pos) {
        return Err(syntax(*at, "unexpected `)`"));
    }
    Ok(pipeline)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .map_or(self.end_offset, |(at, _)| *at)
    }

    fn pipeline(&mut self, depth: usize) -> Result<Pipeline, TemplateError> {
        if depth > MAX_DEPTH {
            return Err(TemplateError::TooDeep { max: MAX_DEPTH });
        }
        let mut commands = Vec::new();
        loop {
            let stage = commands.len();
            let at = self.offset();
            let cmd = self.command(depth, stage > 0)?;
            if stage > 0 && matches!(cmd, Command::Operand(_)) {
                return Err(syntax(
                    at,
                    format!(
                        "stage {} of the pipeline is a value, not a function",
                        stage + 1
                    ),
                ));
            }
            commands.push(cmd);
            match self.peek() {
                Some(Tok::Pipe) => self.pos += 1,
                _ => break,
            }
        }
        Ok(Pipeline { commands })
    }

    fn command(&mut self, depth: usize, piped: bool) -> Result<Command, TemplateError> {
        let at = self.offset();
        match self.peek() {
            None | Some(Tok::Pipe) | Some(Tok::RParen) => Err(syntax(at, "missing value")),
            Some(Tok::Ident(name)) if !matches!(name.as_str(), "true" | "false") => {
                let name = name.clone();
                let func = Func::from_name(&name)
                    .ok_or(TemplateError::UnknownFunction { name: name.clone() })?;
                self.pos += 1;
                let mut args = Vec::new();
                while !matches!(self.peek(), None | Some(Tok::Pipe) | Some(Tok::RParen)) {
                    args.push(self.operand(depth)?);
                }
                let got = args.len() + usize::from(piped);
                let (min, max) = func.arity();
                if got < min || max.is_some_and(|max| got > max) {
                    let expected = match max {
                        Some(max) if max == min => min.to_string(),
                        Some(max) => format!("{min} to {max}"),
                        None => format!("at least {min}"),
                    };
                    return Err(TemplateError::Arity {
                        function: func.name(),
                        expected,
                        got,
                    });
                }
                if func == Func::Printf {
                    // A literal format is checked here, so a bad verb or a wrong argument
                    // count never reaches Go's "%!v(…)" output, which would echo a value.
                    let Some(Operand::Str(format)) = args.first() else {
                        return Err(syntax(at, "`printf` needs a string literal format first"));
                    };
                    let verbs = printf_verbs(format).map_err(|reason| syntax(at, reason))?;
                    if verbs.len() != got - 1 {
                        return Err(syntax(
                            at,
                            format!(
                                "`printf` format has {} verbs but {} values follow",
                                verbs.len(),
                                got - 1
                            ),
                        ));
                    }
                }
                if func == Func::Index {
                    // Keys must be literals, so an error can always name them without
                    // echoing anything read from the secret.
                    for (i, key) in args.iter().enumerate().skip(1) {
                        if !matches!(key, Operand::Str(_) | Operand::Int(_)) {
                            return Err(syntax(
                                at,
                                format!("`index` key {} must be a string or integer literal", i),
                            ));
                        }
                    }
                    if piped {
                        return Err(syntax(
                            at,
                            "`index` cannot take its keys from a pipeline; write `index . \"key\"`",
                        ));
                    }
                }
                Ok(Command::Call { func, args })
            }
            Some(_) => {
                let operand = self.operand(depth)?;
                if !matches!(self.peek(), None | Some(Tok::Pipe) | Some(Tok::RParen)) {
                    return Err(syntax(
                        self.offset(),
                        "a value cannot take arguments (only functions can)",
                    ));
                }
                Ok(Command::Operand(operand))
            }
        }
    }

    fn operand(&mut self, depth: usize) -> Result<Operand, TemplateError> {
        let at = self.offset();
        let Some(tok) = self.peek().cloned() else {
            return Err(syntax(at, "missing value"));
        };
        self.pos += 1;
        match tok {
            Tok::Field(path) => Ok(Operand::Field(path)),
            Tok::Str(s) => Ok(Operand::Str(s)),
            Tok::Int(i) => Ok(Operand::Int(i)),
            Tok::Ident(name) if name == "true" => Ok(Operand::Bool(true)),
            Tok::Ident(name) if name == "false" => Ok(Operand::Bool(false)),
            Tok::Ident(name) => {
                if Func::from_name(&name).is_some() {
                    Err(syntax(
                        at,
                        format!("function `{name}` used as an argument; wrap it in parentheses"),
                    ))
                } else {
                    Err(TemplateError::UnknownFunction { name })
                }
            }
            Tok::LParen => {
                let inner = self.pipeline(depth + 1)?;
                match self.peek() {
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        Ok(Operand::Paren(Box::new(inner)))
                    }
                    _ => Err(syntax(self.offset(), "missing `)`")),
                }
            }
            Tok::RParen => Err(syntax(at, "unexpected `)`")),
            Tok::Pipe => Err(syntax(at, "unexpected `|`")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// A value during evaluation. `Data` borrows from the secret; `Text` is a computed string.
enum Val<'a> {
    Data(&'a SecretJson),
    Text(Zeroizing<String>),
    Int(i64),
    Bool(bool),
    /// A key that is not in the secret (its path as written); an error unless `default` eats it.
    Missing(String),
}

impl Val<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Val::Data(d) => d.kind(),
            Val::Text(_) => "string",
            Val::Int(_) => "number",
            Val::Bool(_) => "boolean",
            Val::Missing(_) => "missing value",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Val::Missing(_) => true,
            Val::Text(s) => s.is_empty(),
            Val::Int(i) => *i == 0,
            Val::Bool(b) => !*b,
            Val::Data(d) => match d {
                SecretJson::Null => true,
                SecretJson::Bool(b) => !*b,
                // Vault's client decodes numbers as json.Number (a string kind): never empty.
                SecretJson::Number(n) => n.is_empty(),
                SecretJson::String(s) => s.is_empty(),
                SecretJson::Array(a) => a.is_empty(),
                SecretJson::Object(o) => o.is_empty(),
            },
        }
    }
}

fn too_large() -> TemplateError {
    TemplateError::OutputTooLarge {
        max: MAX_OUTPUT_LEN,
    }
}

fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        s.push('.');
        s.push_str(p);
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

fn lookup<'a>(data: &'a SecretJson, path: &[String]) -> Result<Val<'a>, TemplateError> {
    let mut cur = data;
    for (i, seg) in path.iter().enumerate() {
        match cur {
            SecretJson::Object(map) => match map.get(seg) {
                Some(next) => cur = next,
                None => return Ok(Val::Missing(dotted(&path[..=i]))),
            },
            other => {
                return Err(TemplateError::NotAnObject {
                    key: dotted(&path[..=i]),
                    found: other.kind(),
                });
            }
        }
    }
    Ok(Val::Data(cur))
}

fn eval_pipeline<'a>(p: &Pipeline, data: &'a SecretJson) -> Result<Val<'a>, TemplateError> {
    let mut prev: Option<Val<'a>> = None;
    for cmd in &p.commands {
        let val = match cmd {
            Command::Operand(o) => eval_operand(o, data)?,
            Command::Call { func, args } => {
                let mut vals = Vec::with_capacity(args.len() + 1);
                for a in args {
                    vals.push(eval_operand(a, data)?);
                }
                if let Some(piped) = prev.take() {
                    vals.push(piped);
                }
                call(*func, args, vals)?
            }
        };
        prev = Some(val);
    }
    prev.ok_or_else(|| syntax(0, "empty pipeline"))
}

fn eval_operand<'a>(o: &Operand, data: &'a SecretJson) -> Result<Val<'a>, TemplateError> {
    match o {
        Operand::Field(path) => lookup(data, path),
        Operand::Str(s) => Ok(Val::Text(Zeroizing::new(s.clone()))),
        Operand::Int(i) => Ok(Val::Int(*i)),
        Operand::Bool(b) => Ok(Val::Bool(*b)),
        Operand::Paren(p) => eval_pipeline(p, data),
    }
}

/// The final text of an action's value.
fn print_value(v: Val<'_>) -> Result<Zeroizing<String>, TemplateError> {
    match v {
        Val::Missing(key) => Err(TemplateError::MissingKey { key }),
        other => Ok(strval(&other)),
    }
}

/// Sprig's `strval`: the text of any value (JSON for arrays and objects).
fn strval(v: &Val<'_>) -> Zeroizing<String> {
    match v {
        Val::Data(d) => d.to_env_string(),
        Val::Text(s) => s.clone(),
        Val::Int(i) => Zeroizing::new(i.to_string()),
        Val::Bool(b) => Zeroizing::new(b.to_string()),
        Val::Missing(_) => Zeroizing::new(String::new()),
    }
}

/// A string argument: strings and numbers qualify (Go assigns json.Number to string).
fn str_arg<'v>(
    func: Func,
    position: usize,
    v: &'v Val<'_>,
) -> Result<std::borrow::Cow<'v, str>, TemplateError> {
    match v {
        Val::Text(s) => Ok(std::borrow::Cow::Borrowed(s.as_str())),
        Val::Data(SecretJson::String(s)) => Ok(std::borrow::Cow::Borrowed(s.as_str())),
        Val::Data(SecretJson::Number(n)) => Ok(std::borrow::Cow::Borrowed(n.as_str())),
        Val::Missing(key) => Err(TemplateError::MissingKey { key: key.clone() }),
        other => Err(TemplateError::WrongType {
            function: func.name(),
            position,
            found: other.kind(),
            expected: "a string",
        }),
    }
}

fn no_missing(v: &Val<'_>) -> Result<(), TemplateError> {
    match v {
        Val::Missing(key) => Err(TemplateError::MissingKey { key: key.clone() }),
        _ => Ok(()),
    }
}

fn text(s: String) -> Result<Val<'static>, TemplateError> {
    if s.len() > MAX_OUTPUT_LEN {
        let mut s = s;
        s.zeroize();
        return Err(too_large());
    }
    Ok(Val::Text(Zeroizing::new(s)))
}

fn call<'a>(
    func: Func,
    args: &[Operand],
    mut vals: Vec<Val<'a>>,
) -> Result<Val<'a>, TemplateError> {
    let s = |i: usize, vals: &[Val<'_>]| -> Result<String, TemplateError> {
        // Owned copy with exact capacity; wrapped in Zeroizing by the callers' results.
        let arg = vals.get(i).ok_or_else(|| syntax(0, "missing argument"))?;
        Ok(str_arg(func, i + 1, arg)?.into_owned())
    };
    match func {
        Func::B64enc => {
            let input = Zeroizing::new(s(0, &vals)?);
            let len = base64::encoded_len(input.len(), true).ok_or_else(too_large)?;
            if len > MAX_OUTPUT_LEN {
                return Err(too_large());
            }
            let mut out = String::with_capacity(len);
            base64::engine::general_purpose::STANDARD.encode_string(input.as_bytes(), &mut out);
            text(out)
        }
        Func::B64dec => {
            let input = Zeroizing::new(s(0, &vals)?);
            // Go's decoder skips CR and LF and tolerates non-zero trailing bits.
            let mut cleaned = Zeroizing::new(String::with_capacity(input.len()));
            cleaned.extend(input.chars().filter(|c| *c != '\r' && *c != '\n'));
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
            );
            let bytes = Zeroizing::new(
                engine
                    .decode(cleaned.as_bytes())
                    .map_err(|_| TemplateError::Decode { function: "b64dec" })?,
            );
            let mut owned = Vec::with_capacity(bytes.len());
            owned.extend_from_slice(&bytes);
            match String::from_utf8(owned) {
                Ok(out) => text(out),
                Err(e) => {
                    e.into_bytes().zeroize();
                    Err(TemplateError::NotUtf8 { function: "b64dec" })
                }
            }
        }
        Func::Upper => text(map_chars(&Zeroizing::new(s(0, &vals)?), simple_upper)),
        Func::Lower => text(map_chars(&Zeroizing::new(s(0, &vals)?), simple_lower)),
        Func::Title => text(title(&Zeroizing::new(s(0, &vals)?))),
        Func::Trim => text(Zeroizing::new(s(0, &vals)?).trim().to_owned()),
        Func::Nospace => {
            let input = Zeroizing::new(s(0, &vals)?);
            let mut out = String::with_capacity(input.len());
            out.extend(input.chars().filter(|c| !c.is_whitespace()));
            text(out)
        }
        Func::TrimAll => {
            let cutset = Zeroizing::new(s(0, &vals)?);
            let input = Zeroizing::new(s(1, &vals)?);
            text(input.trim_matches(|c| cutset.contains(c)).to_owned())
        }
        Func::TrimPrefix => {
            let prefix = Zeroizing::new(s(0, &vals)?);
            let input = Zeroizing::new(s(1, &vals)?);
            text(
                input
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&input)
                    .to_owned(),
            )
        }
        Func::TrimSuffix => {
            let suffix = Zeroizing::new(s(0, &vals)?);
            let input = Zeroizing::new(s(1, &vals)?);
            text(
                input
                    .strip_suffix(suffix.as_str())
                    .unwrap_or(&input)
                    .to_owned(),
            )
        }
        Func::Replace => {
            let old = Zeroizing::new(s(0, &vals)?);
            let new = Zeroizing::new(s(1, &vals)?);
            let input = Zeroizing::new(s(2, &vals)?);
            // Size the result before building it: `replace "" "x"` multiplies the length.
            let count = if old.is_empty() {
                input.chars().count() + 1
            } else {
                input.matches(old.as_str()).count()
            };
            let size = (input.len() as u128 + count as u128 * new.len() as u128)
                .saturating_sub(count as u128 * old.len() as u128);
            if size > MAX_OUTPUT_LEN as u128 {
                return Err(too_large());
            }
            text(replace_all(&input, &old, &new, size as usize))
        }
        Func::Quote | Func::Squote => {
            let mut pieces: Vec<Zeroizing<String>> = Vec::with_capacity(vals.len());
            for v in &vals {
                no_missing(v)?;
                // Sprig v3 skips nil arguments in both quote functions.
                if matches!(v, Val::Data(SecretJson::Null)) {
                    continue;
                }
                let raw = strval(v);
                // Worst case of Go quoting is 4 bytes per input byte (`\x01`).
                let mut piece = Zeroizing::new(String::with_capacity(raw.len() * 4 + 2));
                if func == Func::Quote {
                    go_quote(&raw, &mut piece);
                } else {
                    piece.push('\'');
                    piece.push_str(&raw);
                    piece.push('\'');
                }
                pieces.push(piece);
            }
            text(join(&pieces, " ")?)
        }
        Func::ToJson => {
            let v = vals.pop().ok_or_else(|| syntax(0, "missing argument"))?;
            no_missing(&v)?;
            let mut out = String::new();
            match &v {
                Val::Data(d) => {
                    let json = d.to_json();
                    if json.len() > MAX_OUTPUT_LEN {
                        return Err(too_large());
                    }
                    return Ok(Val::Text(json));
                }
                Val::Text(t) => write_json_string(t, &mut out),
                Val::Int(i) => out.push_str(&i.to_string()),
                Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Val::Missing(_) => {}
            }
            text(out)
        }
        Func::ToString => {
            let v = vals.pop().ok_or_else(|| syntax(0, "missing argument"))?;
            no_missing(&v)?;
            Ok(Val::Text(strval(&v)))
        }
        Func::Default => {
            // `default D` (nothing given) is D; `default D V` is V unless V is empty.
            let given = if vals.len() == 2 { vals.pop() } else { None };
            let fallback = vals.pop().ok_or_else(|| syntax(0, "missing argument"))?;
            match given {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Ok(fallback),
            }
        }
        Func::Sha256sum => {
            let input = Zeroizing::new(s(0, &vals)?);
            let digest = sha2::Sha256::digest(input.as_bytes());
            text(hex::encode(digest))
        }
        Func::Urlquery => {
            let input = Zeroizing::new(s(0, &vals)?);
            text(query_escape(&input))
        }
        Func::Printf => {
            let format = match args.first() {
                Some(Operand::Str(f)) => f.as_str(),
                _ => return Err(syntax(0, "`printf` needs a string literal format first")),
            };
            printf(format, &vals[1..])
        }
        Func::Print => {
            // fmt.Sprint: a space between two operands when neither is a string.
            let mut pieces: Vec<Zeroizing<String>> = Vec::with_capacity(vals.len() * 2);
            for (i, v) in vals.iter().enumerate() {
                no_missing(v)?;
                if i > 0 && !is_go_string(&vals[i - 1]) && !is_go_string(v) {
                    pieces.push(Zeroizing::new(" ".to_owned()));
                }
                pieces.push(strval(v));
            }
            text(join(&pieces, "")?)
        }
        Func::Index => {
            let mut iter = vals.into_iter();
            let base = iter.next().ok_or_else(|| syntax(0, "missing argument"))?;
            let mut cur = match base {
                Val::Data(d) => d,
                Val::Missing(key) => return Err(TemplateError::MissingKey { key }),
                other => {
                    return Err(TemplateError::WrongType {
                        function: "index",
                        position: 1,
                        found: other.kind(),
                        expected: "an object or array",
                    });
                }
            };
            let mut path = match args.first() {
                Some(Operand::Field(p)) => dotted(p),
                _ => String::from("(value)"),
            };
            for key in args.iter().skip(1) {
                match key {
                    Operand::Str(k) => {
                        path.push_str(&format!("[{k:?}]"));
                        match cur {
                            SecretJson::Object(map) => match map.get(k) {
                                Some(next) => cur = next,
                                None => return Ok(Val::Missing(path)),
                            },
                            other => {
                                return Err(TemplateError::NotAnObject {
                                    key: path,
                                    found: other.kind(),
                                });
                            }
                        }
                    }
                    Operand::Int(i) => {
                        path.push_str(&format!("[{i}]"));
                        let item = match cur {
                            SecretJson::Array(items) => {
                                usize::try_from(*i).ok().and_then(|i| items.get(i))
                            }
                            other => {
                                return Err(TemplateError::WrongType {
                                    function: "index",
                                    position: 2,
                                    found: other.kind(),
                                    expected: "an array for an integer key",
                                });
                            }
                        };
                        match item {
                            Some(next) => cur = next,
                            None => return Ok(Val::Missing(path)),
                        }
                    }
                    // The parser admits only literal keys.
                    _ => return Err(syntax(0, "`index` key must be a literal")),
                }
            }
            Ok(Val::Data(cur))
        }
    }
}

/// A printf verb this subset supports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    /// `%s` and `%v`: the text of the value.
    Text,
    /// `%d`: an integer.
    Int,
    /// `%q`: Go-quoted text.
    Quoted,
}

/// The verbs of a printf format, in order; `%%` is a literal percent sign.
fn printf_verbs(format: &str) -> Result<Vec<Verb>, String> {
    let mut verbs = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('%') => {}
            Some('s' | 'v') => verbs.push(Verb::Text),
            Some('d') => verbs.push(Verb::Int),
            Some('q') => verbs.push(Verb::Quoted),
            Some(other) => {
                return Err(format!(
                    "unsupported printf verb `%{other}` (supported: %s %v %d %q %%)"
                ));
            }
            None => return Err("printf format ends with a lone `%`".to_owned()),
        }
    }
    Ok(verbs)
}

/// Go's `fmt.Sprintf` for the verbs of [`printf_verbs`] (the format was checked at parse time).
fn printf(format: &str, vals: &[Val<'_>]) -> Result<Val<'static>, TemplateError> {
    let verbs = printf_verbs(format).map_err(|reason| syntax(0, reason))?;
    if verbs.len() != vals.len() {
        return Err(syntax(
            0,
            "`printf` argument count does not match its format",
        ));
    }
    let mut pieces: Vec<Zeroizing<String>> = Vec::with_capacity(vals.len() * 2 + 1);
    let mut literal = String::new();
    let mut chars = format.chars();
    let mut next = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let verb_char = chars.next();
        if verb_char == Some('%') {
            literal.push('%');
            continue;
        }
        pieces.push(Zeroizing::new(std::mem::take(&mut literal)));
        let (Some(verb), Some(v)) = (verbs.get(next), vals.get(next)) else {
            return Err(syntax(
                0,
                "`printf` argument count does not match its format",
            ));
        };
        next += 1;
        no_missing(v)?;
        pieces.push(match verb {
            Verb::Text => strval(v),
            Verb::Int => match v {
                Val::Int(i) => Zeroizing::new(i.to_string()),
                Val::Data(SecretJson::Number(n))
                    if !n.is_empty()
                        && n.strip_prefix('-')
                            .unwrap_or(n)
                            .bytes()
                            .all(|b| b.is_ascii_digit()) =>
                {
                    Zeroizing::new(n.clone())
                }
                other => {
                    return Err(TemplateError::WrongType {
                        function: "printf",
                        position: next + 1,
                        found: other.kind(),
                        expected: "an integer for %d",
                    });
                }
            },
            Verb::Quoted => {
                let raw = strval(v);
                let mut q = Zeroizing::new(String::with_capacity(raw.len() * 4 + 2));
                go_quote(&raw, &mut q);
                q
            }
        });
    }
    pieces.push(Zeroizing::new(literal));
    text(join(&pieces, "")?)
}

/// Whether Go's `fmt` sees a string here (json.Number is a string kind).
fn is_go_string(v: &Val<'_>) -> bool {
    matches!(
        v,
        Val::Text(_) | Val::Data(SecretJson::String(_)) | Val::Data(SecretJson::Number(_))
    )
}

/// `strings.Replace(s, old, new, -1)` into a buffer of the precomputed `size`.
/// An empty `old` inserts `new` before every character and at the end, as Go does.
fn replace_all(s: &str, old: &str, new: &str, size: usize) -> String {
    let mut out = String::with_capacity(size);
    if old.is_empty() {
        for c in s.chars() {
            out.push_str(new);
            out.push(c);
        }
        out.push_str(new);
        return out;
    }
    let mut last = 0;
    for (at, _) in s.match_indices(old) {
        out.push_str(&s[last..at]);
        out.push_str(new);
        last = at + old.len();
    }
    out.push_str(&s[last..]);
    out
}

fn join(pieces: &[Zeroizing<String>], sep: &str) -> Result<String, TemplateError> {
    let total = pieces.iter().map(|p| p.len() + sep.len()).sum::<usize>();
    if total > MAX_OUTPUT_LEN + sep.len() {
        return Err(too_large());
    }
    let mut out = String::with_capacity(total);
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(p);
    }
    Ok(out)
}

fn map_chars(s: &str, f: fn(char) -> char) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    out.extend(s.chars().map(f));
    out
}

/// Go's `unicode.ToUpper`: a one-to-one mapping (`ß` stays `ß`, where Rust would give `SS`).
fn simple_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

fn simple_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Go's `strings.Title`: upper-case every letter that follows a separator.
fn title(s: &str) -> String {
    fn is_separator(c: char) -> bool {
        if c.is_ascii() {
            return !(c.is_ascii_alphanumeric() || c == '_');
        }
        if c.is_alphabetic() || c.is_numeric() {
            return false;
        }
        c.is_whitespace()
    }
    let mut out = String::with_capacity(s.len() * 2);
    let mut prev = ' ';
    for c in s.chars() {
        out.push(if is_separator(prev) {
            simple_upper(c)
        } else {
            c
        });
        prev = c;
    }
    out
}

/// Go's `strconv.Quote` (what `%q` prints for a string).
fn go_quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    out
}
