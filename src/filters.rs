//! Subscriber XPath filters with Comet's semantics (spec §6), evaluated on the dispatcher.
//!
//! [`FilterTable`] interns expressions: each distinct text is compiled once and shared by
//! every subscriber that asked for it (reference-counted, forgotten when unused). For an
//! event, [`FilterTable::evaluate`] parses the bytes once with sxd-document (only if some
//! subscriber has filters) and evaluates each distinct expression at most once, lazily,
//! memoizing the verdict; deciding for a thousand subscribers then costs table lookups.
//! sxd-document's `Package` is not `Send`, which is fine: it never leaves this thread.
//!
//! Semantics: no namespace prefixes bound; context node = the event's root element;
//! "positive" = boolean true, a number that is non-zero or NaN (Python truthiness, as in
//! Comet), a non-empty string, a non-empty node-set; an evaluation error is "no match" for
//! that filter only; a subscriber gets an event if it has no filters or any one matches.

use std::collections::HashMap;

use log::debug;
use sxd_xpath::{Context, Factory, Value, XPath};

/// Index of an interned expression.
pub type FilterId = usize;

struct Entry {
    text: String,
    /// `None` when the expression uses a namespace prefix: none is ever bound, so (as in
    /// Comet) every evaluation is an error, i.e. no match. sxd-xpath would panic on it.
    xpath: Option<XPath>,
    users: usize,
}

/// True if the expression has a `prefix:name` outside string literals (a `:` that is not
/// part of an axis `::`).
pub fn uses_prefix(expr: &str) -> bool {
    let b = expr.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b':' => {
                if b.get(i + 1) == Some(&b':') {
                    i += 1;
                } else {
                    return true;
                }
            }
            None => {}
        }
        i += 1;
    }
    false
}

/// Interned, compiled expressions.
#[derive(Default)]
pub struct FilterTable {
    entries: Vec<Option<Entry>>,
    by_text: HashMap<String, FilterId>,
    free: Vec<FilterId>,
    /// Total expression evaluations (for tests and the periodic summary).
    pub evaluations: u64,
}

/// Why an expression was not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFilter(pub String);

impl std::fmt::Display for InvalidFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compile an XPath 1.0 expression.
pub fn compile(text: &str) -> Result<XPath, InvalidFilter> {
    match Factory::new().build(text) {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err(InvalidFilter("empty expression".into())),
        Err(e) => Err(InvalidFilter(e.to_string())),
    }
}

/// Compile an expression only to check it (what Comet does at start-up with `--filter`
/// and what `--subscriber-config` does per line).
pub fn check_xpath(text: &str) -> Result<(), InvalidFilter> {
    compile(text).map(drop)
}

impl FilterTable {
    /// Intern `text`, compiling it if new. Each successful call must be paired with a
    /// [`FilterTable::release`].
    pub fn acquire(&mut self, text: &str) -> Result<FilterId, InvalidFilter> {
        if let Some(&id) = self.by_text.get(text) {
            if let Some(e) = self.entries[id].as_mut() {
                e.users += 1;
            }
            return Ok(id);
        }
        let xpath = compile(text)?;
        let xpath = if uses_prefix(text) {
            debug!("filter {text:?} uses a namespace prefix; none is bound, so it never matches (use local-name())");
            None
        } else {
            Some(xpath)
        };
        let entry = Some(Entry {
            text: text.to_string(),
            xpath,
            users: 1,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        self.by_text.insert(text.to_string(), id);
        Ok(id)
    }

    /// Drop one use of `id`; the expression is forgotten when nobody uses it.
    pub fn release(&mut self, id: FilterId) {
        let Some(Some(e)) = self.entries.get_mut(id) else {
            return;
        };
        e.users -= 1;
        if e.users == 0 {
            let e = self.entries[id].take().expect("present");
            self.by_text.remove(&e.text);
            self.free.push(id);
        }
    }

    /// Distinct expressions installed now.
    pub fn distinct(&self) -> usize {
        self.by_text.len()
    }

    /// Start evaluating filters against one event.
    pub fn evaluate<'t>(&'t mut self, payload: &[u8]) -> Evaluation<'t> {
        let package = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| sxd_document::parser::parse(s).ok());
        if package.is_none() {
            debug!("filters: the event could not be parsed for XPath; no filter matches it");
        }
        let n = self.entries.len();
        Evaluation {
            table: self,
            package,
            verdicts: vec![None; n],
        }
    }
}

/// Verdicts for one event, computed on demand.
pub struct Evaluation<'t> {
    table: &'t mut FilterTable,
    package: Option<sxd_document::Package>,
    verdicts: Vec<Option<bool>>,
}

