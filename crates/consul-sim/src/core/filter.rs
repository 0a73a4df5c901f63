//! `?filter=`: Consul's boolean expressions (go-bexpr, as in Consul 1.8.7) over the JSON the
//! endpoints answer with.
//!
//! ```text
//! Service == web and Meta.env != "dev"      "primary" in Tags
//! not (Port == 8080 or Tags is empty)       Checks.Status == critical
//! Service matches "^w"                      Meta["team"] contains x
//! ```
//!
//! Selectors name Go struct fields exactly (case-sensitive); each endpoint passes the
//! [`Ty`] of the values it filters, so an unknown selector, an operator the field's type
//! does not support or a value that does not coerce is refused before anything is
//! evaluated, with bexpr's messages. A selector through a list (`Checks.Status`) matches if
//! any element matches. The parser follows bexpr's PEG grammar and reports a syntax error
//! the way its generated parser does: at the farthest position reached, with everything
//! it expected there.

use std::collections::BTreeSet;

use http::StatusCode;
use regex::Regex;
use serde_json::Value;

use super::gojson::quote;
use super::{Reply, SimResponse, Target};

/// The type of a field, as the filter sees it.
#[derive(Debug)]
pub(crate) enum Ty {
    /// A string.
    Str,
    /// A signed integer.
    Int,
    /// An unsigned integer (indexes).
    Uint,
    /// A boolean.
    Bool,
    /// A list of strings (`Tags`).
    StrList,
    /// A map of strings (`Meta`).
    StrMap,
    /// A map of structs (a service's `TaggedAddresses`).
    MapOf(&'static Ty),
    /// A list of structs (`Checks`).
    ListOf(&'static Ty),
    /// A struct: its fields by Go name.
    Struct(&'static [(&'static str, Ty)]),
}

const WEIGHTS: Ty = Ty::Struct(&[("Passing", Ty::Int), ("Warning", Ty::Int)]);
const SERVICE_ADDRESS: Ty = Ty::Struct(&[("Address", Ty::Str), ("Port", Ty::Int)]);

/// `api.AgentService`: the values of `agent/services`.
pub(crate) const AGENT_SERVICE: Ty = Ty::Struct(&[
    ("Kind", Ty::Str),
    ("ID", Ty::Str),
    ("Service", Ty::Str),
    ("Tags", Ty::StrList),
    ("Meta", Ty::StrMap),
    ("Port", Ty::Int),
    ("Address", Ty::Str),
    ("TaggedAddresses", Ty::MapOf(&SERVICE_ADDRESS)),
    ("Weights", WEIGHTS),
    ("EnableTagOverride", Ty::Bool),
    ("CreateIndex", Ty::Uint),
    ("ModifyIndex", Ty::Uint),
    ("ContentHash", Ty::Str),
]);

/// A health check: the values of `agent/checks`, `health/node`, `health/checks`,
/// `health/state`.
pub(crate) const HEALTH_CHECK: Ty = Ty::Struct(&[
    ("Node", Ty::Str),
    ("CheckID", Ty::Str),
    ("Name", Ty::Str),
    ("Status", Ty::Str),
    ("Notes", Ty::Str),
    ("Output", Ty::Str),
    ("ServiceID", Ty::Str),
    ("ServiceName", Ty::Str),
    ("ServiceTags", Ty::StrList),
    ("Type", Ty::Str),
    ("CreateIndex", Ty::Uint),
    ("ModifyIndex", Ty::Uint),
]);

/// A catalog node: the values of `catalog/nodes`.
pub(crate) const NODE: Ty = Ty::Struct(&[
    ("ID", Ty::Str),
    ("Node", Ty::Str),
    ("Address", Ty::Str),
    ("Datacenter", Ty::Str),
    ("TaggedAddresses", Ty::StrMap),
    ("Meta", Ty::StrMap),
    ("CreateIndex", Ty::Uint),
    ("ModifyIndex", Ty::Uint),
]);

/// A service as a node carries it (`structs.NodeService`).
pub(crate) const NODE_SERVICE: Ty = Ty::Struct(&[
    ("Kind", Ty::Str),
    ("ID", Ty::Str),
    ("Service", Ty::Str),
    ("Tags", Ty::StrList),
    ("Address", Ty::Str),
    ("TaggedAddresses", Ty::MapOf(&SERVICE_ADDRESS)),
    ("Meta", Ty::StrMap),
    ("Port", Ty::Int),
    ("Weights", WEIGHTS),
    ("EnableTagOverride", Ty::Bool),
    ("CreateIndex", Ty::Uint),
    ("ModifyIndex", Ty::Uint),
]);

