//! `local-agent config`: the settings in effect and where each comes from,
//! section by section, under the names the config file gives them.

use anyhow::Result;

use local_agent::config::{Settings, Shown, Source};

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.out
        .print(&ctx.settings, || describe_settings(&ctx.settings))
}

fn describe_settings(s: &Settings) -> String {
    let mut lines = Vec::new();
    for (section, shown) in s.sections() {
        if let Some(name) = section {
            lines.push(format!("\n[{name}]"));
        }
        lines.extend(shown.iter().map(line));
    }
    lines.join("\n")
}

fn line(shown: &Shown) -> String {
    let value = match &shown.value {
        None => "-".to_owned(),
        Some(v) => {
            let text = match &v.value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            format!("{text} ({})", source(v.source))
        }
    };
    format!("{:<18}{value}", shown.key)
}

fn source(source: Source) -> &'static str {
    match source {
        Source::Flag => "flag",
        Source::Env => "environment",
        Source::File => "config file",
        Source::Default => "default",
        Source::Installed => "installed model (`local-agent model list`)",
    }
}
