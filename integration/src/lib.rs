//! Multi-process and repository-wide tests of hyphae. `tests/tidy.rs` holds the style rules
//! every file must follow; multi-host tests (network namespaces) join it as the control plane
//! lands.