/// `structs.ServiceNode`: the values of `catalog/service/:s`.
pub(crate) const SERVICE_NODE: Ty = Ty::Struct(&[
    ("ID", Ty::Str),
    ("Node", Ty::Str),
    ("Address", Ty::Str),
    ("Datacenter", Ty::Str),
    ("TaggedAddresses", Ty::StrMap),
    ("NodeMeta", Ty::StrMap),
    ("ServiceKind", Ty::Str),
    ("ServiceID", Ty::Str),
    ("ServiceName", Ty::Str),
    ("ServiceTags", Ty::StrList),
    ("ServiceAddress", Ty::Str),
    ("ServiceTaggedAddresses", Ty::MapOf(&SERVICE_ADDRESS)),
    ("ServiceWeights", WEIGHTS),
    ("ServiceMeta", Ty::StrMap),
    ("ServicePort", Ty::Int),
    ("ServiceEnableTagOverride", Ty::Bool),
    ("CreateIndex", Ty::Uint),
    ("ModifyIndex", Ty::Uint),
]);

/// `structs.CheckServiceNode`: the values of `health/service/:s`.
pub(crate) const CHECK_SERVICE_NODE: Ty =
    Ty::Struct(&[("Node", NODE), ("Service", NODE_SERVICE), ("Checks", Ty::ListOf(&HEALTH_CHECK))]);

/// A match operator, named as bexpr names it in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Equal => "Equal",
            Op::NotEqual => "NotEqual",
            Op::In => "In",
            Op::NotIn => "NotIn",
            Op::IsEmpty => "IsEmpty",
            Op::IsNotEmpty => "IsNotEmpty",
            Op::Matches => "Matches",
            Op::NotMatches => "NotMatches",
        }
    }

    fn negated(self) -> bool {
        matches!(self, Op::NotEqual | Op::NotIn | Op::IsNotEmpty | Op::NotMatches)
    }
}

/// A selector path element: a field name or a map key.
type Selector = Vec<String>;

/// A parsed expression.
#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match { selector: Selector, text: String, op: Op, value: Option<String> },
}

/// A value checked against the field's type.
#[derive(Debug)]
enum Lit {
    None,
    Str(String),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Regex(Regex),
}

/// A checked expression, ready to run on JSON values.
#[derive(Debug)]
enum Check {
    And(Box<Check>, Box<Check>),
    Or(Box<Check>, Box<Check>),
    Not(Box<Check>),
    Match { path: Selector, ty: &'static Ty, op: Op, lit: Lit },
}

/// A compiled `?filter=` expression.
#[derive(Debug)]
pub(crate) struct Filter {
    check: Check,
}

/// Why an expression was refused: a syntax error, or a selector, operator or value that
/// does not fit the fields. Consul words them differently on some endpoints.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// The parser's message.
    Syntax(String),
    /// The checker's message.
    Invalid(String),
}

impl FilterError {
    /// The message as most endpoints answer it (HTTP 500).
    pub(crate) fn message(&self) -> String {
        match self {
            FilterError::Syntax(m) | FilterError::Invalid(m) => {
                format!("Failed to create boolean expression evaluator: {m}")
            }
        }
    }
}

impl Filter {
    /// Parses and checks `expr` against the fields of `ty`.
    pub(crate) fn new(expr: &str, ty: &'static Ty) -> Result<Filter, FilterError> {
        let parsed = Parser::new(expr).parse().map_err(FilterError::Syntax)?;
        Ok(Filter { check: check(parsed, ty).map_err(FilterError::Invalid)? })
    }

    /// True if `value` passes.
    pub(crate) fn matches(&self, value: &Value) -> bool {
        eval(&self.check, value)
    }
}

/// The request's `?filter=`, compiled for values of type `ty`; `None` without one.
pub(crate) fn from_request(t: &Target, ty: &'static Ty) -> Result<Option<Filter>, FilterError> {
    match t.param("filter") {
        None | Some("") => Ok(None),
        Some(expr) => Filter::new(expr, ty).map(Some),
    }
}

/// Consul's answer to a bad filter: 500, with index headers on the catalog and health
/// reads (the error comes back from a blocking query there).
pub(crate) fn error_reply(message: String, blocking_read: bool) -> Reply {
    let resp = SimResponse::text(StatusCode::INTERNAL_SERVER_ERROR, message);
    Reply::write(if blocking_read { resp.with_index(1, false) } else { resp })
}

