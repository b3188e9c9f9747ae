//! How rows and instants are named in what the user reads: shared by the
//! errors here and the command's report, so that both say it the same way.

use super::read::{ASSETS, CONTENT, FRAGMENTS, RANKINGS};

/// How many ids of one kind are listed before "and N more".
pub const LISTED: usize = 20;

/// What a row of `table` is called, for `n` of them: "content",
/// "fragments".
pub fn noun(table: &str, n: usize) -> String {
    let one = match table {
        CONTENT => "content",
        FRAGMENTS => "fragment",
        ASSETS => "asset",
        RANKINGS => "ranking",
        _ => "row",
    };
    if n == 1 {
        one.to_owned()
    } else {
        format!("{one}s")
    }
}

/// The first [`LISTED`] ids, and how many more there are.
pub fn list_ids(ids: &[i64]) -> String {
    let mut listed = ids
        .iter()
        .take(LISTED)
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > LISTED {
        listed.push_str(&format!(" and {} more", ids.len() - LISTED));
    }
    listed
}

/// An RFC 3339 instant as `2026-05-03 14:02 UTC`.
pub fn when(instant: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(instant)
        .map(|t| t.to_utc().format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| instant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut_and_instants_read_as_minutes() {
        let ids: Vec<i64> = (1..=22).collect();
        assert!(list_ids(&ids).ends_with("20 and 2 more"));
        assert_eq!(noun(CONTENT, 2), "contents");
        assert_eq!(when("2026-05-03T14:02:09Z"), "2026-05-03 14:02 UTC");
        assert_eq!(when("not a date"), "not a date");
    }
}
