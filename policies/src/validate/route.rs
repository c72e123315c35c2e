//! A `Route` on its own: its rules' matches (hosts, paths, methods, headers, regexes), backends,
//! header rewrites, timeouts and retries.

use super::host::check_host;
use super::http::{check_header_name, check_method};
use super::{Checker, retries};
use crate::diagnostic::FieldPath;
use crate::{HeaderRewrite, HttpMatch, PathMatch, RouteSpec};

/// Largest compiled size of a route regex; bigger patterns are refused.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// Checks a `Route`'s spec.
pub(super) fn check(c: &mut Checker, path: &FieldPath, spec: &RouteSpec) {
    c.name(path.key("service"), &spec.service);
    if spec.rules.is_empty() {
        c.error(path.key("rules"), "a route needs at least one rule");
    }
    let mut catch_all: Option<usize> = None;
    for (i, rule) in spec.rules.iter().enumerate() {
        let rule_path = path.key("rules").index(i);
        if let Some(first) = catch_all {
            c.warning(
                rule_path.clone(),
                format!("rule is never used: rule {first} above it matches every request"),
            );
        }
        if rule.matches.is_empty() && catch_all.is_none() {
            catch_all = Some(i);
        }
        for (m, matcher) in rule.matches.iter().enumerate() {
            check_match(c, &rule_path.key("matches").index(m), matcher);
        }
        if rule.backends.is_empty() {
            c.error(
                rule_path.key("backends"),
                "a rule needs at least one backend",
            );
        } else if rule.backends.iter().all(|b| b.weight == 0) {
            c.error(
                rule_path.key("backends"),
                "every backend has weight 0, so no request could be sent",
            );
        }
        for (b, backend) in rule.backends.iter().enumerate() {
            c.name(
                rule_path.key("backends").index(b).key("service"),
                &backend.service,
            );
        }
        for (which, rewrite) in [
            ("requestHeaders", &rule.request_headers),
            ("responseHeaders", &rule.response_headers),
        ] {
            check_rewrite(c, &rule_path.key(which), rewrite);
        }
        let mut request_timeout = None;
        if let Some(timeouts) = &rule.timeouts {
            if let Some(request) = timeouts.request {
                c.positive(rule_path.key("timeouts").key("request"), request);
                request_timeout = Some(request);
            }
            if let Some(idle) = timeouts.idle {
                c.positive(rule_path.key("timeouts").key("idle"), idle);
            }
        }
        if let Some(retries) = &rule.retries {
            retries::check(c, &rule_path.key("retries"), retries, request_timeout);
        }
    }
}

/// Checks one match of a rule: host, path, method and headers.
fn check_match(c: &mut Checker, match_path: &FieldPath, matcher: &HttpMatch) {
    if let Some(host) = &matcher.host {
        check_host(c, match_path.key("host"), host);
    }
    if let Some(path_match) = &matcher.path {
        check_path_match(c, &match_path.key("path"), path_match);
    }
    if let Some(method) = &matcher.method {
        check_method(c, match_path.key("method"), method);
    }
    for (h, header) in matcher.headers.iter().enumerate() {
        let header_path = match_path.key("headers").index(h);
        check_header_name(c, header_path.key("name"), &header.name);
        let set = [&header.exact, &header.prefix, &header.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            c.error(
                header_path.clone(),
                "set at most one of `exact`, `prefix`, `regex`",
            );
        }
        if let Some(regex) = &header.regex {
            check_regex(c, header_path.key("regex"), regex);
        }
    }
}

/// Checks the header names a rewrite sets, adds and removes.
fn check_rewrite(c: &mut Checker, path: &FieldPath, rewrite: &HeaderRewrite) {
    for (list, names) in [("set", &rewrite.set), ("add", &rewrite.add)] {
        for name in names.keys() {
            check_header_name(c, path.key(list).key(name), name);
        }
    }
    for (r, name) in rewrite.remove.iter().enumerate() {
        check_header_name(c, path.key("remove").index(r), name);
    }
}

/// Checks a path match: exact and prefix paths start with `/`, regexes compile.
fn check_path_match(c: &mut Checker, path: &FieldPath, path_match: &PathMatch) {
    match path_match {
        PathMatch::Exact(p) => c.absolute_path(path.key("exact"), p),
        PathMatch::Prefix(p) => c.absolute_path(path.key("prefix"), p),
        PathMatch::Regex(r) => check_regex(c, path.key("regex"), r),
    }
}

/// Checks that `pattern` compiles within [`MAX_REGEX_BYTES`].
fn check_regex(c: &mut Checker, path: FieldPath, pattern: &str) {
    if let Err(error) = regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
    {
        let reason = match error {
            regex::Error::CompiledTooBig(limit) => {
                format!("regular expression is too large (compiled size over {limit} bytes)")
            }
            other => {
                let detail = other.to_string();
                // The last line is "error: <what>"; the lines above repeat the pattern.
                let last = detail.lines().last().unwrap_or("").trim();
                let what = last.strip_prefix("error:").unwrap_or(last).trim();
                format!("invalid regular expression: {what}")
            }
        };
        c.error(path, reason);
    }
}
