//! `hyphae describe KIND NAME`: one stored policy with its revision and canonical YAML, and how
//! it connects to the others: which services it names, which policies name its service, and
//! which other policies apply to the same service. Computed here from `GET /v1/policies`; the
//! control plane keeps no index of references.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use hyphae_policies::{Action, Completeness, Identity, Kind, LoadOptions, Policy, load_str};

use super::schema::parse_kind;
use super::table::columns;
use super::{Outcome, ReadArgs};
use crate::state::StoredPolicy;

/// Arguments of `hyphae describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The kind (`ServicePolicy`, `Route`, `AccessPolicy`, `ExternalService`).
    #[arg(value_parser = parse_kind)]
    pub kind: Kind,
    /// The name within the kind.
    pub name: String,
    /// Where to read from, and whether a stale read will do.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `hyphae describe`.
pub fn run(args: &DescribeArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    if args.kind.is_local_config() {
        bail!(
            "{} documents live on the node they configure, not in the control plane",
            args.kind
        );
    }
    let client = args.read.server.client()?;
    let answer = client.expect_ok("GET", &args.read.path("/v1/policies"), "")?;
    let stored: Vec<StoredPolicy> = serde_json::from_value(answer)
        .context("the control plane's list of policies is not in the expected form")?;
    let Some(index) = stored
        .iter()
        .position(|p| p.kind == args.kind.name() && p.name == args.name)
    else {
        bail!("no {} named `{}`", args.kind, args.name);
    };
    let mut this = None;
    let mut others = Vec::new();
    let mut unreadable = Vec::new();
    for (i, policy) in stored.iter().enumerate() {
        match parse(policy) {
            Some(parsed) if i == index => this = Some(parsed),
            Some(parsed) => others.push(parsed),
            None => unreadable.push(format!("{}/{}", policy.kind, policy.name)),
        }
    }
    let relations = this.as_ref().map(|p| relations(p, &others));
    out.write_all(render(&stored[index], relations.as_ref(), &unreadable).as_bytes())?;
    Ok(Outcome::Success)
}

/// A stored policy as an object, or `None` when this CLI cannot read it (a newer server).
fn parse(stored: &StoredPolicy) -> Option<Policy> {
    let options = LoadOptions {
        completeness: Completeness::Partial,
        ..LoadOptions::default()
    };
    let file = format!("{}/{}", stored.kind, stored.name);
    let report = load_str(&file, &stored.source, options);
    if report.has_errors() {
        return None;
    }
    report.objects.into_iter().next().map(|o| o.policy)
}

/// Where a policy names a service (or a caller that is not one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mention {
    /// The field, as `spec.rules[0].backends[1]`.
    field: String,
    /// The service named; `None` for a node or a wildcard caller.
    service: Option<String>,
    /// What the mention means, for people.
    what: String,
}

/// A service a policy names, and the stored policies that define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The field that names it.
    pub field: String,
    /// What the reference means.
    pub what: String,
    /// `Kind/name` of each `ServicePolicy` or `ExternalService` of that service.
    pub targets: Vec<String>,
}

/// Another policy that names this policy's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// `Kind/name` of the other policy.
    pub from: String,
    /// Its field that names the service.
    pub field: String,
    /// What the reference means.
    pub what: String,
}

/// How one policy connects to the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    /// The services it names.
    pub refers_to: Vec<Outgoing>,
    /// Policies that name the service it defines.
    pub referred_by: Vec<Incoming>,
    /// Other policies about the same service, not already listed above.
    pub same_service: Vec<String>,
}

/// `Kind/name`.
fn id(policy: &Policy) -> String {
    format!("{}/{}", policy.kind(), policy.name())
}

/// The service a policy is about.
fn subject(policy: &Policy) -> Option<&str> {
    match policy {
        Policy::ServicePolicy(o) => Some(&o.metadata.name),
        Policy::ExternalService(o) => Some(&o.metadata.name),
        Policy::Route(o) => Some(&o.spec.service),
        Policy::AccessPolicy(o) => Some(&o.spec.service),
        Policy::AgentConfig(_) | Policy::ControlPlaneConfig(_) => None,
    }
}

/// The service a policy stands for, which other policies refer to by name.
fn defines(policy: &Policy) -> Option<&str> {
    match policy {
        Policy::ServicePolicy(o) => Some(&o.metadata.name),
        Policy::ExternalService(o) => Some(&o.metadata.name),
        _ => None,
    }
}

