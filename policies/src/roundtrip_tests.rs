//! Property: any object serializes to YAML and reads back equal, through the same loader users
//! hit. Catches fields that serialize under one name and parse under another.

use proptest::prelude::*;

use crate::Policy;
use crate::limits::ParseLimits;
use crate::load::parse_document;
use crate::tree::parse_documents;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_object_survives_a_yaml_round_trip(policy in any::<Policy>()) {
        let yaml = serde_saphyr::to_string(&policy).expect("serialize");
        let documents = parse_documents(&yaml, &ParseLimits::default())
            .unwrap_or_else(|e| panic!("{e:?} in\n{yaml}"));
        prop_assert_eq!(documents.len(), 1, "{}", yaml);
        let (parsed, issues) = parse_document(&documents[0]);
        prop_assert!(issues.is_empty(), "{:?}\n{}", issues, yaml);
        prop_assert_eq!(parsed.as_ref(), Some(&policy), "{}", yaml);
    }

    #[test]
    fn several_objects_survive_as_one_multi_document_file(
        policies in proptest::collection::vec(any::<Policy>(), 1..4)
    ) {
        let yaml: String = policies
            .iter()
            .map(|p| format!("---\n{}", serde_saphyr::to_string(p).expect("serialize")))
            .collect();
        let documents = parse_documents(&yaml, &ParseLimits::default())
            .unwrap_or_else(|e| panic!("{e:?} in\n{yaml}"));
        let parsed: Vec<Policy> = documents.iter().filter_map(|d| parse_document(d).0).collect();
        prop_assert_eq!(parsed, policies, "{}", yaml);
    }
}

/// Socket addresses as text can show: a V6 address's flow label is not written, so generated
/// addresses leave it at zero.
pub(crate) fn socket_addr() -> impl Strategy<Value = std::net::SocketAddr> {
    (any::<std::net::IpAddr>(), any::<u16>())
        .prop_map(|(ip, port)| std::net::SocketAddr::new(ip, port))
}

/// An optional [`socket_addr`].
pub(crate) fn optional_socket_addr() -> impl Strategy<Value = Option<std::net::SocketAddr>> {
    proptest::option::of(socket_addr())
}
