//! Line-based three-way merge of text values, accepted only when the result cannot depend on
//! which side is "ours" and merging again would change nothing.

/// Merges two concurrent edits of `base` line by line, or returns `None` when they conflict.
///
/// The result is symmetric and stable, so every device that merges the same edits ends with the
/// same text, whichever edit reached the server first:
/// - `merge_lines(b, l, s) == merge_lines(b, s, l)`;
/// - if `merge_lines(b, l, s) == Some(m)` then `merge_lines(b, l, m) == Some(m)` and
///   `merge_lines(b, s, m) == Some(m)`: merging an edit into a text that already holds it is a
///   no-op.
///
/// A merge is accepted only if `diffy::merge` gives the same text with the sides swapped, and
/// re-merging either side with that text gives it back. The second check rules out merges that
/// a line diff would apply twice (an inserted line that also matches a neighbouring line can be
/// aligned differently on the next merge and duplicated); such edits count as a conflict.
///
/// ```
/// use converge_policies::merge_lines;
///
/// let base = "title\nfirst\n--\nsecond\n";
/// let here = "title\nFIRST\n--\nsecond\n";
/// let there = "title\nfirst\n--\nSECOND\n";
/// assert_eq!(merge_lines(base, here, there).as_deref(), Some("title\nFIRST\n--\nSECOND\n"));
/// // The same line, or adjacent lines, edited on both sides: a conflict.
/// assert_eq!(merge_lines(base, "title\nA\n--\nsecond\n", "title\nB\n--\nsecond\n"), None);
/// assert_eq!(merge_lines(base, here, "title\nfirst\nmiddle\nsecond\n"), None);
/// ```
pub fn merge_lines(base: &str, local: &str, server: &str) -> Option<String> {
    if local == server || server == base {
        return Some(local.to_owned());
    }
    if local == base {
        return Some(server.to_owned());
    }
    let merged = diffy::merge(base, local, server).ok()?;
    if diffy::merge(base, server, local).ok()? != merged {
        return None;
    }
    for side in [local, server] {
        if !merges_to(base, side, &merged, &merged) || !merges_to(base, &merged, side, &merged) {
            return None;
        }
    }
    Some(merged)
}

/// Whether `diffy::merge(base, ours, theirs)` succeeds with exactly `expected`.
fn merges_to(base: &str, ours: &str, theirs: &str, expected: &str) -> bool {
    diffy::merge(base, ours, theirs).is_ok_and(|m| m == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_cases_take_the_changed_side() {
        assert_eq!(merge_lines("a\n", "a\n", "b\n").as_deref(), Some("b\n"));
        assert_eq!(merge_lines("a\n", "b\n", "a\n").as_deref(), Some("b\n"));
        assert_eq!(merge_lines("a\n", "b\n", "b\n").as_deref(), Some("b\n"));
    }

    #[test]
    fn separate_lines_merge_both_ways_alike() {
        let (b, l, s) = ("a\nb\nc\n", "x\nb\nc\n", "a\nb\ny\n");
        assert_eq!(merge_lines(b, l, s).as_deref(), Some("x\nb\ny\n"));
        assert_eq!(merge_lines(b, s, l).as_deref(), Some("x\nb\ny\n"));
    }

    #[test]
    fn same_or_adjacent_lines_conflict() {
        assert_eq!(merge_lines("a\nb\n", "x\nb\n", "y\nb\n"), None);
        assert_eq!(merge_lines("a\nb\n", "x\nb\n", "a\ny\n"), None);
        assert_eq!(merge_lines("a\n", "a\nb\n", "a\nc\n"), None);
    }

    #[test]
    fn a_merge_that_would_duplicate_lines_when_repeated_is_refused() {
        // diffy merges these both ways to "y\nb\nb\nb\n", but merging the local edit into that
        // result again inserts another "b": accepting it would make resolution not idempotent.
        let (b, l, s) = ("b\nb\n", "b\nb\nb\n", "y\nb\nb\n");
        let once = diffy::merge(b, l, s).unwrap();
        assert_eq!(once, "y\nb\nb\nb\n");
        assert_eq!(diffy::merge(b, s, l).unwrap(), once);
        assert_ne!(diffy::merge(b, l, &once).unwrap(), once);
        assert_eq!(merge_lines(b, l, s), None);
    }

    #[test]
    fn merging_into_the_result_changes_nothing() {
        let (b, l, s) = ("a\nb\nc\nd\n", "a\nB\nc\nd\n", "a\nb\nc\nD\n");
        let m = merge_lines(b, l, s).unwrap();
        assert_eq!(merge_lines(b, l, &m).as_deref(), Some(m.as_str()));
        assert_eq!(merge_lines(b, s, &m).as_deref(), Some(m.as_str()));
    }
}
