//! Decoding request bodies the way Consul's Go decoder does, down to its error texts.
//!
//! Consul reads a body with `json.NewDecoder(body).Decode(&v)`: the first JSON value counts,
//! whatever follows it is ignored, a truncated value is `unexpected EOF`, an empty body `EOF`,
//! and a syntax error names the offending character and what the scanner was looking for
//! (`invalid character 'n' looking for beginning of object key string`). Clients and people
//! read those texts, so the sim produces the same ones. Go's wording of names in those
//! texts lives here too: `%q` quoting ([`quote`]) and what Go 1.15 counts as printable
//! ([`go_prints`], also what Consul's printable-path check asks).

use serde_json::Value;

/// The first JSON value of `body`, or Go's decoder error text.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let mut scan = Scan { b: body, i: 0 };
    scan.skip_ws();
    if scan.i == body.len() {
        return Err("EOF".into());
    }
    let start = scan.i;
    match scan.value() {
        Ok(()) => {}
        Err(Stop::Eof) => return Err("unexpected EOF".into()),
        Err(Stop::Invalid(msg)) => return Err(msg),
    }
    let first = body.get(start..scan.i).unwrap_or_default();
    serde_json::from_slice(first).map_err(|e| format!("cannot decode: {e}"))
}

/// Go 1.15's `unicode.IsPrint`.
pub(crate) fn go_prints(c: char) -> bool {
    use unicode_general_category::GeneralCategory::{
        Control, Format, LineSeparator, ParagraphSeparator, PrivateUse, SpaceSeparator, Surrogate,
        Unassigned,
    };
    // Assigned in Unicode 12.1 (SQUARE ERA NAME REIWA), after the tables Go 1.15 carries.
    const AFTER_GO: char = '\u{32FF}';
    let category = unicode_general_category::get_general_category(c);
    c == ' '
        || c != AFTER_GO
            && !matches!(
                category,
                Control
                    | Format
                    | Surrogate
                    | PrivateUse
                    | Unassigned
                    | SpaceSeparator
                    | LineSeparator
                    | ParagraphSeparator
            )
}

/// `s` quoted as Go's `%q` (`strconv.Quote`) writes it, as Consul's error texts carry
/// names: printable characters as they are, `\a \b \f \n \r \t \v` by name, other
/// control characters as `\x01`, other non-printable ones as `\u00a0` or `\U0001d173`.
pub(crate) fn quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if go_prints(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

enum Stop {
    Eof,
    Invalid(String),
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, Stop> {
        let c = self.peek().ok_or(Stop::Eof)?;
        self.i += 1;
        Ok(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn invalid(c: u8, context: &str) -> Stop {
        Stop::Invalid(format!("invalid character {} {context}", quote_char(c)))
    }

    fn value(&mut self) -> Result<(), Stop> {
        self.skip_ws();
        match self.next()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string(),
            c @ (b'-' | b'0'..=b'9') => self.number(c),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            c => Err(Self::invalid(c, "looking for beginning of value")),
        }
    }

    fn object(&mut self) -> Result<(), Stop> {
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            match self.next()? {
                b'"' => self.string()?,
                c => return Err(Self::invalid(c, "looking for beginning of object key string")),
            }
            self.skip_ws();
            match self.next()? {
                b':' => {}
                c => return Err(Self::invalid(c, "after object key")),
            }
            self.value()?;
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Ok(()),
                c => return Err(Self::invalid(c, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self) -> Result<(), Stop> {
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value()?;
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b']' => return Ok(()),
                c => return Err(Self::invalid(c, "after array element")),
            }
        }
    }

    fn string(&mut self) -> Result<(), Stop> {
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let c = self.next()?;
                            if !c.is_ascii_hexdigit() {
                                return Err(Self::invalid(
                                    c,
                                    "in \\u hexadecimal character escape",
                                ));
                            }
                        }
                    }
                    c => return Err(Self::invalid(c, "in string escape code")),
                },
                c if c < 0x20 => return Err(Self::invalid(c, "in string literal")),
                _ => {}
            }
        }
    }

    /// A number; it ends at the first byte that cannot continue it (the caller judges that
    /// byte), or at the end of the input.
    fn number(&mut self, first: u8) -> Result<(), Stop> {
        let mut c = first;
        if c == b'-' {
            c = self.next()?;
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "in numeric literal"));
            }
        }
        if c != b'0' {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let c = self.next()?;
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "after decimal point in numeric literal"));
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let mut c = self.next()?;
            if c == b'+' || c == b'-' {
                c = self.next()?;
            }
            if !c.is_ascii_digit() {
                return Err(Self::invalid(c, "in exponent of numeric literal"));
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &str) -> Result<(), Stop> {
        for want in word.bytes().skip(1) {
            let c = self.next()?;
            if c != want {
                return Err(Self::invalid(
                    c,
                    &format!("in literal {word} (expecting {})", quote_char(want)),
                ));
            }
        }
        Ok(())
    }
}

