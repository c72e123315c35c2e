//! HTTP methods and header names, as routes and access policies match on them.

use super::Checker;
use crate::diagnostic::FieldPath;

/// Checks an HTTP method: an upper-case token such as `GET`.
pub(super) fn check_method(c: &mut Checker, path: FieldPath, method: &str) {
    let token = !method.is_empty()
        && method
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch == '-');
    if !token {
        c.error(
            path,
            format!("`{method}` is not an HTTP method; write it in upper case, e.g. `GET`"),
        );
    }
}

/// RFC 9110 token characters, which header names must be made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch))
}

/// Checks an HTTP header name.
pub(super) fn check_header_name(c: &mut Checker, path: FieldPath, name: &str) {
    if !is_token(name) {
        c.error(path, format!("`{name}` is not a valid HTTP header name"));
    }
}
