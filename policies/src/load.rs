//! Reads policy files and directories into checked objects plus located diagnostics.
//! The one code path the CLI, the agent and the control plane all use: same input, same errors.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, FieldPath, Issue};
use crate::limits::ParseLimits;
use crate::tree::{self, Node, Pos, Value};
use crate::tree_de;
use crate::validate::{self, Completeness, SetMember};
use crate::{Kind, Metadata, Object, Policy, suggest};

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Resource limits on the input.
    pub limits: ParseLimits,
    /// Whether unknown service references are errors (complete set) or warnings.
    pub completeness: Completeness,
}

/// One object read from a file, with where it came from.
#[derive(Clone, Debug)]
pub struct LoadedObject {
    /// The object.
    pub policy: Policy,
    /// The file it was read from, as the caller named it.
    pub file: String,
    /// Its document's index in the file, from 0.
    pub document: usize,
    /// The document as written, to locate later findings.
    pub tree: Node,
}

/// Everything read, and everything wrong with it.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Objects that parsed and passed their own checks, in file order.
    pub objects: Vec<LoadedObject>,
    /// Errors and warnings, sorted by file then position.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read, in order.
    pub files: Vec<String>,
}

impl Report {
    /// True when the set must not be applied.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }

    /// The objects alone, when there are no errors.
    pub fn into_policies(self) -> Result<Vec<Policy>, Vec<Diagnostic>> {
        if self.has_errors() {
            return Err(self.diagnostics);
        }
        Ok(self.objects.into_iter().map(|o| o.policy).collect())
    }
}

/// Collects files, then checks them as one set.
#[derive(Debug, Default)]
pub struct Loader {
    options: LoadOptions,
    report: Report,
    sources: HashMap<String, String>,
    /// Objects that had errors: kept out of the set, but the services they define still
    /// count as defined, so one mistake is not reported again at every reference.
    rejected: Vec<Policy>,
}

impl Loader {
    /// A loader with these options.
    pub fn new(options: LoadOptions) -> Self {
        Loader {
            options,
            ..Loader::default()
        }
    }

    /// Adds a file, or every `.yaml`/`.yml` file under a directory (sorted, recursively).
    pub fn add_path(&mut self, path: &Path) {
        if path.is_dir() {
            let mut files = Vec::new();
            if let Err(error) = collect_yaml_files(path, &mut files, self.options.limits.max_files)
            {
                self.file_error(&path.display().to_string(), error);
                return;
            }
            for file in files {
                self.add_file(&file);
            }
        } else {
            self.add_file(path);
        }
    }

    fn add_file(&mut self, path: &Path) {
        let name = path.display().to_string();
        let limit = self.options.limits.max_file_bytes;
        let read = std::fs::File::open(path).and_then(|file| {
            let mut bytes = Vec::new();
            // Read one byte past the limit to tell "at the limit" from "over it" without
            // ever holding more than that in memory.
            file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        match read {
            Ok(bytes) => self.add_bytes(&name, &bytes),
            Err(error) => self.file_error(&name, format!("cannot read the file: {error}")),
        }
    }

    fn file_error(&mut self, name: &str, message: String) {
        self.report.files.push(name.to_string());
        self.push(
            name,
            "",
            None,
            Issue::error(FieldPath::root(), message).at(Pos::START),
        );
    }

    /// Adds in-memory content named `name` (an uploaded body, a test case).
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) {
        let limit = self.options.limits.max_file_bytes;
        if bytes.len() > limit {
            let message =
                format!("file is larger than the {limit}-byte limit for policy files; split it up");
            return self.file_error(name, message);
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                let offset = error.valid_up_to();
                let pos = position_of_offset(&bytes[..offset]);
                let byte = bytes.get(offset).copied().unwrap_or_default();
                self.report.files.push(name.to_string());
                let message = format!(
                    "file is not UTF-8 text: byte 0x{byte:02x} at offset {offset} is not valid UTF-8"
                );
                let issue = Issue::error(FieldPath::root(), message).at(pos);
                let shown = String::from_utf8_lossy(&bytes[..offset]).into_owned();
                return self.push(name, &shown, None, issue);
            }
        };
        self.add_text(name, text);
    }

