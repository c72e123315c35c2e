//! A YAML document as a tree of nodes that remember where they were written.
//! Parsing is bounded (depth, nodes, aliases, bytes) so hostile input can never exhaust memory.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, Options, Spanned};

use crate::limits::ParseLimits;

/// Where a node starts in its file (1-indexed) and how many characters it spans, for carets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pos {
    /// 1-indexed line.
    pub line: u64,
    /// 1-indexed column, counted in characters.
    pub column: u64,
    /// Length in characters of the offending text (at least 1 when rendered).
    pub len: u64,
}

impl Pos {
    /// The start of a file: used when an error has no better place to point at.
    pub const START: Pos = Pos {
        line: 1,
        column: 1,
        len: 1,
    };

    fn from_location(location: serde_saphyr::Location) -> Option<Pos> {
        if location.line() == 0 {
            return None;
        }
        Some(Pos {
            line: location.line(),
            column: location.column().max(1),
            len: location.span().len(),
        })
    }
}

/// One YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The node's content.
    pub value: Value,
    /// Where the node was written (for an alias: where the alias was used).
    pub pos: Pos,
}

/// The content of a node, typed the way YAML 1.2's core schema resolves plain scalars.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string, quoted or plain.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the order it was written.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The YAML type name used in error messages ("expected a mapping, found a string").
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The value under `key` when this node is a mapping with string keys.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node (not the value) of `key`, to point at a key that should not be there.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(k, _)| k)
    }

    /// The key and value nodes of the entry `key` when this node is a mapping with string keys.
    fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The string content, when this node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A YAML syntax or budget error, with the position the parser reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What went wrong: the parser's words for a syntax error (without its own snippet and
    /// position), ours for a duplicate key or a breached [`ParseLimits`] bound.
    pub message: String,
    /// Where, when the parser knew.
    pub pos: Pos,
    /// True when the text broke one of the [`ParseLimits`] rather than YAML's grammar.
    pub limit: bool,
}

/// Parses every document of a YAML stream into spanned trees, within `limits`.
/// Empty documents are skipped; an empty stream yields no documents.
pub fn parse_documents(text: &str, limits: &ParseLimits) -> Result<Vec<Node>, SyntaxError> {
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_documents = limits.max_documents;
    budget.max_total_scalar_bytes = limits.max_file_bytes;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    options.strict_booleans = true;
    options.alias_limits.max_total_replayed_events = limits.max_nodes;
    options.alias_limits.max_alias_expansions_per_anchor = limits.max_aliases;
    serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(|error| {
        let pos = error
            .location()
            .and_then(Pos::from_location)
            .unwrap_or(Pos::START);
        let (message, limit) = describe_parser_error(&error, limits);
        SyntaxError {
            message,
            pos,
            limit,
        }
    })
}

/// The message for a parser error, and whether it is a breached limit. Limits and duplicate
/// keys get our own words: the parser's name its internal counters and its own options.
fn describe_parser_error(error: &serde_saphyr::Error, limits: &ParseLimits) -> (String, bool) {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;

    // An error met while expanding an alias comes wrapped with the alias's locations.
    let mut inner = error.without_snippet();
    while let Error::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let limit = |message: String| (message, true);
    match inner {
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => limit(format!(
                "nesting is deeper than the limit of {} levels; policy documents never nest \
                 this deeply",
                limits.max_depth
            )),
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => limit(format!(
                "the file has more than the limit of {} YAML nodes; split it up",
                limits.max_nodes
            )),
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => limit(format!(
                "the file uses more than the limit of {} anchors or aliases",
                limits.max_aliases
            )),
            BudgetBreach::Documents { .. } => limit(format!(
                "the file has more than the limit of {} documents; split it up",
                limits.max_documents
            )),
            BudgetBreach::ScalarBytes { .. } => limit(format!(
                "the file's text is larger than the limit of {} bytes",
                limits.max_file_bytes
            )),
            other => limit(format!("the file breaks a parser limit ({other:?})")),
        },
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => limit(format!(
            "aliases expand to more than the limit of {} YAML nodes (an alias bomb?); \
             write the repeated values out instead",
            limits.max_nodes
        )),
        Error::DuplicateMappingKey { key: Some(key), .. } => (
            format!(
                "duplicate key `{}`: a key may appear only once in a mapping; merge the two",
                key.escape_debug()
            ),
            false,
        ),
        Error::DuplicateMappingKey { key: None, .. } => (
            "duplicate key: a key may appear only once in a mapping; merge the two".to_string(),
            false,
        ),
        other => (clean_parser_message(&other.to_string()), false),
    }
}

/// The parser appends its own "at line X column Y"; we print positions ourselves.
fn clean_parser_message(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or(message).trim();
    let trimmed = match first_line.rfind(" at line ") {
        Some(index) => &first_line[..index],
        None => first_line,
    };
    trimmed.trim_end_matches(':').to_string()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let pos = Pos::from_location(spanned.referenced).unwrap_or(Pos::START);
        Ok(Node {
            value: spanned.value,
            pos,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Value::UInt(u),
            Err(_) => Value::Int(v),
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match (u64::try_from(v), i64::try_from(v)) {
            (Ok(u), _) => Ok(Value::UInt(u)),
            (_, Ok(i)) => Ok(Value::Int(i)),
            _ => Err(E::custom(format!("integer {v} is out of the 64-bit range"))),
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::UInt)
            .map_err(|_| E::custom(format!("integer {v} is out of the 64-bit range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not supported in policies"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
        parse_documents(text, &ParseLimits::default())
    }

    #[test]
    fn nodes_remember_their_line_and_column() {
        let docs = parse("a: 1\nb:\n  c: hello\n---\nx: [1, 2]\n").unwrap();
        assert_eq!(docs.len(), 2);
        let c = docs[0].get("b").and_then(|b| b.get("c")).unwrap();
        assert_eq!(c.value, Value::Str("hello".into()));
        assert_eq!((c.pos.line, c.pos.column), (3, 6));
        let x = docs[1].get("x").unwrap();
        assert_eq!(x.pos.line, 5);
    }

    #[test]
    fn duplicate_keys_are_syntax_errors_with_a_position() {
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(error.pos.line, 3, "{error:?}");
        assert!(error.message.contains("duplicate key `a`"), "{error:?}");
        assert!(!error.message.contains("DuplicateKeyPolicy"), "{error:?}");
        assert!(!error.limit);
    }

    #[test]
    fn breached_limits_are_flagged_and_named_in_our_words() {
        let error = parse(&("[".repeat(100) + &"]".repeat(100))).unwrap_err();
        assert!(error.limit);
        assert!(error.message.contains("24 levels"), "{error:?}");
        assert!(!error.message.contains("Depth {"), "{error:?}");
    }

    #[test]
    fn nesting_is_refused_past_the_limit_without_exhausting_the_stack() {
        let limits = ParseLimits::default();
        let nested = |depth: usize| -> String {
            (0..depth)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect()
        };
        // Runs on a thread with the 2 MiB stack tokio and test threads get.
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let at_limit = parse_documents(&nested(limits.max_depth - 1), &limits);
                let past_limit = parse_documents(&nested(500), &limits);
                let flow = "[".repeat(10_000) + &"]".repeat(10_000);
                let past_flow = parse_documents(&flow, &limits);
                (at_limit.is_ok(), past_limit.is_err(), past_flow.is_err())
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), (true, true, true));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&text).is_err());
    }
}
