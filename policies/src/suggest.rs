//! "Did you mean" suggestions for misspelt field, kind and enum names.
//! Pure string work: never allocates more than the candidates it is given.

/// The candidate closest to `word`, when it is close enough to be a likely typo.
/// Case, `_` and `-` are ignored so `per_try_timeout` finds `perTryTimeout`.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let wanted = normalize(word);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&wanted, &normalize(candidate));
        let allowed = (candidate.chars().count() / 3).max(1);
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

fn normalize(word: &str) -> Vec<char> {
    word.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn finds_typos_and_other_spellings() {
        let fields = ["connect", "request", "idle"];
        assert_eq!(closest("reqest", &fields), Some("request"));
        assert_eq!(closest("Connect", &fields), Some("connect"));
        assert_eq!(
            closest("per_try_timeout", &["attempts", "perTryTimeout"]),
            Some("perTryTimeout")
        );
        assert_eq!(closest("banana", &fields), None);
    }
}