    /// Adds text named `name`.
    pub fn add_text(&mut self, name: &str, text: &str) {
        self.report.files.push(name.to_string());
        self.sources.insert(name.to_string(), text.to_string());
        let documents = match tree::parse_documents(text, &self.options.limits) {
            Ok(documents) => documents,
            Err(error) => {
                let issue = syntax_issue(text, &error);
                return self.push(name, text, None, issue);
            }
        };
        if documents.is_empty() {
            let issue = Issue::error(FieldPath::root(), "file has no policy documents")
                .at(Pos::START)
                .with_help("a policy document starts with `kind:`, e.g. `kind: ServicePolicy`");
            return self.push(name, text, None, issue);
        }
        for (index, document) in documents.into_iter().enumerate() {
            let (policy, issues, clean) = decode_document(&document);
            for issue in issues {
                self.push(name, text, Some(&document), issue);
            }
            if let Some(policy) = policy.as_ref().filter(|_| !clean) {
                self.rejected.push(policy.clone());
            }
            if let Some(policy) = policy.filter(|_| clean) {
                self.report.objects.push(LoadedObject {
                    policy,
                    file: name.to_string(),
                    document: index,
                    tree: document,
                });
            }
        }
    }

    fn push(&mut self, file: &str, text: &str, root: Option<&Node>, issue: Issue) {
        self.report
            .diagnostics
            .push(Diagnostic::from_issue(file, text, root, issue));
    }

    /// Runs the checks between objects and returns the report.
    pub fn finish(mut self) -> Report {
        let origins: Vec<String> = self
            .report
            .objects
            .iter()
            .map(|o| {
                let pos = FieldPath::root()
                    .key("metadata")
                    .key("name")
                    .locate(&o.tree)
                    .pos;
                format!("{}:{}:{}", o.file, pos.line, pos.column)
            })
            .collect();
        let members: Vec<SetMember<'_>> = self
            .report
            .objects
            .iter()
            .zip(origins)
            .map(|(o, origin)| SetMember {
                policy: &o.policy,
                origin,
            })
            .collect();
        let rejected: Vec<&Policy> = self.rejected.iter().collect();
        let set_issues = validate::check_set(&members, &rejected, self.options.completeness);
        let mut located = Vec::with_capacity(set_issues.len());
        for (index, issue) in set_issues {
            let object = &self.report.objects[index];
            let text = self
                .sources
                .get(&object.file)
                .map(String::as_str)
                .unwrap_or_default();
            located.push(Diagnostic::from_issue(
                &object.file,
                text,
                Some(&object.tree),
                issue,
            ));
        }
        self.report.diagnostics.extend(located);
        let order: HashMap<&str, usize> = self
            .report
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.as_str(), i))
            .collect();
        let mut diagnostics = std::mem::take(&mut self.report.diagnostics);
        diagnostics.sort_by_key(|d| (order.get(d.file.as_str()).copied(), d.line, d.column));
        self.report.diagnostics = diagnostics;
        self.report
    }
}

/// Loads files and directories as one set.
pub fn load_paths(paths: &[PathBuf], options: LoadOptions) -> Report {
    let mut loader = Loader::new(options);
    for path in paths {
        loader.add_path(path);
    }
    loader.finish()
}

/// Loads one in-memory file as a set of its own.
pub fn load_str(name: &str, text: &str, options: LoadOptions) -> Report {
    let mut loader = Loader::new(options);
    loader.add_text(name, text);
    loader.finish()
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>, max_files: usize) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the directory: {e}"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_yaml_files(&entry, out, max_files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            if out.len() >= max_files {
                return Err(format!(
                    "more than {max_files} policy files; point at a smaller tree"
                ));
            }
            out.push(entry);
        }
    }
    Ok(())
}

/// Line and column just after `prefix`.
fn position_of_offset(prefix: &[u8]) -> Pos {
    let text = String::from_utf8_lossy(prefix);
    let line = text.matches('\n').count() + 1;
    let column = text
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    Pos {
        line: u64::try_from(line).unwrap_or(u64::MAX),
        column: u64::try_from(column).unwrap_or(u64::MAX),
        len: 1,
    }
}

