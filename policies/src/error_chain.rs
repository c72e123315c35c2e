//! An error and every cause in its `source()` chain, on one line: how logs and API messages
//! show a failure without losing why it happened. Formatting only; it never decides anything.

use std::error::Error;
use std::fmt;

/// Shows an error followed by each of its causes, `outer: cause: root cause`. Use it at the
/// logging edge (`error = %ErrorChain(&error)`), so errors can keep their causes as `source()`
/// instead of flattening them into strings where they happen.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An error and its causes on one line, for logs and API messages that need a `String`.
pub fn error_chain(error: &dyn Error) -> String {
    ErrorChain(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the file")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_follows_the_error_on_one_line() {
        let error = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&error), "cannot load the file: disk on fire");
        assert_eq!(
            format!("{}", ErrorChain(&std::io::Error::other("alone"))),
            "alone"
        );
    }
}
