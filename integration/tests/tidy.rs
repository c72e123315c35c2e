//! Tidy: the small rules of STYLE.md that a reviewer should not have to check by hand. Every
//! Rust file opens with `//!`; no `#[should_panic]`; no `#[ignore]` without a reason; no
//! `todo!`, `dbg!` or `std::thread::sleep` in library code.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ sits in the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// True for code that ships in a binary or library (not tests, benches or xtask).
fn is_library_code(path: &Path) -> bool {
    let text = path.to_string_lossy();
    text.contains("/src/") && !text.contains("/xtask/") && !text.contains("/tests/")
}

#[test]
fn the_workspace_follows_the_style_rules() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} Rust files under {}",
        files.len(),
        root.display()
    );
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{name}: does not open with a `//!` comment saying what it is for"
            ));
        }
        for (number, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", number + 1);
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(concat!("#[should", "_panic")) {
                problems.push(format!(
                    "{at}: a should-panic test hides what failed; assert on the error instead"
                ));
            }
            if code.starts_with(concat!("#[ig", "nore]")) {
                problems.push(format!(
                    "{at}: #[ignore] needs a reason: #[ignore = \"why\"]"
                ));
            }
            if is_library_code(file) {
                for banned in [
                    concat!("todo", "!("),
                    concat!("dbg", "!("),
                    concat!("std::thread::", "sleep"),
                ] {
                    if code.contains(banned) {
                        problems.push(format!("{at}: `{banned}` in library code"));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "style problems:\n{}",
        problems.join("\n")
    );
}
