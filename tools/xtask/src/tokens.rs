//! Development JWTs in Supabase's shape: HS256 over the project's secret,
//! with the `role` claim the API authorises on.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

/// The roles the API knows, least privileged first.
pub const ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// How long a development token is valid.
const VALID_FOR_SECS: u64 = 7 * 24 * 3600;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    exp: u64,
}

/// A fresh random secret (256 bits, hex), new on every `up`.
pub fn generate_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

/// A signed token for `role`.
pub fn token(secret: &str, role: &str) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let user = role == "authenticated";
    let claims = Claims {
        iss: "local-dev",
        role,
        sub: user.then_some("00000000-0000-0000-0000-000000000001"),
        aud: user.then_some("authenticated"),
        iat: now,
        exp: now + VALID_FOR_SECS,
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