impl Evaluation<'_> {
    /// Whether expression `id` is positive for this event (evaluated at most once).
    pub fn matches(&mut self, id: FilterId) -> bool {
        if let Some(v) = self.verdicts.get(id).copied().flatten() {
            return v;
        }
        let v = self.compute(id);
        if let Some(slot) = self.verdicts.get_mut(id) {
            *slot = Some(v);
        }
        v
    }

    /// A subscriber with these filters gets the event: none, or any positive.
    pub fn wants(&mut self, ids: &[FilterId]) -> bool {
        ids.is_empty() || ids.iter().any(|&id| self.matches(id))
    }

    fn compute(&mut self, id: FilterId) -> bool {
        let Some(Some(entry)) = self.table.entries.get(id) else {
            return false;
        };
        let Some(package) = &self.package else {
            return false;
        };
        self.table.evaluations += 1;
        let Some(xpath) = &entry.xpath else {
            return false;
        };
        let doc = package.as_document();
        let Some(root) = doc.root().children().into_iter().find_map(|c| c.element()) else {
            return false;
        };
        let context = Context::new();
        // sxd-xpath panics on some inputs instead of returning an error; a subscriber's
        // expression must never take the dispatcher down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            xpath.evaluate(&context, root).map(|v| positive(&v))
        }));
        match result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                debug!("filter {:?}: evaluation error ({e}); no match", entry.text);
                false
            }
            Err(_) => {
                log::warn!("filter {:?}: the XPath engine failed; no match", entry.text);
                false
            }
        }
    }
}

/// Comet's notion of a positive result (Python truthiness of lxml's result).
pub fn positive(v: &Value<'_>) -> bool {
    match v {
        Value::Boolean(b) => *b,
        Value::Number(n) => *n != 0.0 || n.is_nan(),
        Value::String(s) => !s.is_empty(),
        Value::Nodeset(ns) => ns.size() > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="ivo://a.b/c#1" role="observation" version="2.0"><Who><AuthorIVORN>ivo://lofar.transients/</AuthorIVORN></Who><What><Param name="SC_Lat" value="700"/><Param name="Empty" value=""/></What></voe:VOEvent>"#;

    fn check(expr: &str) -> bool {
        let mut t = FilterTable::default();
        let id = t.acquire(expr).unwrap();
        let mut e = t.evaluate(EV.as_bytes());
        e.matches(id)
    }

    #[test]
    fn comet_semantics() {
        // Comet's documented examples.
        assert!(check(r#"/*[local-name()="VOEvent" and @role!="test"]"#));
        assert!(check(r#"//Param[@name="SC_Lat" and @value>600]"#));
        assert!(!check(r#"//Param[@name="SC_Lat" and @value>800]"#));
        assert!(check(r#"//Who[AuthorIVORN="ivo://lofar.transients/"]"#));
        // Result types.
        assert!(check("true()") && !check("false()"));
        assert!(check("1") && !check("0"));
        assert!(check("number('x')"), "NaN counts as positive");
        assert!(check("'a'") && !check("''"));
        assert!(
            check("//Param[@name='Empty']/@value"),
            "a node-set of one empty attribute"
        );
        assert!(!check("//Nothing"));
        // Context node is the root element: relative paths start there.
        assert!(check("Who/AuthorIVORN"));
        // No namespaces bound: a prefix is an evaluation error, i.e. no match.
        assert!(!check("//voe:VOEvent"));
        assert!(!check("$undefined"));
    }

    #[test]
    fn prefixes_are_found_outside_literals_only() {
        assert!(uses_prefix("//voe:VOEvent"));
        assert!(uses_prefix("re:test(., 'x')"));
        assert!(uses_prefix("//x:*"));
        assert!(!uses_prefix("//Param[@value='a:b']"));
        assert!(!uses_prefix("child::Who/descendant-or-self::node()"));
        assert!(!uses_prefix(
            r#"//Who[AuthorIVORN="ivo://lofar.transients/"]"#
        ));
    }

    #[test]
    fn invalid_expressions_are_refused() {
        let mut t = FilterTable::default();
        assert!(t.acquire("//[").is_err());
        assert!(t.acquire("").is_err());
        assert_eq!(t.distinct(), 0);
    }

    #[test]
    fn each_distinct_expression_is_evaluated_once_per_event() {
        let mut t = FilterTable::default();
        let exprs: Vec<String> = (0..10).map(|i| format!("//Param[@value>{i}]")).collect();
        // 1000 subscribers sharing 10 expressions.
        let subs: Vec<Vec<FilterId>> = (0..1000)
            .map(|i| vec![t.acquire(&exprs[i % 10]).unwrap()])
            .collect();
        assert_eq!(t.distinct(), 10);
        for _ in 0..3 {
            let before = t.evaluations;
            let mut e = t.evaluate(EV.as_bytes());
            let n = subs.iter().filter(|f| e.wants(f)).count();
            assert_eq!(n, 1000);
            assert_eq!(t.evaluations - before, 10);
        }
        // Release everything: the table forgets the expressions and reuses slots.
        for f in &subs {
            for &id in f {
                t.release(id);
            }
        }
        assert_eq!(t.distinct(), 0);
        let id = t.acquire("true()").unwrap();
        assert!(id < 10);
    }
}
