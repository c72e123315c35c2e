//! Shared helpers for hyphae multi-process tests.
