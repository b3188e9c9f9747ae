//! The push: the notes the mirror asks for, compared with what `anki_cards`
//! says was last sent, and only the difference sent to AnkiConnect, phase by
//! phase, each in its module: `plan` (no request), `check` (do the notes to
//! update still exist?), the sound files ([`media`](super::media)),
//! `update` (and the upstream deletions tagged), `add` (the deck and note
//! type first, the cards moved into the deck after).
//!
//! - A note whose rendered fields hash to the recorded `content_hash` (and
//!   whose card is synced) sends nothing: a push with nothing new makes no
//!   request at all.
//! - A changed note is updated in place (`updateNoteFields`) after
//!   `notesInfo` confirmed it still exists (`[{}]` means the user deleted
//!   it: then [`DeletedInAnki`](super::DeletedInAnki) decides).
//! - A legacy card (another note type, written by the old application) is
//!   updated through its own field names, never duplicated. When the Anki
//!   profile lacks its note type altogether, the note was made in another
//!   profile (a learner on a new computer): it is created anew as a note
//!   of the agent's type, and the report says so.
//! - A new note is added with `multi` of `addNote`, so that one refused
//!   note does not stop the others (`addNotes` would add none). Anki may
//!   put the cards elsewhere than the deck asked for (the add-on on Anki 26
//!   does): every added note's cards are checked and moved. A note Anki
//!   already has under its key (an earlier push stopped before Anki's
//!   answer arrived) is taken over and updated, not reported as a
//!   duplicate.
//! - A card whose content or fragment left the mirror is tagged
//!   `thai-content::deleted` (by [`DeletedUpstream`](super::DeletedUpstream)); no note is ever
//!   deleted.
//!
//! Each request's outcome is written to `anki_cards` in one transaction as
//! soon as AnkiConnect answered it; a request Anki did not answer records
//! nothing, and what it may have done is found again by the next push.

use std::collections::{HashMap, HashSet};

use super::add::{add, prepare_collection};
use super::check::check_notes;
use super::connect::{API_VERSION, AnkiConnect, AnkiError};
use super::media;
use super::notes::Audio;
use super::plan::{Job, Plan, plan};
use super::report::{PushError, PushReport};
use super::session::{Session, Tally};
use super::update::{tag_gone, update};
use super::{AnkiSettings, Progress};
use crate::api::ApiClient;
use crate::store::{CardEntry, CardOutcome, Store, SyncPhase};

#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// Also ask Anki whether every unchanged note still exists (one
    /// `notesInfo` request), to apply the deleted-in-Anki rule to them.
    pub verify: bool,
}

/// Pushes the mirror into Anki. `api` fetches audio bytes not cached yet;
/// without it, notes whose audio is not cached fail.
pub fn push(
    store: &mut Store,
    anki: &AnkiConnect,
    api: Option<&ApiClient>,
    settings: &AnkiSettings,
    options: PushOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PushReport, PushError> {
    match store.sync_state()?.phase {
        SyncPhase::None => return Err(PushError::MirrorIncomplete("never pulled")),
        SyncPhase::Snapshot => return Err(PushError::MirrorIncomplete("inside a snapshot")),
        SyncPhase::Log => {}
    }
    let mut plan = plan(store, settings)?;
    let mut report = PushReport::default();
    if plan.is_empty() && !options.verify {
        report.unchanged = plan.unchanged.len();
        return Ok(report);
    }

    // Anki must answer before anything is sent or recorded.
    if anki.version()? < API_VERSION {
        return Err(AnkiError::TooOld {
            url: anki.url().to_owned(),
        }
        .into());
    }
    let deleted = check_notes(anki, &mut plan, settings, options.verify, &mut report)?;
    if !plan.adds.is_empty() {
        prepare_collection(anki, settings)?;
    }
    // Audio first: a note is only sent once its sound file is in Anki.
    let media_failed = send_media(store, anki, api, &plan, &mut report, progress)?;

    let mut session = Session {
        anki,
        store,
        settings,
        media_failed: &media_failed,
        report: &mut report,
        tally: Tally::new(plan.updates.len() + plan.adds.len(), progress),
    };
    update(&mut session, &plan.updates)?;
    add(&mut session, &plan.adds)?;
    tag_gone(&mut session, &plan.gone)?;
    // Only now: a push that stops early has not decided about these.
    let entries: Vec<CardEntry<'_>> = deleted
        .iter()
        .map(|j| j.entry(CardOutcome::DeletedInAnki))
        .collect();
    session.record(&entries)?;
    Ok(report)
}

/// The sound files of the notes to send; answers those that could not be
/// stored (file name → why).
fn send_media(
    store: &mut Store,
    anki: &AnkiConnect,
    api: Option<&ApiClient>,
    plan: &Plan,
    report: &mut PushReport,
    progress: &mut dyn FnMut(Progress),
) -> Result<HashMap<String, String>, AnkiError> {
    let mut seen = HashSet::new();
    let wanted: Vec<&Audio> = plan
        .updates
        .iter()
        .chain(&plan.adds)
        .filter_map(Job::audio)
        .filter(|a| seen.insert(a.file_name.clone()))
        .collect();
    let sent = media::send(store, anki, api, &wanted, progress)?;
    report.media_stored = sent.stored;
    report.media_present = sent.present;
    report.media_bytes = sent.bytes;
    report.media_into_folder = sent.into_folder;
    Ok(sent.failed)
}