fn subset_text(subset: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = subset.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Every place `policy` names a service or a caller.
fn mentions(policy: &Policy) -> Vec<Mention> {
    let mut found = Vec::new();
    match policy {
        Policy::Route(route) => {
            let service = &route.spec.service;
            found.push(Mention {
                field: "spec.service".into(),
                service: Some(service.clone()),
                what: format!("routes calls to {service}"),
            });
            for (r, rule) in route.spec.rules.iter().enumerate() {
                for (b, backend) in rule.backends.iter().enumerate() {
                    let mut what = format!("backend {}", backend.service);
                    if !backend.subset.is_empty() {
                        what.push_str(&format!(" [{}]", subset_text(&backend.subset)));
                    }
                    what.push_str(&format!(", weight {}", backend.weight));
                    found.push(Mention {
                        field: format!("spec.rules[{r}].backends[{b}]"),
                        service: Some(backend.service.clone()),
                        what,
                    });
                }
            }
        }
        Policy::AccessPolicy(access) => {
            let service = &access.spec.service;
            found.push(Mention {
                field: "spec.service".into(),
                service: Some(service.clone()),
                what: format!("who may call {service}"),
            });
            for (r, rule) in access.spec.rules.iter().enumerate() {
                let verb = match rule.action {
                    Action::Allow => "allows",
                    Action::Deny => "denies",
                };
                for (f, identity) in rule.from.iter().enumerate() {
                    let (named, what) = match identity {
                        Identity::Service(name) if name == "*" => {
                            (None, format!("{verb} any service"))
                        }
                        Identity::Service(name) => (Some(name.clone()), format!("{verb} {name}")),
                        Identity::Node(name) if name == "*" => (None, format!("{verb} any node")),
                        Identity::Node(name) => (None, format!("{verb} node {name}")),
                    };
                    found.push(Mention {
                        field: format!("spec.rules[{r}].from[{f}]"),
                        service: named,
                        what,
                    });
                }
            }
        }
        _ => {}
    }
    found
}

/// How `target` connects to `others` (every other stored policy).
pub fn relations(target: &Policy, others: &[Policy]) -> Relations {
    let mut relations = Relations::default();
    let mut listed: Vec<String> = Vec::new();
    for mention in mentions(target) {
        let Some(service) = &mention.service else {
            relations.refers_to.push(Outgoing {
                field: mention.field,
                what: mention.what,
                targets: Vec::new(),
            });
            continue;
        };
        let targets: Vec<String> = others
            .iter()
            .filter(|p| defines(p) == Some(service.as_str()))
            .map(id)
            .collect();
        listed.extend(targets.iter().cloned());
        relations.refers_to.push(Outgoing {
            field: mention.field,
            what: mention.what,
            targets,
        });
    }
    if let Some(service) = defines(target) {
        for other in others {
            for mention in mentions(other) {
                if mention.service.as_deref() == Some(service) {
                    listed.push(id(other));
                    relations.referred_by.push(Incoming {
                        from: id(other),
                        field: mention.field,
                        what: mention.what,
                    });
                }
            }
        }
    }
    if let Some(service) = subject(target) {
        relations.same_service = others
            .iter()
            .filter(|p| subject(p) == Some(service))
            .map(id)
            .filter(|other| !listed.contains(other))
            .collect();
    }
    relations
}

/// The text `hyphae describe` prints.
pub fn render(
    stored: &StoredPolicy,
    relations: Option<&Relations>,
    unreadable: &[String],
) -> String {
    let mut text = format!(
        "Kind:      {}\nName:      {}\nRevision:  {}\n",
        stored.kind, stored.name, stored.revision
    );
    let indent = |rows: Vec<Vec<String>>| -> String {
        if rows.is_empty() {
            return "  (none)\n".into();
        }
        columns(&rows)
            .into_iter()
            .map(|line| format!("  {line}\n"))
            .collect()
    };
    match relations {
        None => text.push_str("\nThis CLI cannot read the policy; references are not shown.\n"),
        Some(relations) => {
            let rows = relations
                .refers_to
                .iter()
                .map(|o| {
                    let targets = if o.targets.is_empty() {
                        "-".to_string()
                    } else {
                        o.targets.join(", ")
                    };
                    vec![o.field.clone(), o.what.clone(), targets]
                })
                .collect();
            text.push_str("\nRefers to:\n");
            text.push_str(&indent(rows));
            let rows = relations
                .referred_by
                .iter()
                .map(|i| vec![i.from.clone(), i.field.clone(), i.what.clone()])
                .collect();
            text.push_str("\nReferred to by:\n");
            text.push_str(&indent(rows));
            let rows = relations
                .same_service
                .iter()
                .map(|p| vec![p.clone()])
                .collect();
            text.push_str("\nOther policies of the same service:\n");
            text.push_str(&indent(rows));
        }
    }
    if !unreadable.is_empty() {
        text.push_str(&format!(
            "\nNot read by this CLI (newer than it?): {}\n",
            unreadable.join(", ")
        ));
    }
    text.push_str("\nCanonical YAML:\n---\n");
    text.push_str(&stored.source);
    if !stored.source.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> Vec<Policy> {
        let report = load_str(
            "test.yaml",
            yaml,
            LoadOptions {
                completeness: Completeness::Partial,
                ..LoadOptions::default()
            },
        );
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        report.objects.into_iter().map(|o| o.policy).collect()
    }

    const SET: &str = "\
kind: ServicePolicy
metadata: {name: catalog}
spec: {}
---
kind: ServicePolicy
metadata: {name: frontend}
spec: {}
---
kind: Route
metadata: {name: canary}
spec:
  service: catalog
  rules:
    - backends: [{service: catalog, subset: {version: v2}, weight: 10}, {service: legacy}]
---
kind: AccessPolicy
metadata: {name: catalog}
spec:
  service: catalog
  rules:
    - from: [{service: frontend}, {node: ops-1}]
";

    fn split(all: &[Policy], name: &str, kind: Kind) -> (Policy, Vec<Policy>) {
        let target = all
            .iter()
            .find(|p| p.kind() == kind && p.name() == name)
            .cloned()
            .expect("in the set");
        let others = all.iter().filter(|p| **p != target).cloned().collect();
        (target, others)
    }

    #[test]
    fn a_route_refers_to_its_service_and_backends_and_sits_beside_the_access_policy() {
        let all = policies(SET);
        let (route, others) = split(&all, "canary", Kind::Route);
        let relations = relations(&route, &others);
        let outgoing: Vec<_> = relations
            .refers_to
            .iter()
            .map(|o| (o.field.as_str(), o.what.as_str(), o.targets.clone()))
            .collect();
        assert_eq!(
            outgoing,
            [
                (
                    "spec.service",
                    "routes calls to catalog",
                    vec!["ServicePolicy/catalog".to_string()]
                ),
                (
                    "spec.rules[0].backends[0]",
                    "backend catalog [version=v2], weight 10",
                    vec!["ServicePolicy/catalog".to_string()]
                ),
                (
                    "spec.rules[0].backends[1]",
                    "backend legacy, weight 1",
                    vec![]
                ),
            ]
        );
        assert!(relations.referred_by.is_empty());
        assert_eq!(relations.same_service, ["AccessPolicy/catalog"]);
    }

    #[test]
    fn a_service_policy_is_referred_to_by_routes_access_policies_and_callers() {
        let all = policies(SET);
        let (catalog, others) = split(&all, "catalog", Kind::ServicePolicy);
        let incoming: Vec<_> = relations(&catalog, &others)
            .referred_by
            .into_iter()
            .map(|i| (i.from, i.field))
            .collect();
        assert_eq!(
            incoming,
            [
                ("Route/canary".to_string(), "spec.service".to_string()),
                (
                    "Route/canary".to_string(),
                    "spec.rules[0].backends[0]".to_string()
                ),
                (
                    "AccessPolicy/catalog".to_string(),
                    "spec.service".to_string()
                ),
            ]
        );
        let (frontend, others) = split(&all, "frontend", Kind::ServicePolicy);
        let relations = relations(&frontend, &others);
        assert_eq!(relations.referred_by.len(), 1);
        assert_eq!(relations.referred_by[0].what, "allows frontend");
        assert!(relations.same_service.is_empty());
    }

    #[test]
    fn the_text_shows_revision_sections_and_the_yaml() {
        let all = policies(SET);
        let (access, others) = split(&all, "catalog", Kind::AccessPolicy);
        let stored = StoredPolicy {
            kind: "AccessPolicy".into(),
            name: "catalog".into(),
            source: "kind: AccessPolicy\n".into(),
            revision: 7,
        };
        let text = render(&stored, Some(&relations(&access, &others)), &[]);
        assert!(text.starts_with("Kind:      AccessPolicy\nName:      catalog\nRevision:  7\n"));
        assert!(
            text.contains("  spec.rules[0].from[1]  allows node ops-1     -\n"),
            "{text}"
        );
        assert!(text.contains("Referred to by:\n  (none)\n"), "{text}");
        assert!(
            text.contains("Other policies of the same service:\n  Route/canary\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Canonical YAML:\n---\nkind: AccessPolicy\n"),
            "{text}"
        );
    }
}
