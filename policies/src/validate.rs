//! Semantic rules types cannot state: the checks across a set here, each kind's own in a child
//! module named for the kind. Pure functions from objects to issues; locating them is the loader's.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{FieldPath, Issue};
use crate::suggest;
use crate::{Duration, Identity, Kind, Policy};

mod access_policy;
mod agent_config;
mod control_plane_config;
mod external_service;
mod host;
mod http;
mod retries;
mod route;
mod service_policy;

pub use agent_config::MIN_HEADER_BYTES;
pub use control_plane_config::PEER_ENVELOPE_BYTES;
pub use retries::{MAX_RETRY_FLOOR_PER_SECOND, RETRY_BUDGET_WINDOW};
pub use route::MAX_REGEX_BYTES;

/// Longest name (`metadata.name`, service names, sites), as for a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Whether the set being validated is everything there is. In a complete set a reference to
/// an unknown service is an error; in a partial one (a single file applied on top of others)
/// it is a warning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Completeness {
    /// Other objects may exist elsewhere.
    #[default]
    Partial,
    /// This set is the whole configuration.
    Complete,
}

/// Collects the issues of one object, with the checks every kind uses for its fields.
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.issues.push(Issue::error(path, message));
    }

    fn warning(&mut self, path: FieldPath, message: impl Into<String>) {
        self.issues.push(Issue::warning(path, message));
    }

    fn name(&mut self, path: FieldPath, name: &str) {
        if let Err(reason) = check_name(name) {
            self.error(path, reason);
        }
    }

    /// A valid name that no earlier entry of the same list (`seen`) took; `what` names the
    /// entries in the message (`service`, `static service`).
    fn unique_name<'a>(
        &mut self,
        path: FieldPath,
        name: &'a str,
        seen: &mut BTreeSet<&'a str>,
        what: &str,
    ) {
        self.name(path.clone(), name);
        if !seen.insert(name) {
            self.error(path, format!("{what} `{name}` is listed twice"));
        }
    }

    fn positive(&mut self, path: FieldPath, value: Duration) {
        if value.get().is_zero() {
            self.error(path, "must be longer than 0s");
        }
    }

    /// `value` no longer than `limit`: each comes with the words the message names it by
    /// (`("timeout", 5s)`, `("the interval", 2s)`).
    fn not_longer(
        &mut self,
        path: FieldPath,
        (what, value): (&str, Duration),
        (limit_name, limit): (&str, Duration),
    ) {
        if value > limit {
            self.error(
                path,
                format!("{what} {value} is longer than {limit_name} {limit}"),
            );
        }
    }

    fn at_least_one(&mut self, path: FieldPath, value: impl Into<u64>) {
        if value.into() == 0 {
            self.error(path, "must be at least 1");
        }
    }

    /// A limit on request heads: below [`MIN_HEADER_BYTES`] no ordinary request fits.
    fn header_bytes(&mut self, path: FieldPath, value: u32) {
        if value < MIN_HEADER_BYTES {
            self.error(
                path,
                format!("must be at least {MIN_HEADER_BYTES}, got {value}"),
            );
        }
    }

    fn share(&mut self, path: FieldPath, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.error(path, format!("must be between 0 and 1, got {value}"));
        }
    }

    /// A TCP port a listener or endpoint can use: 0 is refused. Returns whether it passed.
    fn port(&mut self, path: FieldPath, port: u16) -> bool {
        if port == 0 {
            self.error(path, "port must be between 1 and 65535");
        }
        port != 0
    }

    /// A URL path, which starts with `/`.
    fn absolute_path(&mut self, path: FieldPath, url_path: &str) {
        if !url_path.starts_with('/') {
            self.error(path, format!("path `{url_path}` must start with `/`"));
        }
    }
}

/// Checks a name against the DNS-label rule every hyphae name follows.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}` is {} characters long; names have at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "`{name}` is not a valid name: use lower-case letters, digits and `-`, \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Every problem with one object on its own.
pub fn check_object(policy: &Policy) -> Vec<Issue> {
    let mut c = Checker { issues: Vec::new() };
    let root = FieldPath::root();
    c.name(root.key("metadata").key("name"), policy.name());
    let spec = root.key("spec");
    match policy {
        Policy::ServicePolicy(o) => service_policy::check(&mut c, &spec, &o.spec),
        Policy::Route(o) => route::check(&mut c, &spec, &o.spec),
        Policy::AccessPolicy(o) => access_policy::check(&mut c, &spec, &o.spec),
        Policy::ExternalService(o) => external_service::check(&mut c, &spec, &o.spec),
        Policy::AgentConfig(o) => agent_config::check(&mut c, &spec, &o.spec),
        Policy::ControlPlaneConfig(o) => control_plane_config::check(&mut c, &spec, &o.spec),
    }
    c.issues
}
/// An object in a set, with the index the caller uses to locate its issues.
pub struct SetMember<'a> {
    /// The object.
    pub policy: &'a Policy,
    /// Where it was defined, for "first defined at" messages.
    pub origin: String,
}

