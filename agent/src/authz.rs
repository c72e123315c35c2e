//! Inbound authorization: who called (the identities in the peer agent's certificate), and
//! whether a service's `AccessPolicy` admits that caller for this method and path. Pure: the
//! inbound listener asks, and answers a refusal with 403 `hyphae-error: denied`.
//!
//! A host agent carries the calls of every service on its host, so its certificate names its
//! node and each service it hosts: a rule `from: [{service: frontend}]` admits calls from any
//! node that hosts `frontend`, the granularity a host-level mesh can prove.

use hyphae_policies::access_policy::{AccessPolicySpec, Action, Identity};
use hyphae_policies::tls::{Kind, SpiffeId};

/// The caller of an inbound request, as its certificate proved it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Its node.
    pub node: Option<String>,
    /// The services its node hosts.
    pub services: Vec<String>,
}

impl Caller {
    /// The caller `ids` (from its certificate) name, keeping only those of `trust_domain`.
    pub fn from_ids(ids: Vec<SpiffeId>, trust_domain: Option<&str>) -> Caller {
        let mut caller = Caller::default();
        for id in ids {
            if trust_domain.is_some_and(|domain| id.trust_domain != domain) {
                continue;
            }
            match id.kind {
                Kind::Node if caller.node.is_none() => caller.node = Some(id.name),
                Kind::Service => caller.services.push(id.name),
                _ => {}
            }
        }
        caller
    }

    /// Its name for logs and metrics: the node, or `unknown`.
    pub fn name(&self) -> &str {
        self.node.as_deref().unwrap_or("unknown")
    }

    fn is(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Node(name) => {
                self.node.is_some() && (name == "*" || self.node.as_deref() == Some(name))
            }
            Identity::Service(name) => {
                if name == "*" {
                    !self.services.is_empty()
                } else {
                    self.services.iter().any(|service| service == name)
                }
            }
        }
    }
}

/// What a request is, for the rules: its method and path, when it has them (an opaque TCP
/// stream has neither, so only rules without paths and methods cover it).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method.
    pub method: Option<&'a str>,
    /// The path.
    pub path: Option<&'a str>,
}

/// Whether `policy` admits `caller` for `request`: the first rule whose callers, paths and
/// methods all match decides; none matching, the policy's default. The caller passes the
/// service's own policy, else the mesh-wide one (`service: "*"`); with neither, every caller
/// of the mesh is admitted (they all proved a node certificate of its trust domain).
pub fn admits(policy: Option<&AccessPolicySpec>, caller: &Caller, request: Request<'_>) -> bool {
    let Some(policy) = policy else {
        return true;
    };
    let decided = policy
        .rules
        .iter()
        .find(|rule| {
            // An opaque stream has no path or method to check: a rule that names them covers
            // it only when it denies (what flows inside could be any path).
            let opaque = rule.action == Action::Deny;
            rule.from.iter().any(|identity| caller.is(identity))
                && (rule.paths.is_empty()
                    || request.path.map_or(opaque, |path| {
                        rule.paths.iter().any(|prefix| under(path, prefix))
                    }))
                && (rule.methods.is_empty()
                    || request.method.map_or(opaque, |method| {
                        rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
                    }))
        })
        .map_or(policy.default_action, |rule| rule.action);
    decided == Action::Allow
}

/// Whether `path` is `prefix` or below it, on a segment boundary: `/charge` covers `/charge`,
/// `/charge/42` and `/charge;v=2` (Tomcat, Jetty and Spring drop a segment's `;` parameters
/// before routing), not `/chargeback` (a prefix ending in `/` covers what follows it).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| {
        rest.is_empty() || rest.starts_with(['/', '?', ';']) || prefix.ends_with('/')
    })
}

/// Whether a request path is in the one form rules are matched against: absolute, ASCII, no
/// empty, `.` or `..` segments once a segment's `;` parameters are cut off (`/a/..;/b` is
/// `/b` to Tomcat), a trailing `/` being fine, and no encoded `/`, `.`, `\` or `%` that a
/// server could decode into another path than the one checked. Anything else is refused
/// before it is checked. Encoded letters, digits, `-`, `_` and `~` are fine: rules are matched
/// on the path with them decoded ([`unreserved_decoded`]), as a server reads it.
pub fn canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if !path.is_ascii() || path.contains('\\') {
        return false;
    }
    let bytes = path.as_bytes();
    let decodes_to_another_path = bytes.iter().enumerate().any(|(at, &byte)| {
        byte == b'%'
            && matches!(
                percent_decoded(&bytes[at + 1..]),
                Some(b'/' | b'.' | b'\\' | b'%')
            )
    });
    if decodes_to_another_path {
        return false;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, segment)| {
        let segment = segment.split(';').next().unwrap_or_default();
        segment != "." && segment != ".." && (!segment.is_empty() || i == last)
    })
}

/// `path` with every encoded letter, digit, `-`, `_` and `~` decoded (RFC 3986 §6.2.2.2: a URI
/// that encodes them is the same URI), so `/www/%73ecret` meets a rule for `/www/secret` as
/// the server will read it. Borrowed when there is nothing to decode. For a path [`canonical`]
/// took, which is ASCII.
pub fn unreserved_decoded(path: &str) -> std::borrow::Cow<'_, str> {
    let unreserved = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~');
    let bytes = path.as_bytes();
    let decoded_at = |at: usize| {
        Some(bytes[at])
            .filter(|&b| b == b'%')
            .and_then(|_| percent_decoded(&bytes[at + 1..]))
            .filter(|&b| unreserved(b))
    };
    let Some(first) = (0..bytes.len()).find(|&at| decoded_at(at).is_some()) else {
        return std::borrow::Cow::Borrowed(path);
    };
    let mut decoded = String::with_capacity(path.len());
    decoded.push_str(&path[..first]);
    let mut at = first;
    while at < bytes.len() {
        match decoded_at(at) {
            Some(byte) => {
                decoded.push(char::from(byte));
                at += 3;
            }
            None => {
                decoded.push(char::from(bytes[at]));
                at += 1;
            }
        }
    }
    std::borrow::Cow::Owned(decoded)
}

