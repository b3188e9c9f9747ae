//! How results reach the user: text for people, `--json` for scripts,
//! progress bars and retry notices only on a terminal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use local_agent::api::RetryNotice;

/// How results reach the user.
pub struct Output {
    pub json: bool,
    /// Progress bars: a terminal on stderr, and neither --json nor --quiet.
    pub progress: bool,
    /// No notices on stderr either (errors still are).
    pub quiet: bool,
}

impl Output {
    pub fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", text());
        }
        Ok(())
    }

    pub fn spinner(&self, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    pub fn bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} [{elapsed} elapsed, {eta} left]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }
}

impl Output {
    /// A bar over bytes, with a message that counts files.
    pub fn bytes_bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
                 [{elapsed} elapsed, {eta} left]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }

    /// The bars of a push: the sound files (bytes and files), then the
    /// notes.
    pub fn push_progress(&self) -> impl FnMut(local_agent::anki::Progress) + '_ {
        use local_agent::anki::Progress;
        let mut media: Option<ProgressBar> = None;
        let mut notes: Option<ProgressBar> = None;
        move |p| match p {
            Progress::Media {
                files,
                files_total,
                bytes,
                bytes_total,
            } => {
                let bar = media.get_or_insert_with(|| self.bytes_bar(bytes_total, "sound files"));
                bar.set_position(bytes);
                bar.set_message(format!("sound files {files}/{files_total}"));
                if files == files_total {
                    bar.finish_and_clear();
                }
            }
            Progress::Notes { done, total } => {
                let bar = notes.get_or_insert_with(|| self.bar(total as u64, "notes"));
                bar.set_position(done as u64);
                if done == total {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

/// Says each retry (a 503, a dropped connection) as it happens, so a user
/// waiting out an outage knows why nothing moves: on the progress bar when
/// one is shown, else on stderr, even with --json (stdout stays data).
pub fn retry_notices(out: &Output, bar: Option<ProgressBar>) -> local_agent::api::RetryHook {
    let quiet = out.quiet;
    Arc::new(move |n: &RetryNotice| {
        let text = format!(
            "{}; attempt {} of {} in {:.1}s",
            n.reason,
            n.attempt,
            n.of,
            n.wait.as_secs_f64()
        );
        match &bar {
            Some(bar) if !bar.is_hidden() => bar.set_message(text),
            _ if quiet => {}
            _ => eprintln!("{text}"),
        }
    })
}
