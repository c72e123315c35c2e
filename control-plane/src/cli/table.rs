//! Column layout for the CLI's human output: every column as wide as its widest cell, so long
//! names never push the columns out of line. Pure text, no terminal handling.

/// Gap between columns.
const GAP: &str = "  ";

/// `rows` laid out in aligned columns, one line each, with no trailing spaces.
pub fn columns(rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// A table: `header` over `rows`, as text ending in a newline.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![header.iter().map(|h| (*h).to_string()).collect()];
    all.extend(rows);
    let mut text = columns(&all).join("\n");
    text.push('\n');
    text
}

/// A table of `items`, one row each as `row` lays it out, under `header`.
pub fn table_of<T>(header: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    table(header, items.iter().map(row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_without_trailing_spaces() {
        let text = table(
            &["NAME", "N"],
            vec![
                vec!["a-long-name".into(), "1".into()],
                vec!["b".into(), "".into()],
            ],
        );
        assert_eq!(text, "NAME         N\na-long-name  1\nb\n");
    }
}
