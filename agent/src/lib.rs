//! hyphae agent (data plane arrives with the data-plane issue).
