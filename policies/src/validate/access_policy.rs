//! An `AccessPolicy` on its own: each rule's caller identities, path prefixes and methods.

use super::Checker;
use super::http::check_method;
use crate::access_policy::MESH_WIDE;
use crate::diagnostic::FieldPath;
use crate::{AccessPolicySpec, Identity};

/// Checks an `AccessPolicy`'s spec.
pub(super) fn check(c: &mut Checker, path: &FieldPath, spec: &AccessPolicySpec) {
    // `*`: the mesh-wide default, for every service without a policy of its own.
    if spec.service != MESH_WIDE {
        c.name(path.key("service"), &spec.service);
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let rule_path = path.key("rules").index(i);
        if rule.from.is_empty() {
            c.error(
                rule_path.key("from"),
                "a rule needs at least one caller identity in `from`",
            );
        }
        for (f, identity) in rule.from.iter().enumerate() {
            let (key, name) = match identity {
                Identity::Service(name) => ("service", name),
                Identity::Node(name) => ("node", name),
            };
            if name != "*" {
                c.name(rule_path.key("from").index(f).key(key), name);
            }
        }
        for (p, prefix) in rule.paths.iter().enumerate() {
            c.absolute_path(rule_path.key("paths").index(p), prefix);
        }
        for (m, method) in rule.methods.iter().enumerate() {
            check_method(c, rule_path.key("methods").index(m), method);
        }
    }
}