/// Problems between objects of a set: duplicates, conflicts and references to unknown services.
/// Each issue comes with the index of the object it belongs to. `rejected` are objects that
/// failed their own checks: they are not checked here, but the services they define count as
/// defined, so an error in a `ServicePolicy` is not also reported at every reference to it.
pub fn check_set(
    members: &[SetMember<'_>],
    rejected: &[&Policy],
    completeness: Completeness,
) -> Vec<(usize, Issue)> {
    let mut issues = Vec::new();
    let name_path = FieldPath::root().key("metadata").key("name");
    let service_path = FieldPath::root().key("spec").key("service");

    let mut first_by_name: BTreeMap<(Kind, &str), usize> = BTreeMap::new();
    let mut first_by_service: BTreeMap<(Kind, &str), usize> = BTreeMap::new();
    for (i, member) in members.iter().enumerate() {
        let policy = member.policy;
        if let Some(&first) = first_by_name.get(&(policy.kind(), policy.name())) {
            issues.push((
                i,
                Issue::error(
                    name_path.clone(),
                    format!(
                        "duplicate {} `{}`: first defined at {}",
                        policy.kind(),
                        policy.name(),
                        members[first].origin
                    ),
                ),
            ));
        } else {
            first_by_name.insert((policy.kind(), policy.name()), i);
        }
        let governed = match policy {
            Policy::Route(o) => Some(o.spec.service.as_str()),
            Policy::AccessPolicy(o) => Some(o.spec.service.as_str()),
            _ => None,
        };
        if let Some(service) = governed {
            if let Some(&first) = first_by_service.get(&(policy.kind(), service)) {
                issues.push((
                    i,
                    Issue::error(
                        service_path.clone(),
                        format!(
                            "service `{service}` already has {} `{}` (at {}); put all its rules in one",
                            policy.kind(),
                            members[first].policy.name(),
                            members[first].origin
                        ),
                    ),
                ));
            } else {
                first_by_service.insert((policy.kind(), service), i);
            }
        }
    }

    let known = known_services(
        members
            .iter()
            .map(|m| m.policy)
            .chain(rejected.iter().copied()),
    );
    let known_list: Vec<&str> = known.iter().copied().collect();
    for (i, member) in members.iter().enumerate() {
        for (path, service) in service_references(member.policy) {
            if known.contains(service) {
                continue;
            }
            let message = format!("service `{service}` is not defined by any object in this set");
            let issue = match completeness {
                Completeness::Complete => Issue::error(path, message),
                Completeness::Partial => Issue::warning(path, message),
            };
            let issue = match suggest::closest(service, &known_list) {
                Some(close) => issue.with_help(format!("did you mean `{close}`?")),
                None => issue,
            };
            issues.push((i, issue));
        }
    }
    issues
}

/// Services the objects define.
fn known_services<'a>(policies: impl Iterator<Item = &'a Policy>) -> BTreeSet<&'a str> {
    let mut known = BTreeSet::new();
    for policy in policies {
        match policy {
            Policy::ServicePolicy(o) => {
                known.insert(o.metadata.name.as_str());
            }
            Policy::ExternalService(o) => {
                known.insert(o.metadata.name.as_str());
            }
            Policy::AgentConfig(o) => {
                known.extend(o.spec.services.iter().map(|s| s.name.as_str()));
                known.extend(o.spec.static_services.iter().map(|s| s.name.as_str()));
            }
            Policy::Route(_) | Policy::AccessPolicy(_) | Policy::ControlPlaneConfig(_) => {}
        }
    }
    known
}

/// Every service name an object refers to, with the field that names it.
fn service_references(policy: &Policy) -> Vec<(FieldPath, &str)> {
    let spec = FieldPath::root().key("spec");
    let mut refs = Vec::new();
    match policy {
        Policy::Route(o) => {
            refs.push((spec.key("service"), o.spec.service.as_str()));
            for (r, rule) in o.spec.rules.iter().enumerate() {
                for (b, backend) in rule.backends.iter().enumerate() {
                    let path = spec
                        .key("rules")
                        .index(r)
                        .key("backends")
                        .index(b)
                        .key("service");
                    refs.push((path, backend.service.as_str()));
                }
            }
        }
        Policy::AccessPolicy(o) => {
            if o.spec.service != crate::access_policy::MESH_WIDE {
                refs.push((spec.key("service"), o.spec.service.as_str()));
            }
            for (r, rule) in o.spec.rules.iter().enumerate() {
                for (f, identity) in rule.from.iter().enumerate() {
                    if let Identity::Service(name) = identity
                        && name != "*"
                    {
                        let path = spec
                            .key("rules")
                            .index(r)
                            .key("from")
                            .index(f)
                            .key("service");
                        refs.push((path, name.as_str()));
                    }
                }
            }
        }
        Policy::AgentConfig(o) => {
            for (u, upstream) in o.spec.upstreams.iter().enumerate() {
                let service = upstream.service.as_str();
                refs.push((
                    spec.key("upstreams").index(u).key("service"),
                    service.split_once(':').map_or(service, |(name, _)| name),
                ));
            }
        }
        Policy::ServicePolicy(_) | Policy::ExternalService(_) | Policy::ControlPlaneConfig(_) => {}
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(check_name("payments-v2").is_ok());
        for bad in ["", "Payments", "-x", "x-", "a_b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