/// The byte two hex digits at the start of `after` (what follows a `%`) encode.
fn percent_decoded(after: &[u8]) -> Option<u8> {
    match after {
        [high, low, ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
            let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
            Some(digit(*high)? * 16 + digit(*low)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyphae_policies::access_policy::AccessRule;

    fn payments() -> AccessPolicySpec {
        AccessPolicySpec {
            service: "payments".into(),
            default_action: Action::Deny,
            rules: vec![
                AccessRule {
                    action: Action::Allow,
                    from: vec![Identity::Service("catalog".into())],
                    paths: vec!["/charge".into()],
                    methods: vec!["POST".into()],
                },
                AccessRule {
                    action: Action::Deny,
                    from: vec![Identity::Node("ops-1".into())],
                    paths: vec!["/reports/secret".into()],
                    methods: vec![],
                },
                AccessRule {
                    action: Action::Allow,
                    from: vec![Identity::Node("ops-1".into())],
                    paths: vec!["/reports".into()],
                    methods: vec![],
                },
            ],
        }
    }

    fn caller(node: &str, services: &[&str]) -> Caller {
        Caller {
            node: Some(node.into()),
            services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn http<'a>(method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            method: Some(method),
            path: Some(path),
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_default_covers_the_rest() {
        let policy = payments();
        let catalog = caller("app-1", &["catalog"]);
        assert!(admits(Some(&policy), &catalog, http("post", "/charge/42")));
        assert!(!admits(Some(&policy), &catalog, http("GET", "/charge/42")));
        assert!(!admits(Some(&policy), &catalog, http("POST", "/refund")));
        let ops = caller("ops-1", &[]);
        assert!(admits(Some(&policy), &ops, http("GET", "/reports/daily")));
        assert!(!admits(Some(&policy), &ops, http("GET", "/reports/secret")));
        let stranger = caller("web-1", &["frontend"]);
        assert!(!admits(Some(&policy), &stranger, http("POST", "/charge")));
        let tcp = Request {
            method: None,
            path: None,
        };
        assert!(
            !admits(Some(&policy), &catalog, tcp),
            "no path: a path rule does not cover it"
        );
    }

    #[test]
    fn prefixes_end_on_segments_and_opaque_streams_meet_deny_rules() {
        let policy = payments();
        let catalog = caller("app-1", &["catalog"]);
        assert!(!admits(
            Some(&policy),
            &catalog,
            http("POST", "/chargeback")
        ));
        assert!(admits(Some(&policy), &catalog, http("POST", "/charge")));
        let ops = caller("ops-1", &[]);
        let opaque = Request {
            method: None,
            path: None,
        };
        assert!(
            !admits(Some(&policy), &ops, opaque),
            "a deny rule with paths covers an opaque stream"
        );
        for good in [
            "/",
            "/a",
            "/a/b/",
            "/a/b?x=1",
            "/a%20b",
            "/a%3Fb",
            "/a%zz",
            "/50%",
            "/users/john%2Ddoe",
            "/www/%73ecret",
            "/a;v=2/b",
        ] {
            assert!(canonical(good), "{good}");
        }
        for bad in [
            "a",
            "//a",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/ä",
            "/a\\b",
            "/a%252e",
            "/public/..;/admin",
            "/a/.;x/b",
            "/a/;x/b",
        ] {
            assert!(!canonical(bad), "{bad}");
        }
    }

    #[test]
    fn rules_meet_paths_as_servers_read_them() {
        assert_eq!(unreserved_decoded("/www/%73ecret/"), "/www/secret/");
        assert_eq!(unreserved_decoded("/%77ww/secre%74"), "/www/secret");
        assert_eq!(unreserved_decoded("/john%2ddoe%7E"), "/john-doe~");
        // Reserved and other characters stay encoded; nothing to decode borrows.
        assert_eq!(
            unreserved_decoded("/a%2Fb%20c%3F%zz%4"),
            "/a%2Fb%20c%3F%zz%4"
        );
        assert!(matches!(
            unreserved_decoded("/plain"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(under("/admin;jsessionid=1", "/admin"));
        assert!(under("/admin;x/y", "/admin"));
        assert!(!under("/adminx", "/admin"));
    }

    #[test]
    fn without_a_policy_every_caller_of_the_mesh_is_admitted_and_wildcards_match_any() {
        let anyone = caller("web-1", &[]);
        assert!(admits(None, &anyone, http("DELETE", "/")));
        let mut open = payments();
        open.rules = vec![AccessRule {
            action: Action::Allow,
            from: vec![Identity::Service("*".into())],
            paths: vec![],
            methods: vec![],
        }];
        assert!(
            !admits(Some(&open), &anyone, http("GET", "/")),
            "hosts no service"
        );
        assert!(admits(Some(&open), &caller("x", &["a"]), http("GET", "/")));
    }

    #[test]
    fn only_identities_of_the_trust_domain_count() {
        let ids = vec![
            SpiffeId::new("other.org", Kind::Node, "evil"),
            SpiffeId::new("mesh.local", Kind::Node, "web-1"),
            SpiffeId::new("mesh.local", Kind::Service, "frontend"),
            SpiffeId::new("other.org", Kind::Service, "catalog"),
        ];
        assert_eq!(
            Caller::from_ids(ids, Some("mesh.local")),
            caller("web-1", &["frontend"])
        );
    }
}