/// Keeps the values `filter` passes.
pub(crate) fn retain(filter: Option<&Filter>, values: Vec<Value>) -> Vec<Value> {
    match filter {
        None => values,
        Some(f) => values.into_iter().filter(|v| f.matches(v)).collect(),
    }
}

// ---- checking -------------------------------------------------------------------------

fn check(e: Expr, ty: &'static Ty) -> Result<Check, String> {
    Ok(match e {
        Expr::And(a, b) => Check::And(Box::new(check(*a, ty)?), Box::new(check(*b, ty)?)),
        Expr::Or(a, b) => Check::Or(Box::new(check(*a, ty)?), Box::new(check(*b, ty)?)),
        Expr::Not(a) => Check::Not(Box::new(check(*a, ty)?)),
        Expr::Match { selector, text, op, value } => {
            let leaf = resolve(ty, &selector).map_err(|n| {
                let named = selector.get(..n).map_or_else(|| text.clone(), |s| s.join("."));
                format!("Selector {q_named} is not valid", q_named = quote(&named))
            })?;
            let allowed = match leaf {
                Ty::Str => {
                    matches!(
                        op,
                        Op::Equal
                            | Op::NotEqual
                            | Op::In
                            | Op::NotIn
                            | Op::Matches
                            | Op::NotMatches
                    )
                }
                Ty::Int | Ty::Uint | Ty::Bool => matches!(op, Op::Equal | Op::NotEqual),
                Ty::StrList | Ty::StrMap | Ty::MapOf(_) => {
                    matches!(op, Op::In | Op::NotIn | Op::IsEmpty | Op::IsNotEmpty)
                }
                Ty::ListOf(_) => matches!(op, Op::IsEmpty | Op::IsNotEmpty),
                Ty::Struct(_) => false,
            };
            if !allowed {
                return Err(format!(
                    "Invalid match operator {} for selector {q_text}",
                    quote(op.name()),
                    q_text = quote(&text)
                ));
            }
            let lit = match (value, leaf, op) {
                (None, _, _) => Lit::None,
                (Some(v), _, Op::Matches | Op::NotMatches) => {
                    let re = Regex::new(&v).map_err(|e| {
                        format!(
                            "Failed to compile regular expression {q_v}: error parsing regexp: {}",
                            go_regexp_error(&v, &e.to_string()),
                            q_v = quote(&v)
                        )
                    })?;
                    Lit::Regex(re)
                }
                (Some(v), Ty::Int, _) => Lit::Int(v.parse().map_err(|_| {
                    coerce_error(
                        &v,
                        &text,
                        &format!(
                            "strconv.ParseInt: parsing {q_v}: invalid syntax",
                            q_v = quote(&v)
                        ),
                    )
                })?),
                (Some(v), Ty::Uint, _) => Lit::Uint(v.parse().map_err(|_| {
                    coerce_error(
                        &v,
                        &text,
                        &format!(
                            "strconv.ParseUint: parsing {q_v}: invalid syntax",
                            q_v = quote(&v)
                        ),
                    )
                })?),
                (Some(v), Ty::Bool, _) => Lit::Bool(parse_go_bool(&v).ok_or_else(|| {
                    coerce_error(
                        &v,
                        &text,
                        &format!(
                            "strconv.ParseBool: parsing {q_v}: invalid syntax",
                            q_v = quote(&v)
                        ),
                    )
                })?),
                (Some(v), _, _) => Lit::Str(v),
            };
            Check::Match { path: selector, ty: leaf, op, lit }
        }
    })
}

/// Words a regex syntax error as Go's regexp package does for the common mistakes; other
/// errors keep the regex crate's wording.
fn go_regexp_error(pattern: &str, rust: &str) -> String {
    if rust.contains("unclosed character class") {
        let from = pattern.rfind('[').unwrap_or(0);
        format!("missing closing ]: `{}`", &pattern[from..])
    } else if rust.contains("unclosed group") {
        format!("missing closing ): `{pattern}`")
    } else if rust.contains("unopened group") {
        format!("unexpected ): `{pattern}`")
    } else if rust.contains("repetition operator missing expression") {
        let op = pattern.chars().find(|c| matches!(c, '*' | '+' | '?')).unwrap_or('*');
        format!("missing argument to repetition operator: `{op}`")
    } else {
        let last = rust.lines().last().unwrap_or_default().trim();
        last.strip_prefix("error: ").unwrap_or(last).to_string()
    }
}