/// A byte as Go's scanner quotes it in messages: `'x'`, `'\n'`, `'\x00'`, `'\u0080'`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".into(),
        b'"' => "'\"'".into(),
        b'\\' => r"'\\'".into(),
        0x07 => r"'\a'".into(),
        0x08 => r"'\b'".into(),
        0x0c => r"'\f'".into(),
        b'\n' => r"'\n'".into(),
        b'\r' => r"'\r'".into(),
        b'\t' => r"'\t'".into(),
        0x0b => r"'\v'".into(),
        c if c < 0x20 || c == 0x7f => format!(r"'\x{c:02x}'"),
        c if (0x80..0xa0).contains(&c) || c == 0xad => format!(r"'\u{:04x}'", c),
        c => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_writes_what_gos_q_verb_writes() {
        // Go's fmt.Sprintf("%q", s) for each (Go 1.15).
        for (s, want) in [
            ("plain/key", r#""plain/key""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("tab\there\n", r#""tab\there\n""#),
            ("\u{1}\u{7}\u{8}\u{b}\u{c}\r", r#""\x01\a\b\v\f\r""#),
            ("del\u{7f}", r#""del\u007f""#),
            ("nb\u{a0}sp \u{2028}", r#""nb\u00a0sp \u2028""#),
            ("é ü 中 😀", r#""é ü 中 😀""#),
            ("\u{1d173}\u{e000}", r#""\U0001d173\ue000""#),
            ("\u{32ff}", r#""\u32ff""#),
        ] {
            assert_eq!(quote(s), want, "{s:?}");
        }
    }

    #[test]
    fn syntax_errors_read_like_gos() {
        // Each answer below is what Consul 1.8.7 said for the body (after its prefix).
        let cases: &[(&str, &str)] = &[
            ("{", "unexpected EOF"),
            ("[1,2", "unexpected EOF"),
            ("nul", "unexpected EOF"),
            ("{nope", "invalid character 'n' looking for beginning of object key string"),
            (
                r#"{"Name":"a",}"#,
                "invalid character '}' looking for beginning of object key string",
            ),
            (r#"{"Name" "a"}"#, "invalid character '\"' after object key"),
            (r#"{"Name":"a" "b"}"#, "invalid character '\"' after object key:value pair"),
            (r#"{"Name":tru}"#, "invalid character '}' in literal true (expecting 'e')"),
            (r#"{"Name":"a\q"}"#, "invalid character 'q' in string escape code"),
            (r#"{"Port":1.5e}"#, "invalid character '}' in exponent of numeric literal"),
            ("[{]", "invalid character ']' looking for beginning of object key string"),
            ("", "EOF"),
        ];
        for (body, want) in cases {
            assert_eq!(decode(body.as_bytes()).unwrap_err(), *want, "{body}");
        }
    }

    #[test]
    fn the_first_value_counts_and_the_rest_is_ignored() {
        assert_eq!(decode(b"{}x").unwrap(), serde_json::json!({}));
        assert_eq!(decode(br#"{"Name":"a"}}"#).unwrap()["Name"], "a");
        assert_eq!(decode(b" [1, 2.5e3, -0, true, null] ").unwrap()[1], 2500.0);
    }

    #[test]
    fn odd_bytes_are_quoted_like_go() {
        assert_eq!(quote_char(b'\n'), r"'\n'");
        assert_eq!(quote_char(0), r"'\x00'");
        assert_eq!(quote_char(0x85), r"'\u0085'");
        assert_eq!(quote_char(b'\''), r"'\''");
    }
}
