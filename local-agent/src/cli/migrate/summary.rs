//! The migration's summary as text: the tables sent, the rejects, the
//! verification, what changed since a finished migration, the store copy.

use std::collections::BTreeMap;
use std::fmt::Write;

use local_agent::migrate::read::{ASSETS, CONTENT, FRAGMENTS, RANKINGS};
use local_agent::migrate::verify::{Since, TableCheck};
use local_agent::migrate::wording::{LISTED, list_ids, noun, when};
use local_agent::migrate::{ChangedSince, Summary};

pub fn render(s: &Summary) -> String {
    let mut out = sent_table(s);
    out.push_str(&rejects_line(s));
    if s.dry_run {
        out.push_str("dry run: nothing was sent and the store was not touched\n");
        return out;
    }
    out.push_str(&resumption(s));
    if let Some(next) = &s.next_ids {
        let _ = writeln!(out, "sequences moved, next ids: {next}");
    }
    let _ = write!(
        out,
        "{:.1} s, {:.0} rows/s, {:.2} MB/s\n\nverification:\n{}",
        s.seconds,
        s.rows_per_second,
        s.mb_per_second,
        verification(&s.verification)
    );
    if let Some(before) = &s.migrated_before {
        out.push_str(&changes_since(&s.changed_since, &before.finished_at));
        let _ = writeln!(
            out,
            "store: anki_cards and vectors not copied again (the migration of {} copied them; \
             since then they are the agent's own: `anki push` updates cards, `embed` prunes \
             vectors)",
            when(&before.finished_at)
        );
        let _ = writeln!(
            out,
            "to send every row of the legacy file again, restoring what was deleted or edited \
             on the server since, and copy back missing cards and vectors: \
             local-agent migrate {} --resend",
            s.legacy.display()
        );
    }
    if let Some(c) = &s.store {
        let _ = writeln!(
            out,
            "store: {} anki_cards, {} vector_embeddings and {} vectors copied{}",
            c.anki_cards,
            c.vector_embeddings,
            c.vectors,
            if c.conflicts > 0 {
                format!(", {} CONFLICTS (ids held by other rows)", c.conflicts)
            } else {
                String::new()
            }
        );
    }
    out
}

/// Per table: what the legacy file holds, what went, what had gone before.
fn sent_table(s: &Summary) -> String {
    let mut out = format!(
        "{:<18} {:>7} {:>8} {:>7} {:>8} {:>9} {:>10}\n",
        "table", "source", "rejected", "sent", "resumed", "rows/s", "MB"
    );
    for t in &s.tables {
        let _ = writeln!(
            out,
            "{:<18} {:>7} {:>8} {:>7} {:>8} {:>9.0} {:>10.2}",
            t.table,
            t.source,
            t.rejected,
            t.sent,
            t.resumed,
            t.rows_per_second,
            t.bytes as f64 / 1e6
        );
    }
    out
}

/// The rejects: rows (each counted once) and report lines per reason (a
/// row refused for several reasons has a line for each).
fn rejects_line(s: &Summary) -> String {
    if s.rejected_rows == 0 {
        return format!("\nno row rejected, report: {}\n", s.reject_report.display());
    }
    format!(
        "\n{} rows rejected; {} reject lines, one per refused value (a row can have several), by reason: {}; report: {}\n",
        s.rejected_rows,
        s.reject_lines,
        s.rejects_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.reject_report.display()
    )
}

/// Whether this run found a finished migration, or an unfinished one to
/// resume, or nothing to do.
fn resumption(s: &Summary) -> String {
    let mut out = String::new();
    if let Some(before) = &s.migrated_before {
        let _ = writeln!(
            out,
            "this file was migrated to {} on {}: its rows are not sent again, rows added to it since are; \
             the legacy file {}",
            before.api_url,
            when(&before.finished_at),
            if before.legacy_unchanged {
                "is unchanged since"
            } else {
                "has changed since"
            }
        );
    }
    let resumed: usize = s.tables.iter().map(|t| t.resumed).sum();
    if s.nothing_to_do {
        out.push_str(
            "nothing to do: every row and asset had arrived already; nothing was changed\n",
        );
    } else if resumed > 0 && s.migrated_before.is_none() {
        let _ = writeln!(
            out,
            "resumed: {resumed} rows/assets that an earlier run had delivered were skipped"
        );
    }
    out
}

