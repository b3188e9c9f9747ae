//! Do the notes to update (with `--verify`, all recorded notes) still
//! exist in Anki? A note the learner deleted is added again or left alone
//! by [`DeletedInAnki`]; a legacy note whose type this profile lacks was
//! made in another profile and is created anew.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::connect::{AnkiConnect, AnkiError, REQUEST_ACTIONS};
use super::notes;
use super::plan::{Add, Job, Plan};
use super::report::PushReport;
use super::{AnkiSettings, DeletedInAnki};

/// Sorts the notes to check into the plan's updates and adds; answers
/// those deleted in Anki and left alone, recorded at the end of the push.
pub(super) fn check_notes(
    anki: &AnkiConnect,
    plan: &mut Plan,
    settings: &AnkiSettings,
    verify: bool,
    report: &mut PushReport,
) -> Result<Vec<Job>, AnkiError> {
    let mut check = std::mem::take(&mut plan.updates);
    let verify_from = check.len();
    if verify {
        check.append(&mut plan.unchanged);
    } else {
        report.unchanged = plan.unchanged.len();
    }
    // A legacy note whose type the profile lacks cannot have been deleted
    // here: it was made in another profile.
    let models: HashSet<String> = if check.iter().any(Job::is_legacy) {
        model_names(anki)?
    } else {
        HashSet::new()
    };
    let mut deleted = Vec::new();
    let mut index = 0;
    let mut jobs = check.into_iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<Job> = jobs.by_ref().take(REQUEST_ACTIONS).collect();
        let infos = notes_info(anki, &chunk)?;
        for (job, info) in chunk.into_iter().zip(infos) {
            let verifying = index >= verify_from;
            index += 1;
            if info.get("noteId").is_some() {
                found(job, &info, verifying, plan, report);
            } else if let Some(job) = missing(job, &models, settings, plan, report) {
                deleted.push(job);
            }
        }
    }
    Ok(deleted)
}

/// What Anki has of each job's note (`{}` or nothing for a missing one),
/// one per job.
fn notes_info(anki: &AnkiConnect, jobs: &[Job]) -> Result<Vec<Value>, AnkiError> {
    let ids: Vec<i64> = jobs
        .iter()
        .map(|j| j.note_id().unwrap_or_default())
        .collect();
    let infos = anki.invoke("notesInfo", json!({ "notes": ids }))?;
    let infos = infos.as_array().cloned().unwrap_or_default();
    Ok(infos
        .into_iter()
        .chain(std::iter::repeat(Value::Null))
        .take(jobs.len())
        .collect())
}

/// A note Anki still has: updated, or (verifying) unchanged.
fn found(mut job: Job, info: &Value, verifying: bool, plan: &mut Plan, report: &mut PushReport) {
    if job.is_legacy() {
        // The note's own field names, as Anki has them now.
        let names: Vec<String> = info["fields"]
            .as_object()
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default();
        job.fields = notes::map_to_legacy(&job.note.fields, &names);
    }
    if verifying {
        report.unchanged += 1;
    } else {
        plan.updates.push(job);
    }
}

/// A note Anki does not have: created anew, added again, or answered to
/// be recorded as deleted in Anki.
fn missing(
    job: Job,
    models: &HashSet<String>,
    settings: &AnkiSettings,
    plan: &mut Plan,
    report: &mut PushReport,
) -> Option<Job> {
    let note_type = job
        .card
        .as_ref()
        .map(|c| c.note_type.clone())
        .unwrap_or_default();
    if job.is_legacy() && !models.contains(&note_type) {
        report.legacy_note_types.insert(note_type);
        plan.adds.push(job.into_add(Add::LegacyElsewhere));
        return None;
    }
    match settings.deleted_in_anki.value {
        DeletedInAnki::Leave => {
            report.deleted_in_anki += 1;
            Some(job)
        }
        DeletedInAnki::Recreate => {
            plan.adds.push(job.into_add(Add::Recreate));
            None
        }
    }
}

pub(super) fn model_names(anki: &AnkiConnect) -> Result<HashSet<String>, AnkiError> {
    Ok(anki
        .invoke("modelNames", json!({}))?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}
