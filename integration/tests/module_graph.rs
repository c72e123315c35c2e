//! The module graph flows one way: no module of any crate imports (through `crate::`, `super::`
//! or `self::` paths) a module that imports it back, directly or around a longer loop.
//! Declaring a child (`mod x;`) is not an import; using its items is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate: `["api", "registry"]` for `src/api/registry.rs`.
type ModulePath = Vec<String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ sits in the workspace root")
        .to_path_buf()
}

/// Every library module file under `src/` (not `main.rs` or `src/bin/`, which reach the
/// library by its crate name), by module path.
fn modules(src: &Path) -> BTreeMap<ModulePath, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<ModulePath, PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                let mut child = prefix.to_vec();
                child.push(name);
                walk(&path, &child, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.to_vec();
                match stem {
                    "lib" if prefix.is_empty() => {}
                    "main" if prefix.is_empty() => continue,
                    "mod" => {}
                    _ => module.push(stem.to_string()),
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The text without comments and string literals, so doc links and messages are not imports.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for next in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if next == '\\' {
                        escaped = true;
                    } else if next == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code before an inline `#[cfg(test)] mod tests { ... }`: inside it `super::` means the
/// file's own module, and tests are not part of the structure.
fn without_inline_tests(code: &str) -> String {
    let mut kept = String::with_capacity(code.len());
    let mut lines = code.lines().peekable();
    while let Some(line) = lines.next() {
        let next = lines.peek().map(|l| l.trim()).unwrap_or_default();
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// Reads a use-tree or path after a root keyword: `a::b::{c, d::e}` gives `[a,b,c]`, `[a,b,d,e]`.
fn paths_after(text: &[u8], mut at: usize, prefix: &[String], out: &mut Vec<ModulePath>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        while at < text.len() && text[at].is_ascii_whitespace() {
            at += 1;
        }
        if text.get(at) == Some(&b'{') {
            at += 1;
            loop {
                at = paths_after(text, at, &path, out);
                while at < text.len() && text[at].is_ascii_whitespace() {
                    at += 1;
                }
                match text.get(at) {
                    Some(b',') => at += 1,
                    Some(b'}') => return at + 1,
                    _ => return at,
                }
                while at < text.len() && text[at].is_ascii_whitespace() {
                    at += 1;
                }
                if text.get(at) == Some(&b'}') {
                    return at + 1;
                }
            }
        }
        let start = at;
        while at < text.len() && (text[at].is_ascii_alphanumeric() || text[at] == b'_') {
            at += 1;
        }
        if start == at {
            out.push(path);
            return at;
        }
        path.push(String::from_utf8_lossy(&text[start..at]).into_owned());
        if text[at..].starts_with(b"::") {
            at += 2;
        } else {
            out.push(path);
            return at;
        }
    }
}

/// The modules a file refers to by path, resolved to the deepest module file that exists.
fn imports(
    module: &ModulePath,
    text: &str,
    known: &BTreeMap<ModulePath, PathBuf>,
) -> BTreeSet<ModulePath> {
    let code = without_inline_tests(&code_only(text));
    let bytes = code.as_bytes();
    // `self::` in `foo.rs` is `foo`; `super::` is its parent (a `mod.rs` file is its folder).
    let here = module.clone();
    let parent = module
        .split_last()
        .map(|(_, parent)| parent.to_vec())
        .unwrap_or_default();
    let mut found = Vec::new();
    for (root, base) in [
        ("crate::", Vec::new()),
        ("super::", parent),
        ("self::", here),
    ] {
        let mut from = 0;
        while let Some(offset) = code[from..].find(root) {
            let at = from + offset;
            let preceded_by_ident = at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            if !preceded_by_ident {
                paths_after(bytes, at + root.len(), &base, &mut found);
            }
            from = at + root.len();
        }
    }
    let mut targets = BTreeSet::new();
    for path in found {
        let mut resolved: ModulePath = Vec::new();
        for segment in path {
            if segment == "super" {
                resolved.pop();
            } else {
                resolved.push(segment);
            }
        }
        let mut target = Vec::new();
        for segment in &resolved {
            let mut next = target.clone();
            next.push(segment.clone());
            if known.contains_key(&next) {
                target = next;
            } else {
                break;
            }
        }
        if &target != module && !target.is_empty() {
            targets.insert(target);
        }
    }
    targets
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn loops(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct Search<'g> {
        graph: &'g BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'g ModulePath, usize>,
        low: BTreeMap<&'g ModulePath, usize>,
        stack: Vec<&'g ModulePath>,
        on_stack: BTreeSet<&'g ModulePath>,
        found: Vec<Vec<ModulePath>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, node: &'g ModulePath) {
            let number = self.index.len();
            self.index.insert(node, number);
            self.low.insert(node, number);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let Some((next, _)) = self.graph.get_key_value(next) else {
                    continue;
                };
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.clone());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found
}

fn graph_of(src: &Path) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let known = modules(src);
    known
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).expect("read a source file");
            (module.clone(), imports(module, &text, &known))
        })
        .collect()
}

fn name(module: &ModulePath) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = workspace_root();
    let mut problems = Vec::new();
    let mut crates = 0;
    for krate in ["agent", "control-plane", "policies", "integration", "xtask"] {
        let src = root.join(krate).join("src");
        let graph = graph_of(&src);
        assert!(
            !graph.is_empty(),
            "no modules found under {}",
            src.display()
        );
        crates += 1;
        for component in loops(&graph) {
            let members: BTreeSet<&ModulePath> = component.iter().collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} → {}", name(from), name(to)))
                })
                .collect();
            problems.push(format!("{krate}: {}", edges.join(", ")));
        }
    }
    assert_eq!(crates, 5);
    assert!(
        problems.is_empty(),
        "import loops (each line is one loop, by its edges):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_loop_through_grouped_and_relative_paths() {
    let dir = tempfile_dir();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("api")).expect("create a scratch crate");
    std::fs::write(src.join("lib.rs"), "//! x\npub mod api;\npub mod node;\n")
        .expect("write lib.rs");
    std::fs::write(
        src.join("api.rs"),
        "//! x\nmod answer;\nuse crate::{node::{self, Node}};\n",
    )
    .expect("write api.rs");
    std::fs::write(
        src.join("api/answer.rs"),
        "//! x\n// use crate::node; (a comment is not an import)\nuse super::super::node::Node;\n",
    )
    .expect("write api/answer.rs");
    std::fs::write(
        src.join("node.rs"),
        "//! x\nfn f() { let _ = \"crate::api\"; crate::api::answer::g(); }\n\
         #[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::api;\n}\n",
    )
    .expect("write node.rs");
    let graph = graph_of(&src);
    let api: ModulePath = vec!["api".into()];
    let answer: ModulePath = vec!["api".into(), "answer".into()];
    let node: ModulePath = vec!["node".into()];
    assert_eq!(graph[&api], BTreeSet::from([node.clone()]));
    assert_eq!(graph[&answer], BTreeSet::from([node.clone()]));
    assert_eq!(graph[&node], BTreeSet::from([answer.clone()]));
    assert_eq!(loops(&graph), vec![vec![answer, node]]);
    std::fs::remove_dir_all(&dir).expect("remove the scratch crate");
}

/// A fresh scratch folder under the target directory's tmp (no extra dependency needed).
fn tempfile_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "module-graph-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
