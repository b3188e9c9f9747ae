//! What the phases that send notes share while a push runs.

use std::collections::HashMap;

use super::connect::AnkiConnect;
use super::plan::Job;
use super::report::PushReport;
use super::{AnkiSettings, Progress};
use crate::store::{CardEntry, Store, StoreError};

/// What the phases that send notes share.
pub(super) struct Session<'a, 'p> {
    pub anki: &'a AnkiConnect,
    pub store: &'a mut Store,
    pub settings: &'a AnkiSettings,
    /// Sound files that could not be stored: the notes playing them fail.
    pub media_failed: &'a HashMap<String, String>,
    pub report: &'a mut PushReport,
    pub tally: Tally<'p>,
}

impl Session<'_, '_> {
    /// Records outcomes as soon as Anki answered.
    pub fn record(&mut self, entries: &[CardEntry<'_>]) -> Result<(), StoreError> {
        self.store.record_cards(entries)
    }

    /// Splits off the jobs whose sound could not be stored: they fail, and
    /// are tried again by the next push.
    pub fn without_sound<'j>(&mut self, jobs: &'j [Job]) -> Result<Vec<&'j Job>, StoreError> {
        let mut ready = Vec::new();
        let mut blocked = Vec::new();
        for job in jobs {
            match job
                .audio()
                .and_then(|a| self.media_failed.get(&a.file_name))
            {
                Some(e) => blocked.push(job.fail(self.report, e.clone())),
                None => ready.push(job),
            }
        }
        self.record(&blocked)?;
        Ok(ready)
    }
}

/// Notes sent so far, for the progress display.
pub(super) struct Tally<'p> {
    done: usize,
    total: usize,
    progress: &'p mut dyn FnMut(Progress),
}

impl<'p> Tally<'p> {
    pub fn new(total: usize, progress: &'p mut dyn FnMut(Progress)) -> Tally<'p> {
        Tally {
            done: 0,
            total,
            progress,
        }
    }

    pub fn add(&mut self, n: usize) {
        self.done += n;
        (self.progress)(Progress::Notes {
            done: self.done,
            total: self.total,
        });
    }
}