/// The issue for text the parser refused: a breached limit in its own words, a syntax error
/// with a hint for the mistakes people actually make.
fn syntax_issue(text: &str, error: &tree::SyntaxError) -> Issue {
    if error.limit {
        return Issue::error(FieldPath::root(), error.message.clone()).at(error.pos);
    }
    let about_tabs = error
        .message
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|word| word.eq_ignore_ascii_case("tab") || word.eq_ignore_ascii_case("tabs"));
    if about_tabs {
        let message = format!(
            "YAML syntax error: {} (YAML indents with spaces, never tabs)",
            error.message
        );
        // The parser points near the tab (after it, or at the scalar before it); point at it.
        let pos = indenting_tab(text, error.pos.line).unwrap_or(error.pos);
        return Issue::error(FieldPath::root(), message).at(pos);
    }
    let issue = Issue::error(
        FieldPath::root(),
        format!("YAML syntax error: {}", error.message),
    )
    .at(error.pos);
    let indentation = [
        "did not find expected key",
        "mapping values are not allowed",
    ];
    if indentation.iter().any(|hint| error.message.contains(hint)) {
        issue.with_help("check the indentation of this line against the lines above it")
    } else {
        issue
    }
}

/// The first tab in the indentation of line `line` or the line after it.
fn indenting_tab(text: &str, line: u64) -> Option<Pos> {
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    text.lines()
        .enumerate()
        .skip(index)
        .take(2)
        .find_map(|(number, content)| {
            let indent = content.len() - content.trim_start_matches([' ', '\t']).len();
            let column = content[..indent].find('\t')?;
            Some(Pos {
                line: u64::try_from(number + 1).ok()?,
                column: u64::try_from(column + 1).ok()?,
                len: 1,
            })
        })
}

/// How a document is read before it is known to be valid: `kind` is checked separately.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<S> {
    #[serde(rename = "kind")]
    _kind: String,
    metadata: Metadata,
    spec: S,
}

/// A document decoded as far as it would go.
struct Reading {
    /// The object, with any field that failed left at its default; `None` when nothing could
    /// be built.
    policy: Option<Policy>,
    /// Problems found so far.
    issues: Vec<Issue>,
    /// True when fields failed: the object is incomplete and has already been checked.
    failed: bool,
}

impl Reading {
    fn refused(issue: Issue) -> Self {
        Reading {
            policy: None,
            issues: vec![issue],
            failed: true,
        }
    }
}

/// Decodes and checks one document. The object comes back whenever it could be built, with
/// whether it is clean (no errors): only clean objects join the set.
fn decode_document(document: &Node) -> (Option<Policy>, Vec<Issue>, bool) {
    let Reading {
        policy,
        mut issues,
        failed,
    } = read_document(document);
    if let Some(policy) = policy.as_ref().filter(|_| !failed) {
        issues.extend(validate::check_object(policy));
    }
    let clean = !failed && !issues.iter().any(|i| i.severity == crate::Severity::Error);
    (policy, issues, clean)
}

/// Decodes one document into its typed object without the semantic checks; the object comes
/// back even when fields were unknown, so callers can see every problem at once.
pub fn parse_document(document: &Node) -> (Option<Policy>, Vec<Issue>) {
    let reading = read_document(document);
    (reading.policy.filter(|_| !reading.failed), reading.issues)
}

fn read_document(document: &Node) -> Reading {
    let root = FieldPath::root();
    if !matches!(document.value, Value::Map(_)) {
        let issue = Issue::error(
            root,
            format!(
                "a policy document must be a mapping with `kind`, `metadata` and `spec`, found {}",
                document.value.kind_name()
            ),
        );
        return Reading::refused(issue);
    }
    let kind = match document.get("kind") {
        None => {
            let issue = Issue::error(root, "missing required field `kind`")
                .at(document.pos)
                .with_help(format!(
                    "set `kind:` to one of {}",
                    Kind::names().join(", ")
                ));
            return Reading::refused(issue);
        }
        Some(node) => match node.as_str().map(|name| (name, Kind::from_name(name))) {
            Some((_, Some(kind))) => kind,
            Some((name, None)) => {
                let mut issue = Issue::error(
                    root.key("kind"),
                    format!(
                        "unknown kind `{name}`, expected one of {}",
                        Kind::names().join(", ")
                    ),
                );
                if let Some(close) = suggest::closest(name, &Kind::names()) {
                    issue = issue.with_help(format!("did you mean `{close}`?"));
                }
                return Reading::refused(issue);
            }
            None => {
                let issue = Issue::error(
                    root.key("kind"),
                    format!("expected a kind name, found {}", node.value.kind_name()),
                );
                return Reading::refused(issue);
            }
        },
    };
    match kind {
        Kind::ServicePolicy => decode(document, Policy::ServicePolicy),
        Kind::Route => decode(document, Policy::Route),
        Kind::AccessPolicy => decode(document, Policy::AccessPolicy),
        Kind::ExternalService => decode(document, Policy::ExternalService),
        Kind::AgentConfig => decode(document, |o| Policy::AgentConfig(Box::new(o))),
        Kind::ControlPlaneConfig => decode(document, Policy::ControlPlaneConfig),
    }
}