fn coerce_error(value: &str, selector: &str, why: &str) -> String {
    format!(
        "Failed to coerce value {q_value} for selector {q_selector}: {why}",
        q_value = quote(value),
        q_selector = quote(selector)
    )
}

/// A Go `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The type at the end of a selector, or how many of its steps lead up to (and include)
/// the first one that names nothing: bexpr names that part in its error.
fn resolve(ty: &'static Ty, path: &[String]) -> Result<&'static Ty, usize> {
    let Some((first, rest)) = path.split_first() else { return Ok(ty) };
    let next = match ty {
        Ty::Struct(fields) => fields.iter().find(|(name, _)| name == first).map(|(_, t)| (t, rest)),
        Ty::ListOf(t) => return resolve(t, path),
        Ty::StrMap if rest.is_empty() => return Ok(&Ty::Str),
        Ty::MapOf(t) => Some((*t, rest)),
        _ => None,
    };
    match next {
        Some((t, rest)) => resolve(t, rest).map_err(|n| n + 1),
        None => Err(1),
    }
}

// ---- evaluation -----------------------------------------------------------------------

fn eval(c: &Check, v: &Value) -> bool {
    match c {
        Check::And(a, b) => eval(a, v) && eval(b, v),
        Check::Or(a, b) => eval(a, v) || eval(b, v),
        Check::Not(a) => !eval(a, v),
        Check::Match { path, ty, op, lit } => {
            let mut leaves = Vec::new();
            let through_list = collect(v, path, &mut leaves);
            if !through_list {
                let leaf = leaves.first().copied().unwrap_or(&Value::Null);
                return matches_leaf(leaf, ty, *op, lit);
            }
            // Through a list: any element decides, for negated operators too.
            leaves.iter().any(|leaf| matches_leaf(leaf, ty, *op, lit))
        }
    }
}

/// The values a selector reaches in `v`; true if it went through a list.
fn collect<'v>(v: &'v Value, path: &[String], out: &mut Vec<&'v Value>) -> bool {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return false;
    };
    match v {
        Value::Array(items) => {
            for item in items {
                collect(item, path, out);
            }
            true
        }
        Value::Object(m) => match m.get(first) {
            Some(next) => collect(next, rest, out),
            None => {
                out.push(&Value::Null);
                false
            }
        },
        _ => {
            out.push(&Value::Null);
            false
        }
    }
}

fn matches_leaf(leaf: &Value, ty: &Ty, op: Op, lit: &Lit) -> bool {
    let positive = match (ty, lit) {
        (_, Lit::Regex(re)) => re.is_match(leaf.as_str().unwrap_or_default()),
        (Ty::Str, Lit::Str(s)) => {
            let field = leaf.as_str().unwrap_or_default();
            match op {
                Op::In | Op::NotIn => field.contains(s.as_str()),
                _ => field == s,
            }
        }
        (Ty::Int, Lit::Int(i)) => leaf.as_i64().unwrap_or(0) == *i,
        (Ty::Uint, Lit::Uint(u)) => leaf.as_u64().unwrap_or(0) == *u,
        (Ty::Bool, Lit::Bool(b)) => leaf.as_bool().unwrap_or(false) == *b,
        (Ty::StrList, Lit::Str(s)) => {
            leaf.as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(s.as_str())))
        }
        (Ty::StrMap | Ty::MapOf(_), Lit::Str(s)) => {
            leaf.as_object().is_some_and(|m| m.contains_key(s.as_str()))
        }
        (_, Lit::None) => match leaf {
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            Value::Null => true,
            _ => false,
        },
        _ => false,
    };
    positive != op.negated()
}

// ---- parsing --------------------------------------------------------------------------

/// A recursive-descent parser for bexpr's PEG grammar. Like the generated parser, it
/// remembers the farthest offset where something failed to match and what it wanted there.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    fail_pos: usize,
    expected: BTreeSet<String>,
    /// Errors raised by grammar actions (`Unmatched parentheses`…).
    errors: Vec<String>,
}

