//! Schema tests on real packets: every packet in `../shared/voevents` gets the verdict
//! Comet gives it (`MANIFEST.tsv`, `SOURCES.md`), and the hand-made packets in `invalid/`
//! fail with the expected message.

use super::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/voevents");

fn check_file(path: &str) -> Result<(), SchemaError> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc = xml::parse(&bytes, Limits::default()).unwrap_or_else(|e| panic!("{path}: {e}"));
    validate(&doc, &bytes)
}

/// The reason Comet rejects `file`, from MANIFEST's `comet_check` or, when that says
/// only "REJECT", from the packet table in SOURCES.md.
fn reject_reason(comet_check: &str, file: &str, sources: &str) -> String {
    if comet_check.trim() != "REJECT" {
        return comet_check.to_owned();
    }
    let needle = format!("| {file} |");
    let row = sources
        .lines()
        .find(|l| l.starts_with(&needle))
        .unwrap_or_else(|| panic!("no reason for {file} in MANIFEST.tsv or SOURCES.md"));
    row.split(" | ")
        .find(|cell| cell.starts_with("REJECT"))
        .unwrap_or_else(|| panic!("no REJECT cell for {file} in SOURCES.md"))
        .to_owned()
}

#[test]
fn corpus_matches_comet() {
    let manifest = std::fs::read_to_string(format!("{CORPUS}/MANIFEST.tsv")).unwrap();
    let sources = std::fs::read_to_string(format!("{CORPUS}/SOURCES.md")).unwrap_or_default();
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file_col, check_col) = (col("file"), col("comet_check"));
    let (mut accepted, mut rejected, mut ivoid_only) = (0, 0, 0);
    let mut listed = std::collections::HashSet::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let (file, verdict) = (cells[file_col], cells[check_col]);
        listed.insert(file.to_owned());
        let result = check_file(&format!("{CORPUS}/{file}"));
        if verdict == "ACCEPT" {
            assert_eq!(result, Ok(()), "{file} must validate");
            accepted += 1;
        } else {
            assert!(verdict.starts_with("REJECT"), "{file}: {verdict}");
            let reason = reject_reason(verdict, file, &sources);
            if reason.contains("schema-invalid") {
                assert!(result.is_err(), "{file} must fail the schema ({reason})");
                rejected += 1;
            } else {
                assert_eq!(
                    result,
                    Ok(()),
                    "{file} fails only Comet's IVOID check ({reason})"
                );
                ivoid_only += 1;
            }
        }
    }
    // Every packet in the directory is listed.
    for entry in std::fs::read_dir(CORPUS).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".xml") {
            assert!(listed.contains(&name), "{name} is not in MANIFEST.tsv");
        }
    }
    assert!(accepted >= 100, "only {accepted} ACCEPT packets");
    assert!(rejected >= 1);
    eprintln!("corpus: {accepted} accepted, {rejected} schema-rejected, {ivoid_only} IVOID-only");
}

#[test]
fn gecam_datatype_typo_is_named() {
    let e = check_file(&format!("{CORPUS}/gecam_flt-event_1.xml")).unwrap_err();
    assert!(
        matches!(&e, SchemaError::UnexpectedAttribute { attribute, element, .. }
        if attribute == "datatype" && element == "Param"),
        "{e:?}"
    );
}

#[test]
fn invalid_directory() {
    assert_eq!(
        check_file(&format!("{CORPUS}/invalid/control/valid-base.xml")),
        Ok(())
    );
    for (file, want) in [
        ("unknown-element.xml", "unexpected element <Trigger>"),
        ("wrong-version.xml", "attribute version"),
        ("xinclude-local-file.xml", "xi:include"),
        ("no-namespace.xml", "no namespace"),
        ("wrong-namespace.xml", "namespace"),
    ] {
        let e = check_file(&format!("{CORPUS}/invalid/{file}")).unwrap_err();
        assert!(e.to_string().contains(want), "{file}: {e}");
    }
}