/// Decodes a document of one kind. When some fields had errors, the object (with those fields
/// at their defaults) is still checked, so one run reports type and semantic errors together;
/// findings under a field that already had an error are dropped as consequences.
fn decode<S: DeserializeOwned>(document: &Node, wrap: fn(Object<S>) -> Policy) -> Reading {
    let decoded = tree_de::decode::<Envelope<S>>(document);
    let mut issues = decoded.issues;
    let Some(envelope) = decoded.value else {
        return Reading {
            policy: None,
            issues,
            failed: true,
        };
    };
    let policy = wrap(Object {
        metadata: envelope.metadata,
        spec: envelope.spec,
    });
    if decoded.hidden.is_empty() {
        return Reading {
            policy: Some(policy),
            issues,
            failed: false,
        };
    }
    // A finding is a consequence when it is about a hidden field, or about a sequence that
    // lost a hidden element ("needs at least one backend" after the backend failed).
    let under_hidden = |issue: &Issue| {
        decoded.hidden.iter().any(|hidden| {
            let segments = hidden.segments();
            let lost_element =
                matches!(segments.last(), Some(crate::diagnostic::Segment::Index(_)))
                    && issue.path.segments() == &segments[..segments.len() - 1];
            lost_element || issue.path.segments().starts_with(segments)
        })
    };
    issues.extend(
        validate::check_object(&policy)
            .into_iter()
            .filter(|i| !under_hidden(i)),
    );
    // The object has errors: it never joins the set, but still says which services exist.
    Reading {
        policy: Some(policy),
        issues,
        failed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        assert_eq!(
            position_of_offset(b"ab\ncd"),
            Pos {
                line: 2,
                column: 3,
                len: 1
            }
        );
        assert_eq!(position_of_offset(b""), Pos::START);
    }

    #[test]
    fn a_valid_document_loads() {
        let report = load_str(
            "t.yaml",
            "kind: ServicePolicy\nmetadata: {name: payments}\nspec:\n  retries: {attempts: 3}\n",
            LoadOptions::default(),
        );
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        let policies = report.into_policies().unwrap();
        let Policy::ServicePolicy(p) = &policies[0] else {
            panic!("wrong kind")
        };
        assert_eq!(p.spec.retries.attempts, 3);
    }

    #[test]
    fn type_errors_do_not_hide_later_errors_or_invent_new_ones() {
        // `backends` is required: its element fails, so the rule fails, but only the root
        // cause is reported; `attempts` and `regex` errors further on are still found.
        let text = "kind: Route\nmetadata: {name: r}\nspec:\n  service: s\n  rules:\n    - backends: [{service: 5}]\n    - backends: [{service: s}]\n      matches: [{path: {regex: \"(\"}}]\n      retries: {attempts: many}\n";
        let report = load_str("t.yaml", text, LoadOptions::default());
        let found: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| (d.line, d.path.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (6, "spec.rules[0].backends[0].service"),
                (8, "spec.rules[1].matches[0].path.regex"),
                (9, "spec.rules[1].retries.attempts"),
            ],
            "{:#?}",
            report.diagnostics
        );
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_position() {
        let text = "kind: ServicePolicy\nmetadata: {name: p}\nspec:\n  timeouts: {reqest: 1s}\n  retires: {}\n";
        let report = load_str("t.yaml", text, LoadOptions::default());
        let found: Vec<_> = report
            .diagnostics
            .iter()
            .map(|d| (d.line, d.column, d.path.as_str(), d.help.as_deref()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    4,
                    14,
                    "spec.timeouts.reqest",
                    Some("did you mean `request`?")
                ),
                (5, 3, "spec.retires", Some("did you mean `retries`?")),
            ]
        );
    }
}
