//! `local-agent init`: writes the config file with the API URL and token.

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use local_agent::backoff::Backoff;

use super::{Ctx, api_client};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Replace an API URL or token the file holds already
    #[arg(long)]
    pub force: bool,
}

#[derive(Serialize)]
struct InitReport<'a> {
    config_file: &'a std::path::Path,
    api_url: Option<&'a str>,
    token_saved: bool,
    api_answers: Option<bool>,
}

pub fn run(ctx: Ctx, args: InitArgs) -> Result<()> {
    let Ctx {
        out,
        settings,
        mut file,
        backoff,
    } = ctx;
    let force = args.force;
    let out = &out;
    let settings = &settings;
    let path = &settings.config_file.value;
    let api_url = settings.api.url.as_ref().map(|u| u.value.clone());
    let token = settings.api.token.as_ref().map(|t| t.value.clone());
    if api_url.is_none() {
        bail!("init needs the API URL: local-agent init --api-url <URL> --token <JWT>");
    }
    let replaces =
        |old: &Option<String>, new: &Option<String>| old.is_some() && new.is_some() && old != new;
    if !force && (replaces(&file.api_url, &api_url) || replaces(&file.token, &token)) {
        bail!(
            "{} already holds another API URL or token; add --force to replace them",
            path.display()
        );
    }
    file.api_url = api_url.clone();
    if token.is_some() {
        file.token = token.clone();
    }
    file.save(path)?;
    let answers = api_client(
        settings,
        Backoff {
            attempts: 1,
            ..backoff
        },
    )?
    .health()
    .is_ok();
    let report = InitReport {
        config_file: path,
        api_url: api_url.as_deref(),
        token_saved: file.token.is_some(),
        api_answers: Some(answers),
    };
    out.print(&report, || {
        let mut text = format!("Wrote {} (readable by you only).", path.display());
        if file.token.is_none() {
            text.push_str("\nNo token saved: add one with --token <JWT> if the API requires it.");
        }
        if answers {
            text.push_str("\nThe API answers. Next: `local-agent pull`.");
        } else {
            text.push_str(&format!(
                "\nThe API at {} does not answer yet; `local-agent status` checks again. \
                 Then: `local-agent pull`.",
                api_url.as_deref().unwrap_or_default()
            ));
        }
        text
    })
}
