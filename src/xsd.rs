//! Lexical checks for the XML Schema simple types that the VOEvent 2.0 schema uses
//! (`xs:float`, `xs:dateTime`, `xs:anyURI`, `xs:ID`, `xs:token`), reproducing what libxml2
//! accepts rather than the letter of XSD 1.0, because Comet validates with libxml2
//! (spec `vtp.md` §9.1). Every function works on borrowed text and allocates nothing.

/// XML whitespace (`S` production): space, tab, CR, LF.
fn is_xml_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// `s` without leading and trailing XML whitespace.
pub fn trim_xml_ws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_xml_ws(c as u8))
}

/// True if `s`, after `xs:token` whitespace collapsing, equals `expected` (which itself has
/// no leading, trailing or doubled spaces).
pub fn token_equals(s: &str, expected: &str) -> bool {
    let mut words = s
        .split(|c: char| c.is_ascii() && is_xml_ws(c as u8))
        .filter(|w| !w.is_empty());
    let mut want = expected.split(' ');
    loop {
        match (words.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The value of an `xs:float` literal as libxml2 reads it, or `None` if libxml2 rejects the
/// literal. Accepted: optional surrounding whitespace; `NaN`, `INF`, `-INF`; otherwise an
/// optional sign, digits with an optional `.` (at least one digit overall) and an optional
/// exponent whose digits libxml2 does not require (`1e` and `1e+` are accepted and read as 1).
/// Out-of-range literals (`1e400`) are accepted and read as infinity.
pub fn float_value(s: &str) -> Option<f32> {
    let t = trim_xml_ws(s);
    match t {
        "NaN" => return Some(f32::NAN),
        "INF" => return Some(f32::INFINITY),
        "-INF" => return Some(f32::NEG_INFINITY),
        _ => {}
    }
    let b = t.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-') | Some(b'+')) {
        i += 1;
    }
    let digits_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - digits_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    let mantissa_end = i;
    let mut exponent_digits = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        exponent_digits = i - exp_start;
    }
    if i != b.len() {
        return None;
    }
    // What sscanf("%f") reads: an exponent without digits is ignored.
    let numeric = if exponent_digits == 0 {
        &t[..mantissa_end]
    } else {
        t
    };
    numeric.parse::<f32>().ok()
}

/// True if libxml2 accepts `s` as an `xs:float`.
pub fn is_float(s: &str) -> bool {
    float_value(s).is_some()
}

/// Exactly two ASCII digits at `b[i..i + 2]`, as a number.
fn two_digits(b: &[u8], i: usize) -> Option<u32> {
    match (b.get(i), b.get(i + 1)) {
        (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
            Some(u32::from(x - b'0') * 10 + u32::from(y - b'0'))
        }
        _ => None,
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// True if libxml2 accepts `s` as an `xs:dateTime`:
/// `-?YYYY-MM-DDThh:mm:ss(.s+)?(Z|[+-]hh:mm)?` with at least four year digits (more only
/// without a leading zero), year 0000 refused, real month lengths (leap years included),
/// hours 00-23 or exactly `24:00:00`, seconds below 60, offsets within ±14:00. No
/// surrounding whitespace is allowed (libxml2 does not collapse it).
pub fn is_date_time(s: &str) -> bool {
    date_time(s.as_bytes()).is_some()
}

fn date_time(b: &[u8]) -> Option<()> {
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let year_start = i;
    let mut year: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        year = year.checked_mul(10)?.checked_add(i64::from(b[i] - b'0'))?;
        i += 1;
    }
    let year_digits = i - year_start;
    if year_digits < 4 || (year_digits > 4 && b[year_start] == b'0') || year == 0 {
        return None;
    }
    if negative {
        year = -year;
    }
    let expect = |i: usize, c: u8| (b.get(i) == Some(&c)).then_some(i + 1);

    i = expect(i, b'-')?;
    let month = two_digits(b, i)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    i = expect(i + 2, b'-')?;
    let day = two_digits(b, i)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    i = expect(i + 2, b'T')?;

    let hour = two_digits(b, i)?;
    if hour > 24 {
        return None;
    }
    i = expect(i + 2, b':')?;
    let minute = two_digits(b, i)?;
    if minute > 59 {
        return None;
    }
    i = expect(i + 2, b':')?;
    let second = two_digits(b, i)?;
    if second > 59 {
        return None;
    }
    i += 2;
    let mut fraction_nonzero = false;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            fraction_nonzero |= b[i] != b'0';
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if hour == 24 && (minute != 0 || second != 0 || fraction_nonzero) {
        return None;
    }

    match b.get(i) {
        None => {}
        Some(b'Z') => i += 1,
        Some(b'+') | Some(b'-') => {
            let tz_hour = two_digits(b, i + 1)?;
            if tz_hour > 23 {
                return None;
            }
            i = expect(i + 3, b':')?;
            let tz_minute = two_digits(b, i)?;
            if tz_minute > 59 || tz_hour * 60 + tz_minute > 14 * 60 {
                return None;
            }
            i += 2;
        }
        Some(_) => return None,
    }
    if i != b.len() || day > days_in_month(year, month) {
        return None;
    }
    Some(())
}

/// True if libxml2 accepts `s` as an `xs:anyURI`.
///
/// libxml2 collapses whitespace, then replaces every control character, space, non-ASCII
/// byte and each of `<>"{}|\^`'` with `_`, and finally requires the result to parse as an
/// RFC 3986 URI-reference with its own parser (`xmlParse3986URIReference`), whose quirks
/// are kept: brackets are allowed in a fragment, an IP literal is any `[...]`, a port
/// needs at least one digit. The empty string is accepted.
pub fn is_any_uri(s: &str) -> bool {
    let u = Uri(trim_xml_ws(s).as_bytes());
    u.0.is_empty() || u.absolute() || u.relative()
}

/// A URI under test; `c(i)` yields the byte as libxml2 sees it after its substitutions, or
/// 0 past the end (a real NUL cannot occur in XML text).
struct Uri<'a>(&'a [u8]);

impl Uri<'_> {
    fn c(&self, i: usize) -> u8 {
        match self.0.get(i) {
            None => 0,
            Some(&b) if !(32..127).contains(&b) || b"<>\"{}|\\^`' ".contains(&b) => b'_',
            Some(&b) => b,
        }
    }
    fn unreserved(&self, i: usize) -> bool {
        let c = self.c(i);
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
    }
    fn sub_delim(&self, i: usize) -> bool {
        matches!(
            self.c(i),
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        )
    }
    fn pct_encoded(&self, i: usize) -> bool {
        self.c(i) == b'%' && self.c(i + 1).is_ascii_hexdigit() && self.c(i + 2).is_ascii_hexdigit()
    }
    fn pchar(&self, i: usize) -> bool {
        self.unreserved(i)
            || self.pct_encoded(i)
            || self.sub_delim(i)
            || matches!(self.c(i), b':' | b'@')
    }
    fn next(&self, i: usize) -> usize {
        if self.c(i) == b'%' {
            i + 3
        } else {
            i + 1
        }
    }

    /// `scheme ":" hier-part [ "?" query ] [ "#" fragment ]`
    fn absolute(&self) -> bool {
        if !self.c(0).is_ascii_alphabetic() {
            return false;
        }
        let mut i = 1;
        while self.c(i).is_ascii_alphanumeric() || matches!(self.c(i), b'+' | b'-' | b'.') {
            i += 1;
        }
        if self.c(i) != b':' {
            return false;
        }
        i += 1;
        let hier = if self.c(i) == b'/' && self.c(i + 1) == b'/' {
            self.authority(i + 2).and_then(|j| self.path_abempty(j))
        } else if self.c(i) == b'/' {
            self.path_absolute(i)
        } else if self.pchar(i) {
            self.path_rootless(i, 0)
        } else {
            Some(i)
        };
        hier.is_some_and(|j| self.query_fragment_end(j))
    }

    /// `relative-part [ "?" query ] [ "#" fragment ]`
    fn relative(&self) -> bool {
        let part = if self.c(0) == b'/' && self.c(1) == b'/' {
            self.authority(2).and_then(|j| self.path_abempty(j))
        } else if self.c(0) == b'/' {
            self.path_absolute(0)
        } else if self.pchar(0) {
            self.path_rootless(0, b':')
        } else {
            Some(0)
        };
        part.is_some_and(|j| self.query_fragment_end(j))
    }

    fn query_fragment_end(&self, mut i: usize) -> bool {
        if self.c(i) == b'?' {
            i += 1;
            while self.pchar(i) || matches!(self.c(i), b'/' | b'?') {
                i = self.next(i);
            }
        }
        if self.c(i) == b'#' {
            i += 1;
            while self.pchar(i) || matches!(self.c(i), b'/' | b'?' | b'[' | b']') {
                i = self.next(i);
            }
        }
        i >= self.0.len()
    }

    /// `[ userinfo "@" ] host [ ":" port ]`
    fn authority(&self, start: usize) -> Option<usize> {
        let mut i = start;
        while self.unreserved(i) || self.pct_encoded(i) || self.sub_delim(i) || self.c(i) == b':' {
            i = self.next(i);
        }
        i = if self.c(i) == b'@' { i + 1 } else { start };
        if self.c(i) == b'[' {
            i += 1;
            while self.c(i) != b']' && self.c(i) != 0 {
                i += 1;
            }
            if self.c(i) != b']' {
                return None;
            }
            i += 1;
        } else {
            // libxml2's IPv4 branch never succeeds, so every host is read as a reg-name.
            while self.unreserved(i) || self.pct_encoded(i) || self.sub_delim(i) {
                i = self.next(i);
            }
        }
        if self.c(i) == b':' {
            i += 1;
            if !self.c(i).is_ascii_digit() {
                return None;
            }
            let mut port: u32 = 0;
            while self.c(i).is_ascii_digit() {
                port = port
                    .checked_mul(10)?
                    .checked_add(u32::from(self.c(i) - b'0'))
                    .filter(|&p| p <= i32::MAX as u32)?;
                i += 1;
            }
        }
        Some(i)
    }

    /// One segment; `forbid` (or 0) is a byte that ends it; `empty` allows zero length.
    fn segment(&self, mut i: usize, forbid: u8, empty: bool) -> Option<usize> {
        if !self.pchar(i) || (forbid != 0 && self.c(i) == forbid) {
            return empty.then_some(i);
        }
        i = self.next(i);
        while self.pchar(i) && (forbid == 0 || self.c(i) != forbid) {
            i = self.next(i);
        }
        Some(i)
    }

    fn path_abempty(&self, mut i: usize) -> Option<usize> {
        while self.c(i) == b'/' {
            i = self.segment(i + 1, 0, true)?;
        }
        Some(i)
    }

    fn path_absolute(&self, i: usize) -> Option<usize> {
        match self.segment(i + 1, 0, false) {
            Some(j) => self.path_abempty(j),
            None => Some(i + 1),
        }
    }

    /// `path-rootless` (forbid 0) or `path-noscheme` (forbid `:` in the first segment).
    fn path_rootless(&self, i: usize, forbid: u8) -> Option<usize> {
        let j = self.segment(i, forbid, false)?;
        self.path_abempty(j)
    }
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// True if `s` is an `xs:ID`: an NCName (XML 1.0 fifth-edition name characters, no colon),
/// surrounding whitespace allowed (libxml2's `xmlValidateNCName(value, 1)`).
pub fn is_id(s: &str) -> bool {
    let mut chars = trim_xml_ws(s).chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_accepts() {
        for s in [
            "0",
            "1",
            "-1",
            "+1",
            "1.5",
            ".5",
            "5.",
            "-.5",
            "1e5",
            "1E5",
            "1e-5",
            "1e+5",
            "1.5e3",
            "INF",
            "-INF",
            "NaN",
            " 1.5 ",
            "\n\t2\r\n",
            "1e",
            "1e+",
            "1e-",
            "1e400",
            "007",
            " NaN ",
            " -INF",
        ] {
            assert!(is_float(s), "{s:?} should be a float");
        }
    }

    #[test]
    fn float_rejects() {
        for s in [
            "", " ", "+INF", "-NaN", "nan", "inf", "Infinity", "1,5", "0x10", "1.5f", ".", "-",
            "+", "e5", "--1", "+-1", "1 2", "1..2", "1e5.0", "1ee5", "NaN1", "abc", "1.5.",
        ] {
            assert!(!is_float(s), "{s:?} should not be a float");
        }
    }

    #[test]
    fn float_values() {
        assert_eq!(float_value("1e"), Some(1.0));
        assert_eq!(float_value(" 0.25 "), Some(0.25));
        assert_eq!(float_value("1e400"), Some(f32::INFINITY));
        assert_eq!(float_value("-INF"), Some(f32::NEG_INFINITY));
        assert!(float_value("NaN").unwrap().is_nan());
        assert_eq!(float_value("1.00000001"), Some(1.0));
    }

    #[test]
    fn date_time_accepts() {
        for s in [
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.123456",
            "2024-01-01T12:34:56.7+14:00",
            "2024-01-01T12:34:56-14:00",
            "2024-01-01T12:34:56-00:00",
            "2024-12-31T23:59:59.999Z",
            "2024-02-29T00:00:00",
            "2000-02-29T00:00:00",
            "2024-01-01T24:00:00",
            "2024-01-01T24:00:00.000Z",
            "-0044-03-15T12:00:00",
            "12345-01-01T00:00:00",
            "0001-01-01T00:00:00",
        ] {
            assert!(is_date_time(s), "{s:?} should be a dateTime");
        }
    }

    #[test]
    fn date_time_rejects() {
        for s in [
            "",
            "2024-01-01",
            "2024-01-01T00:00",
            "2024-01-01 00:00:00",
            "2024-01-01t00:00:00",
            "2024-01-01T00:00:00z",
            "2024-01-01T00:00:60",
            "2024-01-01T00:60:00",
            "2024-01-01T25:00:00",
            "2024-01-01T24:00:01",
            "2024-01-01T24:01:00",
            "2024-01-01T24:00:00.5",
            "2023-02-29T00:00:00",
            "1900-02-29T00:00:00",
            "2024-02-30T00:00:00",
            "2024-04-31T00:00:00",
            "2024-13-01T00:00:00",
            "2024-00-01T00:00:00",
            "2024-01-00T00:00:00",
            "0000-01-01T00:00:00",
            "-0000-01-01T00:00:00",
            "024-01-01T00:00:00",
            "02024-01-01T00:00:00",
            "2024-1-01T00:00:00",
            "2024-01-01T00:00:00.",
            "2024-01-01T00:00:00+14:01",
            "2024-01-01T00:00:00+15:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+01",
            "2024-01-01T00:00:00ZZ",
            " 2024-01-01T00:00:00",
            "2024-01-01T00:00:00 ",
            "2024-01-01T00:00:00\n",
            "+2024-01-01T00:00:00",
        ] {
            assert!(!is_date_time(s), "{s:?} should not be a dateTime");
        }
    }

    #[test]
    fn any_uri_accepts() {
        for s in [
            "",
            "   ",
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729",
            "http://gcn.gsfc.nasa.gov/gcn/gecam.html",
            "http://user:pw@host:8080/a/b?q=1&r=2#frag",
            "http://[::1]:80/x",
            "a b c",
            "ivo://example.org/ä#ü",
            "relative/path",
            "/absolute/path",
            "#frag[1]",
            "x#a[b]c",
            "mailto:someone@example.org",
            "urn:isbn:0451450523",
            "%41%42",
            "a%2Fb",
            " http://x.org/ ",
            "a{b}c|d\\e^f`g'h\"i<j>",
            "http://host/%7euser",
        ] {
            assert!(is_any_uri(s), "{s:?} should be an anyURI");
        }
    }

    #[test]
    fn any_uri_rejects() {
        for s in [
            "%4",
            "%zz",
            "a%%b",
            "http://x/%4",
            "a#b#c",
            "[",
            "a]b",
            "http://x/[y]",
            "::",
            ":abc",
            "http://[::1/x",
            "http://host:port/",
            "http://host:/",
            "a?b#c#d",
        ] {
            assert!(!is_any_uri(s), "{s:?} should not be an anyURI");
        }
    }

    #[test]
    fn id_rules() {
        for s in ["a", "_x", "abc-1.2", "é", " a "] {
            assert!(is_id(s), "{s:?} should be an ID");
        }
        for s in ["", "1a", "-a", ".a", "a:b", "a b", " "] {
            assert!(!is_id(s), "{s:?} should not be an ID");
        }
    }

    #[test]
    fn token_rules() {
        assert!(token_equals("2.0", "2.0"));
        assert!(token_equals(" 2.0 ", "2.0"));
        assert!(token_equals("\t2.0\n", "2.0"));
        assert!(!token_equals("2.1", "2.0"));
        assert!(!token_equals("2 .0", "2.0"));
        assert!(!token_equals("", "2.0"));
        assert!(!token_equals("2.0 2.0", "2.0"));
    }
}
