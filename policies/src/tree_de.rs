//! Deserializes typed policy objects from a spanned YAML tree, tracking the field path so every
//! type error names its field and position. Unknown fields are all collected, not just the first.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, Error as _, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::diagnostic::{FieldPath, Issue};
use crate::suggest;
use crate::tree::{Node, Pos, Value};

/// A typed-deserialization failure; the position is filled in by the innermost node that sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    message: String,
    help: Option<String>,
    at: Option<(Pos, FieldPath)>,
    /// The required field this error says is missing, if that is what it says.
    missing: Option<&'static str>,
    /// True when the error only follows from a field hidden after an earlier error.
    consequence: bool,
}

impl DeError {
    fn located(mut self, pos: Pos, path: &FieldPath) -> Self {
        if self.at.is_none() {
            self.at = Some((pos, path.clone()));
        }
        self
    }

    /// Converts into an issue, pointing at the document root when nothing more precise is known.
    pub fn into_issue(self) -> Issue {
        let (pos, path) = self.at.unwrap_or((Pos::START, FieldPath::root()));
        let issue = Issue::error(path, self.message).at(pos);
        match self.help {
            Some(help) => issue.with_help(help),
            None => issue,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            help: None,
            at: None,
            missing: None,
            consequence: false,
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("invalid value {unexp}: expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            help: suggestion_help(variant, expected),
            ..Self::custom(format_args!(
                "unknown value `{variant}`, expected one of {}",
                quoted_list(expected)
            ))
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            help: suggestion_help(field, expected),
            ..Self::custom(format_args!(
                "unknown field `{field}`, expected one of {}",
                quoted_list(expected)
            ))
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field),
            ..Self::custom(format_args!("missing required field `{field}`"))
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format_args!("field `{field}` is given twice"))
    }
}

fn suggestion_help(word: &str, expected: &[&str]) -> Option<String> {
    suggest::closest(word, expected).map(|s| format!("did you mean `{s}`?"))
}

fn quoted_list(items: &[&str]) -> String {
    if items.is_empty() {
        return "nothing (this mapping takes no fields)".to_string();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most errors recovered from in one document before giving up on it.
pub const MAX_RECOVERED_ERRORS: usize = 50;

/// The result of decoding one document.
pub struct Decoded<T> {
    /// The value, with every field that had an error left at its default; `None` when the
    /// errors left nothing to build.
    pub value: Option<T>,
    /// Every problem found, unknown fields and type errors alike.
    pub issues: Vec<Issue>,
    /// Fields hidden after an error: findings under them are consequences, not news.
    pub hidden: HashSet<FieldPath>,
}

/// Deserializes `T` from `node`, reporting every error rather than the first: a field that
/// fails is hidden (as if absent, so its default applies) and decoding starts again, up to
/// [`MAX_RECOVERED_ERRORS`] times. A required field that was hidden hides its parent in turn.
pub fn decode<T: de::DeserializeOwned>(node: &Node) -> Decoded<T> {
    let mut hidden: HashSet<FieldPath> = HashSet::new();
    let mut issues = Vec::new();
    for _ in 0..=MAX_RECOVERED_ERRORS {
        let unknown = RefCell::new(Vec::new());
        let attempt = T::deserialize(NodeDeserializer {
            node,
            path: FieldPath::root(),
            unknown: &unknown,
            hidden: &hidden,
        });
        let error = match attempt {
            Ok(value) => {
                issues.extend(unknown.into_inner());
                return Decoded {
                    value: Some(value),
                    issues,
                    hidden,
                };
            }
            Err(error) => error,
        };
        let (_, path) = error.at.clone().unwrap_or((Pos::START, FieldPath::root()));
        let follows_from_hidden = error.consequence
            || error
                .missing
                .is_some_and(|field| hidden.contains(&path.key(field)));
        if !follows_from_hidden {
            issues.push(error.into_issue());
        }
        if path.is_root() || !hidden.insert(path) {
            issues.extend(unknown.into_inner());
            break;
        }
    }
    Decoded {
        value: None,
        issues,
        hidden,
    }
}

/// A serde `Deserializer` over one node.
struct NodeDeserializer<'a> {
    node: &'a Node,
    path: FieldPath,
    /// Where unknown fields are reported (all of them, without stopping).
    unknown: &'a RefCell<Vec<Issue>>,
    /// Fields treated as absent because they failed in an earlier attempt.
    hidden: &'a HashSet<FieldPath>,
}

impl<'a> NodeDeserializer<'a> {
    fn child(&self, node: &'a Node, path: FieldPath) -> Self {
        NodeDeserializer {
            node,
            path,
            unknown: self.unknown,
            hidden: self.hidden,
        }
    }

    fn type_error(&self, expected: &str) -> DeError {
        let error = DeError::custom(format_args!(
            "expected {expected}, found {}",
            describe(&self.node.value)
        ));
        error.located(self.node.pos, &self.path)
    }

    /// True when a mapping entry was hidden after an error in an earlier attempt.
    fn is_hidden(&self, (key, _): &(Node, Node)) -> bool {
        match &key.value {
            Value::Str(name) => self.hidden.contains(&self.path.key(name)),
            _ => false,
        }
    }

    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| e.located(self.node.pos, &self.path))
    }
}

