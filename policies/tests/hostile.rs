//! Property: the loader never panics, whatever it is fed — random bytes, random text, and
//! mutations of valid policy files (the inputs most likely to reach deep into the decoder).

use hyphae_policies::{LoadOptions, Loader};
use proptest::prelude::*;

const VALID: &str = include_str!("../examples/services.yaml");
const ROUTES: &str = include_str!("../examples/routes.yaml");
const AGENT: &str = include_str!("../examples/agents/web-1.yaml");

fn load(bytes: &[u8]) -> usize {
    let mut loader = Loader::new(LoadOptions::default());
    loader.add_bytes("fuzz.yaml", bytes);
    let report = loader.finish();
    // Rendering runs the caret and snippet code on every diagnostic too.
    report.diagnostics.iter().map(|d| d.to_string().len()).sum()
}

/// A valid file with one byte range replaced by `insert`.
fn mutate(base: &str, at: usize, cut: usize, insert: &str) -> Vec<u8> {
    let bytes = base.as_bytes();
    let at = at % (bytes.len() + 1);
    let end = (at + cut).min(bytes.len());
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(insert.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        load(&bytes);
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,512}") {
        load(text.as_bytes());
    }

    #[test]
    fn mutated_policy_files_never_panic(
        which in 0..3usize,
        at in any::<usize>(),
        cut in 0..64usize,
        insert in prop_oneof![
            Just(""), Just(":"), Just("- "), Just("\t"), Just("\n"), Just("{"), Just("]"),
            Just("&a "), Just("*a"), Just("<<: *a"), Just("!!binary "), Just("~"), Just("'"),
            Just("\""), Just("99999999999999999999999"), Just("-1"), Just("1e400"), Just(".nan"),
            Just("\u{feff}"), Just("\u{0}"), Just("---\n"), Just("...\n"), Just("? "),
        ],
    ) {
        let base = [VALID, ROUTES, AGENT][which];
        load(&mutate(base, at, cut, insert));
    }
}
