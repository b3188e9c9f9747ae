//! The component's settings, from Spin variables.

use crate::problem::Problem;

/// The asset size limit when `max_asset_bytes` is not set: 20 MiB.
pub const DEFAULT_MAX_ASSET_BYTES: usize = 20 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub db_url: String,
    pub max_asset_bytes: usize,
}

impl Config {
    /// Reads the variables this API uses (those of authentication are
    /// [`crate::auth::Keys`]'s). A missing one is the operator's mistake,
    /// so it is a 500 that says which variable.
    pub fn load() -> Result<Self, Problem> {
        let max_asset_bytes = match optional("max_asset_bytes") {
            None => DEFAULT_MAX_ASSET_BYTES,
            Some(text) => text.trim().parse().map_err(|_| {
                misconfigured(&format!(
                    "max_asset_bytes is {text:?}, not a number of bytes"
                ))
            })?,
        };
        Ok(Config {
            db_url: required("db_url")?,
            max_asset_bytes,
        })
    }
}

/// A variable's value; unset and empty are the same.
pub fn optional(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|value| !value.is_empty())
}

fn required(name: &str) -> Result<String, Problem> {
    optional(name).ok_or_else(|| misconfigured(&format!("the {name} variable is not set")))
}

/// The 500 of a variable the operator got wrong; the log says it too.
pub fn misconfigured(detail: &str) -> Problem {
    eprintln!("configuration error: {detail}");
    Problem::new(500)
        .kind("misconfigured")
        .detail(format!("the service is misconfigured: {detail}"))
}
