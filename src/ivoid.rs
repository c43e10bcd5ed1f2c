//! IVOA identifiers (IVOIDs): `ivo://authority[/resource-key][#local-id]`.
//!
//! Comet's rule set (spec §5.4) with bolide's two deliberate changes: the `#` before a
//! local ID is mandatory (Comet's optional `#` lets `ivo://abc/x+y` through with local ID
//! `+y`), and "word characters" are ASCII only (Comet uses Python's Unicode `\w`). Every
//! error names the part that failed.

use std::fmt;

/// Why an IVOID was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvoidError {
    /// The empty string.
    Empty,
    /// Does not start with the lowercase `ivo://` scheme.
    Scheme,
    /// The authority is too short, starts with a non-alphanumeric, or has a bad character.
    Authority(String),
    /// The resource key has a bad character, `//`, `/./`, `/../`, or a trailing `/`.
    ResourceKey { key: String, why: &'static str },
    /// The local ID (after `#`) has a character outside the allowed set.
    LocalId(String),
    /// An event ivorn with nothing after `#` (or no `#` at all).
    NoLocalId,
    /// A `--local-ivo` that carries a `#fragment` (the test event appends its own).
    HasLocalId,
}

impl fmt::Display for IvoidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvoidError::Empty => write!(f, "invalid ivorn: empty"),
            IvoidError::Scheme => write!(f, "invalid ivorn: it must start with ivo://"),
            IvoidError::Authority(a) => write!(
                f,
                "invalid ivorn authority '{}': it needs at least 3 characters, the first a letter or digit, the rest letters, digits or - . _ ~ * ' ( )",
                clip(a)
            ),
            IvoidError::ResourceKey { key, why } => {
                write!(f, "invalid ivorn resource key '{}': {why}", clip(key))
            }
            IvoidError::LocalId(l) => write!(
                f,
                "invalid ivorn local ID '{}': allowed are letters, digits and - . _ ~ * ' ( ) + = / % ! $ & , ; : @ ?",
                clip(l)
            ),
            IvoidError::NoLocalId => write!(f, "ivorn has no local ID (#…)"),
            IvoidError::HasLocalId => write!(
                f,
                "a broker IVOID must not contain '#' (its test events get #TestEvent-<time> appended)"
            ),
        }
    }
}

impl std::error::Error for IvoidError {}

fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn auth_char(c: u8) -> bool {
    word(c) || b"-.~*'()".contains(&c)
}

fn rsrc_char(c: u8) -> bool {
    auth_char(c) || c == b'/'
}

fn local_char(c: u8) -> bool {
    auth_char(c) || b"+=/%!$&,;:@?".contains(&c)
}

/// The parts of a syntactically valid IVOID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivoid<'a> {
    pub authority: &'a str,
    /// Including its leading `/`; empty if absent.
    pub resource: &'a str,
    /// After `#`; `None` if there is no `#`.
    pub local: Option<&'a str>,
}

/// Parse an IVOID under bolide's rules, without requiring a local ID.
pub fn parse(s: &str) -> Result<Ivoid<'_>, IvoidError> {
    if s.is_empty() {
        return Err(IvoidError::Empty);
    }
    let rest = s.strip_prefix("ivo://").ok_or(IvoidError::Scheme)?;
    let (registry, local) = match rest.find('#') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (authority, resource) = match registry.find('/') {
        Some(i) => (&registry[..i], &registry[i..]),
        None => (registry, ""),
    };
    let ab = authority.as_bytes();
    if ab.len() < 3 || !ab[0].is_ascii_alphanumeric() || !ab.iter().all(|&c| auth_char(c)) {
        return Err(IvoidError::Authority(authority.to_string()));
    }
    if !resource.bytes().all(rsrc_char) {
        return Err(IvoidError::ResourceKey {
            key: resource.to_string(),
            why: "allowed are letters, digits, / and - . _ ~ * ' ( )",
        });
    }
    let bad_seq = if resource.contains("//") {
        Some("it must not contain //")
    } else if resource.contains("/../") {
        Some("it must not contain /../")
    } else if resource.contains("/./") {
        Some("it must not contain /./")
    } else if resource.ends_with('/') {
        Some("it must not end with /")
    } else {
        None
    };
    if let Some(why) = bad_seq {
        return Err(IvoidError::ResourceKey {
            key: resource.to_string(),
            why,
        });
    }
    if let Some(l) = local {
        if !l.bytes().all(local_char) {
            return Err(IvoidError::LocalId(l.to_string()));
        }
    }
    Ok(Ivoid {
        authority,
        resource,
        local,
    })
}

