//! A line diff for `hyphae apply --dry-run`: what would change in a stored policy.

/// Lines of `old` and `new` as a unified-style listing: `-` removed, `+` added, ` ` kept.
/// Longest-common-subsequence based; policies are small.
pub fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn shows_removed_and_added_lines() {
        let diff = line_diff("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(diff, vec!["  a", "- b", "+ x", "  c"]);
        assert!(
            line_diff("same\n", "same\n")
                .iter()
                .all(|l| l.starts_with("  "))
        );
    }
}