const WS: &str = "[ \\t\\r\\n]";

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        Parser { src, pos: 0, fail_pos: 0, expected: BTreeSet::new(), errors: Vec::new() }
    }

    fn parse(mut self) -> Result<Expr, String> {
        // Input <- _? "(" _? OrExpression _? ")" _? EOF / _? OrExpression _? EOF
        let first = self.attempt(|p| {
            p.ws_opt();
            p.lit("(")?;
            p.ws_opt();
            let e = p.or_expr()?;
            p.ws_opt();
            p.lit(")")?;
            p.ws_opt();
            p.eof()?;
            Some(e)
        });
        let parsed = first.or_else(|| {
            self.attempt(|p| {
                p.ws_opt();
                let e = p.or_expr()?;
                p.ws_opt();
                p.eof()?;
                Some(e)
            })
        });
        if let Some(err) = self.errors.first() {
            return Err(err.clone());
        }
        match parsed {
            Some(e) => Ok(e),
            None => {
                // Sorted as Go's sort.Strings sorts (a BTreeSet is in byte order), end of
                // input last.
                let eof = self.expected.remove("EOF");
                let mut list: Vec<String> = self.expected.iter().cloned().collect();
                if eof {
                    list.push("EOF".into());
                }
                let expected = match list.split_last() {
                    None => String::new(),
                    Some((last, [])) => last.clone(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                };
                Err(self.position(self.fail_pos, &format!("no match found, expected: {expected}")))
            }
        }
    }

    /// `line:col (offset): message`, counting columns in characters as Go's parser does.
    fn position(&self, offset: usize, message: &str) -> String {
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
        format!("{line}:{col} ({offset}): {message}")
    }

    fn action_error(&mut self, rule: &str, message: &str) {
        let e = self.position(self.pos, &format!("rule {q_rule}: {message}", q_rule = quote(rule)));
        // The generated parser drops repeats (alternatives re-parse the same text).
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    fn fail(&mut self, want: &str) {
        if self.pos < self.fail_pos {
            return;
        }
        if self.pos > self.fail_pos {
            self.fail_pos = self.pos;
            self.expected.clear();
        }
        self.expected.insert(want.to_string());
    }

    /// Runs `f`; on failure, puts the position back.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.pos;
        let r = f(self);
        if r.is_none() {
            self.pos = start;
        }
        r
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn lit(&mut self, s: &str) -> Option<()> {
        if self.src[self.pos..].starts_with(s) {
            self.pos += s.len();
            Some(())
        } else {
            self.fail(&quote(s).to_string());
            None
        }
    }

    fn class(&mut self, display: &str, ok: impl Fn(char) -> bool) -> Option<char> {
        match self.peek() {
            Some(c) if ok(c) => {
                self.pos += c.len_utf8();
                Some(c)
            }
            _ => {
                self.fail(display);
                None
            }
        }
    }

    fn eof(&mut self) -> Option<()> {
        if self.pos == self.src.len() {
            Some(())
        } else {
            self.fail("EOF");
            None
        }
    }

    /// `_ <- [ \t\r\n]+`
    fn ws(&mut self) -> Option<()> {
        self.class(WS, is_ws)?;
        while self.class(WS, is_ws).is_some() {}
        Some(())
    }

    fn ws_opt(&mut self) {
        let _ = self.ws();
    }

    /// `OrExpression <- AndExpression _ "or" _ OrExpression / AndExpression`
    fn or_expr(&mut self) -> Option<Expr> {
        let left = self.and_expr()?;
        let right = self.attempt(|p| {
            p.ws()?;
            p.lit("or")?;
            p.ws()?;
            p.or_expr()
        });
        Some(match right {
            Some(r) => Expr::Or(Box::new(left), Box::new(r)),
            None => left,
        })
    }

    /// `AndExpression <- NotExpression _ "and" _ AndExpression / NotExpression`
    fn and_expr(&mut self) -> Option<Expr> {
        let left = self.not_expr()?;
        let right = self.attempt(|p| {
            p.ws()?;
            p.lit("and")?;
            p.ws()?;
            p.and_expr()
        });
        Some(match right {
            Some(r) => Expr::And(Box::new(left), Box::new(r)),
            None => left,
        })
    }

    /// `NotExpression <- "not" _ NotExpression / ParenthesizedExpression`
    fn not_expr(&mut self) -> Option<Expr> {
        let not = self.attempt(|p| {
            p.lit("not")?;
            p.ws()?;
            p.not_expr()
        });
        match not {
            Some(e) => Some(Expr::Not(Box::new(e))),
            None => self.paren_expr(),
        }
    }

    /// `"(" _? OrExpression _? ")" / MatchExpression / "(" _? OrExpression _? !")"`
    fn paren_expr(&mut self) -> Option<Expr> {
        let grouped = self.attempt(|p| {
            p.lit("(")?;
            p.ws_opt();
            let e = p.or_expr()?;
            p.ws_opt();
            p.lit(")")?;
            Some(e)
        });
        if grouped.is_some() {
            return grouped;
        }
        if let Some(m) = self.match_expr() {
            return Some(m);
        }
        let unmatched = self.attempt(|p| {
            p.lit("(")?;
            p.ws_opt();
            let e = p.or_expr()?;
            p.ws_opt();
            Some(e)
        });
        match unmatched {
            // `!")"`: with a closing parenthesis this alternative does not apply.
            Some(_) if self.peek() == Some(')') => None,
            Some(e) => {
                self.action_error("grouping", "Unmatched parentheses");
                Some(e)
            }
            None => None,
        }
    }

    /// `MatchSelectorOpValue / MatchSelectorOp / MatchValueOpSelector`
    fn match_expr(&mut self) -> Option<Expr> {
        let sel_op_value = self.attempt(|p| {
            let (selector, text) = p.selector()?;
            let op = p
                .attempt(|p| {
                    p.ws_opt();
                    p.lit("==")?;
                    p.ws_opt();
                    Some(Op::Equal)
                })
                .or_else(|| {
                    p.attempt(|p| {
                        p.ws_opt();
                        p.lit("!=")?;
                        p.ws_opt();
                        Some(Op::NotEqual)
                    })
                })
                .or_else(|| p.keyword_op(&["contains"], Op::In))
                .or_else(|| p.keyword_op(&["not", "contains"], Op::NotIn))
                .or_else(|| p.keyword_op(&["matches"], Op::Matches))
                .or_else(|| p.keyword_op(&["not", "matches"], Op::NotMatches))?;
            let value = p.value()?;
            Some(Expr::Match { selector, text, op, value: Some(value) })
        });
        if sel_op_value.is_some() {
            return sel_op_value;
        }
        let sel_op = self.attempt(|p| {
            let (selector, text) = p.selector()?;
            let op = p.attempt(|p| {
                p.ws()?;
                p.lit("is")?;
                p.ws()?;
                p.lit("empty")?;
                Some(Op::IsEmpty)
            });
            let op = match op {
                Some(op) => op,
                None => p.attempt(|p| {
                    p.ws()?;
                    p.lit("is")?;
                    p.ws()?;
                    p.lit("not")?;
                    p.ws()?;
                    p.lit("empty")?;
                    Some(Op::IsNotEmpty)
                })?,
            };
            Some(Expr::Match { selector, text, op, value: None })
        });
        if sel_op.is_some() {
            return sel_op;
        }
        self.attempt(|p| {
            let value = p.value()?;
            let op = p
                .keyword_op(&["in"], Op::In)
                .or_else(|| p.keyword_op(&["not", "in"], Op::NotIn))?;
            let (selector, text) = p.selector()?;
            Some(Expr::Match { selector, text, op, value: Some(value) })
        })
    }

    /// `_ word (_ word)* _` (contains, not contains, matches…).
    fn keyword_op(&mut self, words: &[&str], op: Op) -> Option<Op> {
        self.attempt(|p| {
            for w in words {
                p.ws()?;
                p.lit(w)?;
            }
            p.ws()?;
            Some(op)
        })
    }

    /// `Selector <- Identifier ("." Identifier / "[" _? StringLiteral _? "]")*`
    fn selector(&mut self) -> Option<(Selector, String)> {
        let start = self.pos;
        let mut path = vec![self.identifier()?];
        loop {
            let dotted = self.attempt(|p| {
                p.lit(".")?;
                p.identifier()
            });
            if let Some(id) = dotted {
                path.push(id);
                continue;
            }
            let index_start = self.pos;
            if self.lit("[").is_none() {
                break;
            }
            self.ws_opt();
            let Some(key) = self.string_literal() else {
                self.action_error("index", "Invalid index");
                return Some((path, self.src[start..index_start].to_string()));
            };
            self.ws_opt();
            if self.lit("]").is_none() {
                self.action_error("index", "Unclosed index expression");
                return Some((path, self.src[start..index_start].to_string()));
            }
            path.push(key);
        }
        Some((path, self.src[start..self.pos].to_string()))
    }

    /// `Identifier <- [a-zA-Z] [a-zA-Z0-9_]*`
    fn identifier(&mut self) -> Option<String> {
        let start = self.pos;
        self.class("[a-zA-Z]", |c| c.is_ascii_alphabetic())?;
        while self.class("[a-zA-Z0-9_]", |c| c.is_ascii_alphanumeric() || c == '_').is_some() {}
        Some(self.src[start..self.pos].to_string())
    }

    /// `Value <- Selector / NumberLiteral / StringLiteral`, as its text.
    fn value(&mut self) -> Option<String> {
        if let Some((_, text)) = self.attempt(|p| p.selector()) {
            return Some(text);
        }
        if let Some(n) = self.attempt(|p| p.number()) {
            return Some(n);
        }
        self.string_literal()
    }

    /// `"-"? ("0" / [1-9][0-9]*) ("." [0-9]+)? &(_ / EOF / ")")`
    fn number(&mut self) -> Option<String> {
        let start = self.pos;
        let _ = self.lit("-");
        if self.lit("0").is_none() {
            self.class("[1-9]", |c| ('1'..='9').contains(&c))?;
            while self.class("[0-9]", |c| c.is_ascii_digit()).is_some() {}
        }
        let _ = self.attempt(|p| {
            p.lit(".")?;
            p.class("[0-9]", |c| c.is_ascii_digit())?;
            while p.class("[0-9]", |c| c.is_ascii_digit()).is_some() {}
            Some(())
        });
        // `&AfterNumbers`: looks ahead without consuming.
        let here = self.pos;
        let after = self.ws().is_some() || self.eof().is_some() || self.lit(")").is_some();
        self.pos = here;
        after.then(|| self.src[start..self.pos].to_string())
    }

    /// A `"…"` (Go escapes) or `` `…` `` string.
    fn string_literal(&mut self) -> Option<String> {
        let quote = match self.peek() {
            Some(c @ ('"' | '`')) => c,
            _ => {
                self.fail("\"\\\"\"");
                self.fail("\"`\"");
                return None;
            }
        };
        self.pos += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == quote {
                return Some(out);
            }
            if c == '\\' && quote == '"' {
                let Some(e) = self.peek() else { break };
                self.pos += e.len_utf8();
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
            } else {
                out.push(c);
            }
        }
        self.action_error("string", "Unterminated string literal");
        Some(out)
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn services() -> Vec<Value> {
        vec![
            json!({"ID": "web-1", "Service": "web", "Tags": ["a", "b"], "Meta": {"env": "prod"},
                   "Port": 8080, "Address": "", "EnableTagOverride": false,
                   "Weights": {"Passing": 1, "Warning": 1}}),
            json!({"ID": "web-2", "Service": "web", "Tags": [], "Meta": {}, "Port": 8081,
                   "Address": "", "EnableTagOverride": false,
                   "Weights": {"Passing": 1, "Warning": 1}}),
            json!({"ID": "db-1", "Service": "db", "Tags": ["primary"],
                   "Meta": {"env": "dev", "team": "x"}, "Port": 5432, "Address": "",
                   "EnableTagOverride": true, "Weights": {"Passing": 1, "Warning": 1}}),
        ]
    }

    fn ids(expr: &str) -> Result<Vec<String>, String> {
        let f = Filter::new(expr, &AGENT_SERVICE).map_err(|e| e.message())?;
        Ok(services()
            .iter()
            .filter(|s| f.matches(s))
            .map(|s| s["ID"].as_str().unwrap().to_string())
            .collect())
    }

    // Each expected set was observed on Consul 1.8.7 (`agent/services?filter=`) with the
    // same three services.
    #[test]
    fn operators_match_as_on_consul() {
        let cases: &[(&str, &[&str])] = &[
            ("Service == web", &["web-1", "web-2"]),
            ("Service != web", &["db-1"]),
            ("Service == \"web\"", &["web-1", "web-2"]),
            ("Service == `web`", &["web-1", "web-2"]),
            ("Port == 8080", &["web-1"]),
            ("Port == \"8080\"", &["web-1"]),
            ("Port != 8080", &["web-2", "db-1"]),
            ("Tags contains a", &["web-1"]),
            ("Tags not contains a", &["web-2", "db-1"]),
            ("a in Tags", &["web-1"]),
            ("a not in Tags", &["web-2", "db-1"]),
            ("Tags is empty", &["web-2"]),
            ("Tags is not empty", &["web-1", "db-1"]),
            ("Meta.env == prod", &["web-1"]),
            ("Meta.env != prod", &["web-2", "db-1"]),
            ("Meta.missing == x", &[]),
            ("Meta is empty", &["web-2"]),
            ("env in Meta", &["web-1", "db-1"]),
            ("Meta contains env", &["web-1", "db-1"]),
            ("Service matches \"^w\"", &["web-1", "web-2"]),
            ("Service not matches \"^w\"", &["db-1"]),
            ("Service == web and Port == 8080", &["web-1"]),
            ("Service == web or Service == db", &["web-1", "web-2", "db-1"]),
            ("not Service == web", &["db-1"]),
            ("not (Service == web and Port == 8080)", &["web-2", "db-1"]),
            ("(Service == web or Service == db) and Meta.env == prod", &["web-1"]),
            ("EnableTagOverride == true", &["db-1"]),
            ("Weights.Passing == 1", &["web-1", "web-2", "db-1"]),
            ("Service contains we", &["web-1", "web-2"]),
            ("we in Service", &["web-1", "web-2"]),
            ("Meta.env contains ro", &["web-1"]),
            ("Meta[\"env\"] == prod", &["web-1"]),
            ("Kind == \"\"", &["web-1", "web-2", "db-1"]),
            ("Service==web", &["web-1", "web-2"]),
            ("not Service==web or Port==5432", &["db-1"]),
            ("Service in Tags", &[]),
        ];
        for (expr, want) in cases {
            let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
            assert_eq!(ids(expr), Ok(want), "{expr}");
        }
    }

    #[test]
    fn bad_expressions_get_consuls_messages() {
        let prefix = "Failed to create boolean expression evaluator: ";
        let cases = [
            ("service == web", "Selector \"service\" is not valid"),
            ("Nope == 1", "Selector \"Nope\" is not valid"),
            ("Tags == a", "Invalid match operator \"Equal\" for selector \"Tags\""),
            ("Address is empty", "Invalid match operator \"IsEmpty\" for selector \"Address\""),
            (
                "Meta.missing is empty",
                "Invalid match operator \"IsEmpty\" for selector \"Meta.missing\"",
            ),
            (
                "EnableTagOverride == yes",
                "Failed to coerce value \"yes\" for selector \"EnableTagOverride\": \
                 strconv.ParseBool: parsing \"yes\": invalid syntax",
            ),
            (
                "Port == abc",
                "Failed to coerce value \"abc\" for selector \"Port\": strconv.ParseInt: \
                 parsing \"abc\": invalid syntax",
            ),
            (
                "Service ==",
                "1:11 (10): no match found, expected: \"-\", \"0\", \"\\\"\", \"`\", \
                 [ \\t\\r\\n], [1-9] or [a-zA-Z]",
            ),
            (
                "ID == web-1",
                "1:10 (9): no match found, expected: \".\", \"[\", [ \\t\\r\\n], \
                 [a-zA-Z0-9_] or EOF",
            ),
            ("(Service == web", "1:16 (15): rule \"grouping\": Unmatched parentheses"),
            ("Tags[0] == a", "1:6 (5): rule \"index\": Invalid index"),
            (
                "Port > 1",
                "1:6 (5): no match found, expected: \"!=\", \"==\", \"contains\", \"in\", \
                 \"is\", \"matches\", \"not\" or [ \\t\\r\\n]",
            ),
            (
                "Service == web and or",
                "1:22 (21): no match found, expected: \"!=\", \".\", \"==\", \"[\", \
                 [ \\t\\r\\n] or [a-zA-Z0-9_]",
            ),
            ("Service == web and", "1:19 (18): no match found, expected: [ \\t\\r\\n]"),
        ];
        for (expr, want) in cases {
            assert_eq!(ids(expr), Err(format!("{prefix}{want}")), "{expr}");
        }
        assert!(
            ids("Service matches \"[\"")
                .unwrap_err()
                .contains("Failed to compile regular expression \"[\": error parsing regexp")
        );
    }

    #[test]
    fn a_selector_through_a_list_matches_if_any_element_does() {
        let entry = json!({
            "Node": {"Node": "n1", "Meta": {"k": "v"}},
            "Service": {"ID": "web-1", "Tags": ["a"]},
            "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
                       {"CheckID": "service:web-1", "Status": "critical", "ServiceTags": ["a"]}],
        });
        let m = |e: &str| Filter::new(e, &CHECK_SERVICE_NODE).unwrap().matches(&entry);
        assert!(m("Checks.Status == passing"));
        assert!(m("Checks.Status != passing"), "an element is not passing");
        assert!(m("Checks.Status == critical"));
        assert!(!m("Checks.Status == warning"));
        assert!(m("Checks.ServiceTags contains a"));
        assert!(m("passing in Checks.Status"));
        assert!(!m("Checks is empty"));
        assert!(m("Node.Meta.k == v and Service.Tags contains a"));
    }
}