/// Describes a value for messages: scalars are shown, collections named.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Int(i) => format!("integer `{i}`"),
        Value::UInt(u) => format!("integer `{u}`"),
        Value::Float(f) => format!("number `{f}`"),
        Value::Str(s) => format!("string \"{}\"", s.escape_debug()),
        Value::Seq(_) => "a sequence".to_string(),
        Value::Map(_) => "a mapping".to_string(),
    }
}

/// Integers are range-checked here, so the message gives the range in numbers rather than
/// serde's Rust type name ("expected u16").
macro_rules! forward_integers {
    ($($method:ident => $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let fits = match &self.node.value {
                Value::UInt(u) => <$ty>::try_from(*u).is_ok(),
                Value::Int(i) => <$ty>::try_from(*i).is_ok(),
                _ => return Err(self.type_error("an integer")),
            };
            if !fits {
                let range = format!("an integer from {} to {}", <$ty>::MIN, <$ty>::MAX);
                return Err(self.type_error(&range));
            }
            let result = match &self.node.value {
                Value::Int(i) => visitor.visit_i64(*i),
                Value::UInt(u) => visitor.visit_u64(*u),
                _ => return Err(self.type_error("an integer")),
            };
            self.locate(result)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(_) => return self.deserialize_seq(visitor),
            Value::Map(_) => return self.deserialize_map(visitor),
        };
        self.locate(result)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Bool(b) => self.locate(visitor.visit_bool(*b)),
            _ => Err(self.type_error("`true` or `false`")),
        }
    }

    forward_integers!(
        deserialize_i8 => i8,
        deserialize_i16 => i16,
        deserialize_i32 => i32,
        deserialize_i64 => i64,
        deserialize_i128 => i128,
        deserialize_u8 => u8,
        deserialize_u16 => u16,
        deserialize_u32 => u32,
        deserialize_u64 => u64,
        deserialize_u128 => u128
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Integers are accepted where a number is wanted: `ratio: 1` means 1.0.
        #[allow(clippy::cast_precision_loss)] // policy numbers are small; exactness is not at stake
        let result = match &self.node.value {
            Value::Float(f) => visitor.visit_f64(*f),
            Value::UInt(u) => visitor.visit_f64(*u as f64),
            Value::Int(i) => visitor.visit_f64(*i as f64),
            _ => return Err(self.type_error("a number")),
        };
        self.locate(result)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => self.locate(visitor.visit_str(s)),
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DeError> {
        Err(self.type_error("a string"))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DeError> {
        Err(self.type_error("a string"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => self.locate(visitor.visit_none()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => self.locate(visitor.visit_unit()),
            _ => Err(self.type_error("nothing (null)")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => {
                let access = Items {
                    parent: &self,
                    items: items
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !self.hidden.contains(&self.path.index(*i))),
                };
                self.locate(visitor.visit_seq(access))
            }
            _ => Err(self.type_error("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => {
                let visible: Vec<_> = entries
                    .iter()
                    .filter(|entry| !self.is_hidden(entry))
                    .collect();
                let access = Entries {
                    parent: &self,
                    entries: visible.into_iter(),
                    value: None,
                };
                self.locate(visitor.visit_map(access))
            }
            _ => Err(self.type_error("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Value::Map(entries) = &self.node.value else {
            return Err(self.type_error("a mapping"));
        };
        // Report every unknown field now and hide them from the visitor, so one typo does not
        // mask the next.
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries.iter().filter(|entry| !self.is_hidden(entry)) {
            let (key, _) = entry;
            match &key.value {
                Value::Str(name) if fields.contains(&name.as_str()) => known.push(entry),
                Value::Str(name) => {
                    let issue = <DeError as de::Error>::unknown_field(name, fields)
                        .located(key.pos, &self.path.key(name))
                        .into_issue();
                    self.unknown.borrow_mut().push(issue);
                }
                _ => {
                    let issue = self
                        .child(key, self.path.clone())
                        .type_error("a field name (string)")
                        .into_issue();
                    self.unknown.borrow_mut().push(issue);
                }
            }
        }
        let access = Entries {
            parent: &self,
            entries: known.into_iter(),
            value: None,
        };
        self.locate(visitor.visit_map(access))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(_) => {
                let access = Variant {
                    key: &self,
                    value: None,
                };
                self.locate(visitor.visit_enum(access))
            }
            Value::Map(entries) if entries.len() == 1 && self.is_hidden(&entries[0]) => {
                let mut error = DeError::custom("its only field had an error");
                error.consequence = true;
                Err(error.located(self.node.pos, &self.path))
            }
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let name = key.as_str().unwrap_or_default();
                let key_de = self.child(key, self.path.key(name));
                let value_de = self.child(value, self.path.key(name));
                let access = Variant {
                    key: &key_de,
                    value: Some(value_de),
                };
                self.locate(visitor.visit_enum(access))
            }
            Value::Map(_) => Err(DeError::custom(format_args!(
                "set exactly one of {}",
                quoted_list(variants)
            ))
            .located(self.node.pos, &self.path)),
            _ => Err(self.type_error(&format!("one of {}", quoted_list(variants)))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// Sequence elements, each deserialized with its index in the path.
struct Items<'p, 'a, I> {
    parent: &'p NodeDeserializer<'a>,
    items: I,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> SeqAccess<'de> for Items<'_, 'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((index, node)) => {
                let path = self.parent.path.index(index);
                // Locate here too: a value's own `Deserialize` may fail after our deserializer
                // returned (a bad duration), and that error must still point at the value.
                let located = |e: DeError| e.located(node.pos, &path);
                seed.deserialize(self.parent.child(node, path.clone()))
                    .map(Some)
                    .map_err(located)
            }
            None => Ok(None),
        }
    }
}

/// Mapping entries, each value deserialized with its key in the path.
struct Entries<'p, 'a, I> {
    parent: &'p NodeDeserializer<'a>,
    entries: I,
    value: Option<(&'a Node, FieldPath)>,
}

impl<'de, 'a, I: Iterator<Item = &'a (Node, Node)>> MapAccess<'de> for Entries<'_, 'a, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = match &key.value {
            Value::Str(name) => self.parent.path.key(name),
            _ => self.parent.path.clone(),
        };
        let key_value = seed.deserialize(self.parent.child(key, path.clone()))?;
        self.value = Some((value, path));
        Ok(Some(key_value))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| DeError::custom("a map value was asked for before its key"))?;
        let located = |e: DeError| e.located(node.pos, &path);
        seed.deserialize(self.parent.child(node, path.clone()))
            .map_err(located)
    }
}

/// An enum variant: its name from `key`, its content (if any) from `value`.
struct Variant<'p, 'a> {
    key: &'p NodeDeserializer<'a>,
    value: Option<NodeDeserializer<'a>>,
}

impl<'de, 'p, 'a> EnumAccess<'de> for Variant<'p, 'a> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), DeError> {
        let name = match &self.key.node.value {
            Value::Str(s) => s.clone(),
            _ => return Err(self.key.type_error("a name")),
        };
        let variant = seed
            .deserialize(name.into_deserializer())
            .map_err(|e: DeError| e.located(self.key.node.pos, &self.key.path))?;
        Ok((variant, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(value) if value.node.value == Value::Null => Ok(()),
            Some(value) => Err(value.type_error("nothing after this name")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(value) => seed.deserialize(value),
            None => Err(self
                .key
                .type_error("a mapping with one field and its value")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(value) => de::Deserializer::deserialize_seq(value, visitor),
            None => Err(self
                .key
                .type_error("a mapping with one field and its value")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(value) => de::Deserializer::deserialize_struct(value, "", fields, visitor),
            None => Err(self
                .key
                .type_error("a mapping with one field and its value")),
        }
    }
}