/// Check an event's ivorn: a valid IVOID with a non-empty local ID after `#`.
pub fn check_event_ivorn(s: &str) -> Result<(), IvoidError> {
    match parse(s)?.local {
        Some(l) if !l.is_empty() => Ok(()),
        _ => Err(IvoidError::NoLocalId),
    }
}

/// Check a broker's `--local-ivo`: a valid IVOID without `#`.
pub fn check_local_ivo(s: &str) -> Result<(), IvoidError> {
    match parse(s)?.local {
        None => Ok(()),
        Some(_) => Err(IvoidError::HasLocalId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_event_ivorns() {
        for s in [
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729",
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_Known_Pos_-1737954935-213",
            "ivo://au.edu.swin/utmost#FRB201911071855/58794.789489",
            "ivo://nasa.gsfc.gcn/Fermi#GBM_Fin_Pos_Int_2016-01--12T13:36:22.84_472224986_0-591",
            "ivo://abc#1",
            "ivo://abc/x#a?b",
            "ivo://abc/x#a%zz",
            "ivo://abc/x/..#1",
            "ivo://a~b/c*d'(e)#+=/%!$&,;:@?",
        ] {
            assert_eq!(check_event_ivorn(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn invalid_event_ivorns_name_the_failing_part() {
        use IvoidError::*;
        type Check = fn(&IvoidError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| *e == Empty),
            ("http://bolide.test/invalid#bad-scheme-1", |e| *e == Scheme),
            ("IVO://abc/x#1", |e| *e == Scheme),
            ("ivo://ab/x#1", |e| matches!(e, Authority(_))),
            ("ivo://x/y#1", |e| matches!(e, Authority(_))),
            ("ivo://-bc/x#1", |e| matches!(e, Authority(_))),
            ("ivo://aäc/x#1", |e| matches!(e, Authority(_))),
            ("ivo://äbc/x#1", |e| matches!(e, Authority(_))),
            ("ivo://abc:8080/x#1", |e| matches!(e, Authority(_))),
            ("ivo://user@abc/x#1", |e| matches!(e, Authority(_))),
            ("ivo://a%41c/x#1", |e| matches!(e, Authority(_))),
            ("ivo://abc/x%20y#1", |e| matches!(e, ResourceKey { .. })),
            ("ivo://abc/x y#1", |e| matches!(e, ResourceKey { .. })),
            ("ivo://abc/[x]#1", |e| matches!(e, ResourceKey { .. })),
            ("ivo://abc/x?q#1", |e| matches!(e, ResourceKey { .. })),
            ("ivo://abc/x+y", |e| matches!(e, ResourceKey { .. })),
            (
                "ivo://abc//x#1",
                |e| matches!(e, ResourceKey { why, .. } if why.contains("//")),
            ),
            (
                "ivo://bolide.test/../../etc/passwd#traversal-1",
                |e| matches!(e, ResourceKey { why, .. } if why.contains("/../")),
            ),
            (
                "ivo://abc/./x#1",
                |e| matches!(e, ResourceKey { why, .. } if why.contains("/./")),
            ),
            (
                "ivo://abc/x/#1",
                |e| matches!(e, ResourceKey { why, .. } if why.contains("end")),
            ),
            ("ivo://abc/x#1#2", |e| matches!(e, LocalId(_))),
            ("ivo://abc/x#ä", |e| matches!(e, LocalId(_))),
            ("ivo://abc/x#1\n", |e| matches!(e, LocalId(_))),
            ("ivo://abc/x#a b", |e| matches!(e, LocalId(_))),
            ("ivo://bolide.test/invalid", |e| *e == NoLocalId),
            ("ivo://nasa.gsfc.gcn/gcn", |e| *e == NoLocalId),
            ("ivo://abc/x#", |e| *e == NoLocalId),
            ("ivo://abc", |e| *e == NoLocalId),
        ];
        for (s, pred) in cases {
            let e = check_event_ivorn(s).expect_err(s);
            assert!(pred(&e), "{s}: {e:?}");
            assert!(e.to_string().contains("ivorn"), "{e}");
        }
        assert!(check_event_ivorn("ivo://x/y#1")
            .unwrap_err()
            .to_string()
            .contains("authority 'x'"));
    }

    #[test]
    fn local_ivo_rules() {
        assert_eq!(check_local_ivo("ivo://abc"), Ok(()));
        assert_eq!(check_local_ivo("ivo://me.test/broker"), Ok(()));
        assert_eq!(
            check_local_ivo("ivo://me.test/broker#x"),
            Err(IvoidError::HasLocalId)
        );
        assert_eq!(
            check_local_ivo("ivo://me.test/broker#"),
            Err(IvoidError::HasLocalId)
        );
        assert!(check_local_ivo("ivo://ab").is_err());
        assert!(check_local_ivo("me.test").is_err());
    }
}
