//! Bounds on what the policy loader will read, so hostile files cost bounded time and memory.
//! Every number here is a documented default that callers may change; none is hidden in the code.

/// Limits applied while reading policy files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest file accepted, in bytes. Policies are small; a bigger file is a mistake or an attack.
    pub max_file_bytes: usize,
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most YAML nodes in one file, counting nodes produced by alias expansion.
    pub max_nodes: usize,
    /// Most anchors or alias uses in one file (YAML "billion laughs" protection).
    pub max_aliases: usize,
    /// Most documents (`---`) in one file.
    pub max_documents: usize,
    /// Most files read from one directory tree.
    pub max_files: usize,
}

/// Default for [`ParseLimits::max_file_bytes`]: 4 MiB.
pub const DEFAULT_MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Default for [`ParseLimits::max_depth`]. The deepest policy field sits 8 levels down; each
/// level costs tens of KiB of stack in a debug build, so 24 keeps parsing safe on a 2 MiB stack.
pub const DEFAULT_MAX_DEPTH: usize = 24;
/// Default for [`ParseLimits::max_nodes`].
pub const DEFAULT_MAX_NODES: usize = 250_000;
/// Default for [`ParseLimits::max_aliases`].
pub const DEFAULT_MAX_ALIASES: usize = 1_000;
/// Default for [`ParseLimits::max_documents`].
pub const DEFAULT_MAX_DOCUMENTS: usize = 1_000;
/// Default for [`ParseLimits::max_files`].
pub const DEFAULT_MAX_FILES: usize = 10_000;

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_nodes: DEFAULT_MAX_NODES,
            max_aliases: DEFAULT_MAX_ALIASES,
            max_documents: DEFAULT_MAX_DOCUMENTS,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}
