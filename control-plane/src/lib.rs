//! hyphae control plane.
