//! Route matching: which rule of a service's `Route` a request takes, and which weighted
//! backend it goes to. Pure functions over the request head; the dice are passed in.

use std::collections::{BTreeMap, HashMap};

use http::request::Parts;
use hyphae_policies::{HeaderMatch, HttpMatch, PathMatch, RouteRule, RouteSpec};
use regex::Regex;
use serde::Serialize;

/// A route with its regular expressions compiled once, when the snapshot is built.
#[derive(Debug, Serialize)]
pub struct CompiledRoute {
    /// The Route's `metadata.name`, for metrics.
    pub name: String,
    /// The route as written.
    pub spec: RouteSpec,
    #[serde(skip)]
    regexes: HashMap<String, Regex>,
}

impl CompiledRoute {
    /// Compiles every pattern of `spec`, anchored to match whole values. Patterns were
    /// validated when the policy was loaded; one that still fails matches nothing.
    pub fn new(name: &str, spec: RouteSpec) -> Self {
        let mut regexes = HashMap::new();
        let patterns = spec
            .rules
            .iter()
            .flat_map(|rule| &rule.matches)
            .flat_map(|m| {
                let path = match &m.path {
                    Some(PathMatch::Regex(p)) => Some(p.clone()),
                    _ => None,
                };
                path.into_iter()
                    .chain(m.headers.iter().filter_map(|h| h.regex.clone()))
            });
        for pattern in patterns {
            if let Ok(re) = Regex::new(&format!("^(?:{pattern})$")) {
                regexes.insert(pattern, re);
            }
        }
        CompiledRoute {
            name: name.to_string(),
            spec,
            regexes,
        }
    }

    fn whole_match(&self, pattern: &str, text: &str) -> bool {
        self.regexes
            .get(pattern)
            .is_some_and(|re| re.is_match(text))
    }
}

/// Where a request goes: a service and, optionally, a subset of its instances by tags.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination<'a> {
    /// Service name.
    pub service: &'a str,
    /// Tags every chosen instance must carry.
    pub subset: Option<&'a BTreeMap<String, String>>,
    /// The rule that matched, for per-rule timeouts, retries and header rewrites.
    pub rule: Option<&'a RouteRule>,
}

/// Chooses the destination for a request to `service`. Without a route, the service itself.
/// With a route, the first matching rule decides; `None` when no rule matches.
pub fn choose<'a>(
    service: &'a str,
    route: Option<&'a CompiledRoute>,
    head: &Parts,
    dice: &mut dyn FnMut(u64) -> u64,
) -> Option<Destination<'a>> {
    let Some(compiled) = route else {
        return Some(Destination {
            service,
            subset: None,
            rule: None,
        });
    };
    let rule = compiled.spec.rules.iter().find(|rule| {
        rule.matches.is_empty() || rule.matches.iter().any(|m| matches(compiled, m, head))
    })?;
    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = dice(total);
    for backend in &rule.backends {
        let weight = u64::from(backend.weight);
        if point < weight {
            return Some(Destination {
                service: &backend.service,
                subset: (!backend.subset.is_empty()).then_some(&backend.subset),
                rule: Some(rule),
            });
        }
        point -= weight;
    }
    None
}

/// True when every condition of `m` holds for the request.
fn matches(route: &CompiledRoute, m: &HttpMatch, head: &Parts) -> bool {
    if let Some(host) = &m.host {
        let authority = head
            .uri
            .authority()
            .map(|a| a.host().to_string())
            .or_else(|| {
                head.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.split(':').next().unwrap_or(h).to_string())
            });
        if !authority.is_some_and(|a| a.eq_ignore_ascii_case(host)) {
            return false;
        }
    }
    if let Some(method) = &m.method
        && head.method.as_str() != method
    {
        return false;
    }
    if let Some(path) = &m.path
        && !path_matches(route, path, head.uri.path())
    {
        return false;
    }
    m.headers.iter().all(|h| header_matches(route, h, head))
}

fn path_matches(route: &CompiledRoute, rule: &PathMatch, path: &str) -> bool {
    match rule {
        PathMatch::Exact(exact) => path == exact,
        PathMatch::Prefix(prefix) => {
            let prefix = prefix.trim_end_matches('/');
            prefix.is_empty()
                || path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        PathMatch::Regex(pattern) => route.whole_match(pattern, path),
    }
}

fn header_matches(route: &CompiledRoute, rule: &HeaderMatch, head: &Parts) -> bool {
    let mut values = head.headers.get_all(rule.name.as_str()).iter();
    values.any(|value| {
        let Ok(value) = value.to_str() else {
            return false;
        };
        match (&rule.exact, &rule.prefix, &rule.regex) {
            (Some(exact), _, _) => value == exact,
            (_, Some(prefix), _) => value.starts_with(prefix.as_str()),
            (_, _, Some(pattern)) => route.whole_match(pattern, value),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyphae_policies::Backend;

    fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn backend(service: &str, version: &str, weight: u32) -> Backend {
        Backend {
            service: service.into(),
            subset: [("version".to_string(), version.to_string())].into(),
            weight,
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let regex = PathMatch::Regex("/r/[0-9]+".into());
        let route = CompiledRoute::new(
            "r",
            RouteSpec {
                service: "s".into(),
                rules: vec![RouteRule {
                    matches: vec![HttpMatch {
                        path: Some(regex.clone()),
                        ..HttpMatch::default()
                    }],
                    ..RouteRule::default()
                }],
            },
        );
        let prefix = PathMatch::Prefix("/api".into());
        assert!(path_matches(&route, &prefix, "/api"));
        assert!(path_matches(&route, &prefix, "/api/x"));
        assert!(!path_matches(&route, &prefix, "/apix"));
        assert!(path_matches(&route, &regex, "/r/12"));
        assert!(!path_matches(&route, &regex, "/r/12/x"));
    }

    #[test]
    fn first_matching_rule_wins_and_weights_split() {
        let route = CompiledRoute::new(
            "r",
            RouteSpec {
                service: "catalog".into(),
                rules: vec![
                    RouteRule {
                        matches: vec![HttpMatch {
                            headers: vec![HeaderMatch {
                                name: "x-canary".into(),
                                exact: Some("always".into()),
                                ..HeaderMatch::default()
                            }],
                            ..HttpMatch::default()
                        }],
                        backends: vec![backend("catalog", "v2", 1)],
                        ..RouteRule::default()
                    },
                    RouteRule {
                        backends: vec![backend("catalog", "v1", 90), backend("catalog", "v2", 10)],
                        ..RouteRule::default()
                    },
                ],
            },
        );
        let canary = head("GET", "/", &[("x-canary", "always")]);
        let d = choose("catalog", Some(&route), &canary, &mut |_| 0).unwrap();
        assert_eq!(d.subset.unwrap()["version"], "v2");
        let plain = head("GET", "/", &[]);
        let mut counts = BTreeMap::new();
        for point in 0..100 {
            let d = choose("catalog", Some(&route), &plain, &mut |_| point).unwrap();
            *counts
                .entry(d.subset.unwrap()["version"].clone())
                .or_insert(0) += 1;
        }
        assert_eq!(counts["v1"], 90);
        assert_eq!(counts["v2"], 10);
    }
}