/// The verification as a table.
fn verification(checks: &[TableCheck]) -> String {
    let mut s = format!(
        "{:<18} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>6}  result\n",
        "table",
        "source",
        "rejected",
        "expected",
        "on server",
        "matching",
        "missing",
        "differing",
        "extra"
    );
    for c in checks {
        let _ = writeln!(
            s,
            "{:<18} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>6}  {}",
            c.table,
            c.source,
            c.rejected,
            c.expected,
            c.on_server,
            c.matching,
            c.missing,
            c.differing,
            c.extra,
            if c.ok() && c.changed_since > 0 {
                format!("ok ({} changed since the migration)", c.changed_since)
            } else if c.ok() {
                "ok".to_owned()
            } else {
                format!("MISMATCH (e.g. ids {:?})", c.examples)
            }
        );
    }
    s
}

/// One line per table and kind of change: "content 2: deleted on the
/// server since the migration of …; not restored".
fn changes_since(changes: &[ChangedSince], finished_at: &str) -> String {
    if changes.is_empty() {
        return "changed since the migration: nothing; the server holds every row it delivered\n"
            .to_owned();
    }
    let mut groups: BTreeMap<(usize, Since), Vec<i64>> = BTreeMap::new();
    let tables = [CONTENT, FRAGMENTS, ASSETS, RANKINGS];
    for c in changes {
        let order = tables.iter().position(|t| *t == c.table).unwrap_or(0);
        groups.entry((order, c.change)).or_default().push(c.id);
    }
    let date = when(finished_at);
    let mut out = String::new();
    for ((order, change), ids) in groups {
        let mut listed = list_ids(&ids);
        if ids.len() > LISTED {
            listed.push_str(" (--json lists them all)");
        }
        let what = match change {
            Since::DeletedOnServer => {
                format!("deleted on the server since the migration of {date}; not restored")
            }
            Since::EditedOnServer => format!(
                "edited on the server since the migration of {date}; the server's version is kept"
            ),
            Since::ChangedInLegacy => {
                format!("changed in the legacy file since the migration of {date}; not sent")
            }
        };
        let _ = writeln!(out, "{} {listed}: {what}", noun(tables[order], ids.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reject_summary_says_what_each_number_counts() {
        let summary = Summary {
            dry_run: true,
            reject_report: "rejects.jsonl".into(),
            rejected_rows: 2,
            reject_lines: 3,
            rejects_by_reason: BTreeMap::from([
                ("invalid_json", 1),
                ("parent_rejected", 1),
                ("too_long", 1),
            ]),
            ..Summary::default()
        };
        let text = render(&summary);
        assert!(
            text.contains(
                "2 rows rejected; 3 reject lines, one per refused value (a row can have several), \
                 by reason: invalid_json 1, parent_rejected 1, too_long 1; report: rejects.jsonl"
            ),
            "{text}"
        );
        let none = render(&Summary {
            dry_run: true,
            reject_report: "rejects.jsonl".into(),
            ..Summary::default()
        });
        assert!(
            none.contains("no row rejected, report: rejects.jsonl"),
            "{none}"
        );
    }

    #[test]
    fn changes_since_are_grouped_by_table_and_kind() {
        let change = |table, id, change| ChangedSince { table, id, change };
        let text = changes_since(
            &[
                change(FRAGMENTS, 4, Since::DeletedOnServer),
                change(CONTENT, 2, Since::DeletedOnServer),
                change(CONTENT, 3, Since::DeletedOnServer),
                change(CONTENT, 9, Since::ChangedInLegacy),
            ],
            "2026-05-03T14:02:00Z",
        );
        assert_eq!(
            text,
            "contents 2, 3: deleted on the server since the migration of 2026-05-03 14:02 UTC; not restored\n\
             content 9: changed in the legacy file since the migration of 2026-05-03 14:02 UTC; not sent\n\
             fragment 4: deleted on the server since the migration of 2026-05-03 14:02 UTC; not restored\n"
        );
    }
}
