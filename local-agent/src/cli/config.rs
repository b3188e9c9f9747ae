//! `local-agent config`: the settings in effect and where each comes from.

use anyhow::Result;

use local_agent::config::{self, Settings};

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.out
        .print(&ctx.settings, || describe_settings(&ctx.settings))
}

fn describe_settings(s: &Settings) -> String {
    fn src(source: config::Source) -> &'static str {
        match source {
            config::Source::Flag => "flag",
            config::Source::Env => "environment",
            config::Source::File => "config file",
            config::Source::Default => "default",
        }
    }
    let opt = |v: &Option<config::Sourced<String>>, secret: bool| match v {
        Some(v) if secret => format!("<set> ({})", src(v.source)),
        Some(v) => format!("{} ({})", v.value, src(v.source)),
        None => "-".to_owned(),
    };
    format!(
        "config file  {} ({})\n\
         store        {} ({})\n\
         api url      {}\n\
         token        {}\n\
         api timeout  {} s ({})\n\
         embed model  {} ({})\n\
         embed url    {}\n\
         embed key    {}",
        s.config_file.value.display(),
        src(s.config_file.source),
        s.db.value.display(),
        src(s.db.source),
        opt(&s.api_url, false),
        opt(&s.token, true),
        s.api_timeout.value,
        src(s.api_timeout.source),
        s.embed.model.value,
        src(s.embed.model.source),
        opt(&s.embed.url, false),
        opt(&s.embed.api_key, true),
    )
}
