//! Problems found in policy files, located by file, line, column and field path.
//! Rendering is compiler-style so editors and terminals can jump straight to the fault.

use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;

use crate::tree::{Node, Pos, Value};

/// How bad a finding is: errors reject the set, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The set must not be applied.
    Error,
    /// Worth a look; the set may still be applied.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// The path of a field inside a document, printed as `spec.rules[0].backends[1].weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        FieldPath(segments)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    /// The segments from the root.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// True at the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The node this path names in `root`, or the deepest ancestor that exists, so an error
    /// about a missing field points at the mapping it is missing from.
    pub fn locate<'a>(&self, root: &'a Node) -> &'a Node {
        let mut node = root;
        for segment in &self.0 {
            let next = match (segment, &node.value) {
                (Segment::Key(key), Value::Map(_)) => node.get(key),
                (Segment::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(child) => node = child,
                None => break,
            }
        }
        node
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A problem found in one document before it is tied to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// The field at fault.
    pub path: FieldPath,
    /// Where, when already known; otherwise found from `path`.
    pub pos: Option<Pos>,
    /// What is wrong, in a sentence a user can act on.
    pub message: String,
    /// A hint, such as a "did you mean" suggestion.
    pub help: Option<String>,
}

impl Issue {
    /// An error at `path`.
    pub fn error(path: FieldPath, message: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            path,
            pos: None,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at `path`.
    pub fn warning(path: FieldPath, message: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Warning,
            ..Issue::error(path, message)
        }
    }

    /// The same issue with a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The same issue pinned to a position.
    pub fn at(mut self, pos: Pos) -> Self {
        self.pos = Some(pos);
        self
    }
}

/// A located problem in a file: what `hyphae validate` prints and the admin API returns.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file as the user named it.
    pub file: String,
    /// 1-indexed line.
    pub line: u64,
    /// 1-indexed column.
    pub column: u64,
    /// Field path inside the document, empty when the problem is with the file itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// A hint, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Characters to underline, starting at `column`.
    #[serde(skip)]
    pub len: u64,
    /// The source line, for the caret display.
    #[serde(skip)]
    pub source_line: Option<String>,
}

/// Widest source line shown under a diagnostic; longer lines are cut around the column.
const MAX_SHOWN_LINE_CHARS: usize = 120;

impl Diagnostic {
    /// Ties `issue` to `file`, taking the position from the issue or from its path in `root`.
    pub fn from_issue(file: &str, source: &str, root: Option<&Node>, issue: Issue) -> Self {
        let pos = issue
            .pos
            .or_else(|| root.map(|root| issue.path.locate(root).pos))
            .unwrap_or(Pos::START);
        Diagnostic {
            severity: issue.severity,
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            len: pos.len,
            path: issue.path.to_string(),
            message: issue.message,
            help: issue.help,
            source_line: source_line(source, pos.line),
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

fn source_line(source: &str, line: u64) -> Option<String> {
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    source.lines().nth(index).map(str::to_string)
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COL: error: PATH: MESSAGE`, then the source line with a caret under the fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: ",
            self.file, self.line, self.column, self.severity
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        writeln!(f, "{}", self.message)?;
        if let Some(line) = &self.source_line {
            let (shown, caret_at) = visible_window(line, self.column);
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            let shown_len = shown.chars().count();
            let width = usize::try_from(self.len)
                .unwrap_or(1)
                .clamp(1, shown_len.saturating_sub(caret_at).max(1));
            writeln!(f, "{gutter} | {shown}")?;
            writeln!(f, "{pad} | {}{}", " ".repeat(caret_at), "^".repeat(width))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// The part of `line` to show, with control characters made visible and width kept one
/// column per character so the caret lines up; returns the text and the caret offset.
fn visible_window(line: &str, column: u64) -> (String, usize) {
    let chars: Vec<char> = line
        .chars()
        .map(|c| {
            if c == '\t' {
                ' '
            } else if c.is_control() {
                '?'
            } else {
                c
            }
        })
        .collect();
    let col = usize::try_from(column.saturating_sub(1))
        .unwrap_or(0)
        .min(chars.len());
    let start = col.saturating_sub(MAX_SHOWN_LINE_CHARS / 2);
    let end = (start + MAX_SHOWN_LINE_CHARS).min(chars.len());
    let mut shown: String = chars[start..end].iter().collect();
    let mut caret_at = col - start;
    if start > 0 {
        shown.insert_str(0, "...");
        caret_at += 3;
    }
    if end < chars.len() {
        shown.push_str("...");
    }
    (shown, caret_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_compiler_style_with_a_caret() {
        let issue = Issue::error(
            FieldPath::root().key("spec").key("retries").key("attempts"),
            "too many",
        )
        .at(Pos {
            line: 2,
            column: 13,
            len: 2,
        })
        .with_help("use at most 10");
        let d = Diagnostic::from_issue("p.yaml", "kind: X\n  attempts: 12\n", None, issue);
        assert_eq!(
            d.to_string(),
            "p.yaml:2:13: error: spec.retries.attempts: too many\n\
             2 |   attempts: 12\n  |             ^^\n  = help: use at most 10\n"
        );
    }

    #[test]
    fn long_lines_are_cut_around_the_fault() {
        let line = "x".repeat(10_000);
        let (shown, caret) = visible_window(&line, 5_000);
        assert!(shown.len() < 200);
        assert_eq!(&shown[caret..caret + 1], "x");
    }
}
