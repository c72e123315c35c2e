//! Golden tests: every file under `tests/bad/` must be rejected with exactly the diagnostics in
//! its `.expected` file (positions included). Run with `HYPHAE_BLESS=1` to rewrite them after
//! a deliberate change, then review the diff.

use std::path::{Path, PathBuf};

use hyphae_policies::{Completeness, LoadOptions, Loader};

fn bless() -> bool {
    std::env::var_os("HYPHAE_BLESS").is_some()
}

/// Renders what `hyphae validate` would print for `name` with `bytes` as its content.
fn render(name: &str, bytes: &[u8], completeness: Completeness) -> (String, bool) {
    let mut loader = Loader::new(LoadOptions {
        completeness,
        ..LoadOptions::default()
    });
    loader.add_bytes(name, bytes);
    let report = loader.finish();
    let text: String = report.diagnostics.iter().map(ToString::to_string).collect();
    (text, report.has_errors())
}

fn check_golden(expected_path: &Path, actual: &str) {
    if bless() {
        std::fs::write(expected_path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with HYPHAE_BLESS=1 to create it",
            expected_path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "diagnostics for {} changed",
        expected_path.display()
    );
}

fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad")
}

#[test]
fn every_bad_file_is_rejected_with_its_golden_diagnostics() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bad_dir())
        .expect("tests/bad exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "only {} bad files", files.len());
    for file in files {
        let name = format!(
            "bad/{}",
            file.file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 name")
        );
        let bytes = std::fs::read(&file).expect("read bad file");
        // A file whose name says `partial` is checked as part of a larger set.
        let completeness = if name.contains("partial") {
            Completeness::Partial
        } else {
            Completeness::Complete
        };
        let (text, has_errors) = render(&name, &bytes, completeness);
        if !name.contains("warning") {
            assert!(has_errors, "{name} was accepted:\n{text}");
        }
        check_golden(&file.with_extension("expected"), &text);
    }
}

#[test]
fn a_ten_megabyte_file_is_refused_before_it_is_parsed() {
    let mut big = b"kind: ServicePolicy\nmetadata:\n  name: big\n  labels:\n".to_vec();
    while big.len() < 10 * 1024 * 1024 {
        big.extend_from_slice(b"    padding-label-to-make-the-file-large: yes-very-large-indeed\n");
    }
    let (text, has_errors) = render("big.yaml", &big, Completeness::Complete);
    assert!(has_errors);
    check_golden(&bad_dir().join("generated-10mb.expected"), &text);
}

#[test]
fn binary_garbage_is_refused_with_the_offending_offset() {
    // A deterministic pseudo-random byte soup (xorshift), so the golden output is stable.
    let mut state: u32 = 0x9e37_79b9;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    let (text, has_errors) = render("garbage.yaml", &garbage, Completeness::Complete);
    assert!(has_errors);
    check_golden(&bad_dir().join("generated-garbage.expected"), &text);
}

#[test]
fn hostile_inputs_never_panic_and_stay_bounded() {
    // Deep nesting, long scalars and alias fan-out, each well past the limits.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_block: String = (0..500).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..20 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    let many_docs = "---\nkind: Route\n".repeat(5_000);
    for (name, text) in [
        ("deep-flow", deep),
        ("deep-block", deep_block),
        ("laughs", laughs),
        ("many-docs", many_docs),
    ] {
        let (out, has_errors) = render(name, text.as_bytes(), Completeness::Complete);
        assert!(has_errors, "{name} accepted");
        assert!(
            out.len() < 1_000_000,
            "{name} produced {} bytes of diagnostics",
            out.len()
        );
    }
}

#[test]
fn the_examples_are_a_valid_complete_set() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let report = hyphae_policies::load_paths(
        &[examples],
        LoadOptions {
            completeness: Completeness::Complete,
            ..LoadOptions::default()
        },
    );
    let text: String = report.diagnostics.iter().map(ToString::to_string).collect();
    assert!(report.diagnostics.is_empty(), "{text}");
    let kinds: std::collections::BTreeSet<_> =
        report.objects.iter().map(|o| o.policy.kind()).collect();
    assert_eq!(
        kinds.len(),
        hyphae_policies::Kind::ALL.len(),
        "every kind has an example"
    );
}

#[test]
fn the_committed_json_schemas_are_up_to_date() {
    use hyphae_policies::{Kind, schema};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let mut wanted = vec![(schema::file_name(None), schema::document_schema())];
    for kind in Kind::ALL {
        wanted.push((schema::file_name(Some(kind)), schema::kind_schema(kind)));
    }
    for (file, value) in wanted {
        let path = dir.join(&file);
        let text = schema::to_text(&value);
        if bless() {
            std::fs::write(&path, &text).expect("write schema");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{file} is stale: run `HYPHAE_BLESS=1 cargo test -p hyphae-policies --test golden` and commit"
        );
    }
}
