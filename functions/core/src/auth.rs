//! Supabase authentication: `Authorization: Bearer <JWT>`, HS256 with the
//! project's JWT secret, and the `role` claim.

use serde::Deserialize;
use spin_sdk::http::Request;

use crate::problem::Problem;

/// What a caller may do, in increasing order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads.
    Anon,
    /// Reads and writes.
    Authenticated,
    /// Writes and bulk imports.
    ServiceRole,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anon => "anon",
            Role::Authenticated => "authenticated",
            Role::ServiceRole => "service_role",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "anon" => Some(Role::Anon),
            "authenticated" => Some(Role::Authenticated),
            "service_role" => Some(Role::ServiceRole),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    role: Option<String>,
    sub: Option<String>,
    email: Option<String>,
}

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// The caller's role, or 401 with `WWW-Authenticate`.
pub fn authenticate(req: &Request, secret: &str) -> Result<Role, Problem> {
    let header = req
        .header("authorization")
        .and_then(|value| value.as_str())
        .ok_or_else(|| unauthorized(None, "send Authorization: Bearer <JWT>"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            unauthorized(
                Some("invalid_request"),
                "the Authorization scheme must be Bearer",
            )
        })?;
    role_of(token, secret)
}

/// Verifies `token` and reads its role.
pub fn role_of(token: &str, secret: &str) -> Result<Role, Problem> {
    let name = verified_claims(token, secret)?
        .role
        .ok_or_else(|| unauthorized(Some("invalid_token"), "the token has no role claim"))?;
    Role::parse(&name).ok_or_else(|| {
        Problem::new(403)
            .kind("forbidden")
            .detail(format!("the role {name:?} has no access to this API"))
    })
}

/// The user a request's verified token names: its `email` claim, else its
/// `sub`; `None` for tokens that name nobody (Supabase's anon and
/// service_role keys). Email first because it is what assessors recognise
/// in a list of rankings; Supabase signs both for a signed-in user.
pub fn user_of(req: &Request, secret: &str) -> Result<Option<String>, Problem> {
    let header = req
        .header("authorization")
        .and_then(|value| value.as_str())
        .unwrap_or_default();
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let claims = verified_claims(token, secret)?;
    Ok(claims
        .email
        .filter(|e| !e.trim().is_empty())
        .or(claims.sub.filter(|s| !s.trim().is_empty())))
}

/// Verifies `token` (HS256 with `secret`, `exp` and `nbf`) and reads its claims.
fn verified_claims(token: &str, secret: &str) -> Result<Claims, Problem> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    let data = decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|err| {
        let why = match err.kind() {
            ErrorKind::ExpiredSignature => "the token has expired",
            ErrorKind::ImmatureSignature => "the token is not valid yet",
            ErrorKind::InvalidSignature => "the token's signature does not match",
            ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
            ErrorKind::MissingRequiredClaim(_) => "the token has no exp claim",
            _ => "the token is malformed",
        };
        unauthorized(Some("invalid_token"), why)
    })?;
    Ok(data.claims)
}

fn unauthorized(error: Option<&str>, detail: &str) -> Problem {
    let challenge = match error {
        Some(error) => {
            format!("Bearer realm=\"api\", error=\"{error}\", error_description=\"{detail}\"")
        }
        None => "Bearer realm=\"api\"".to_owned(),
    };
    Problem::new(401)
        .kind("unauthorized")
        .detail(detail)
        .header("www-authenticate", challenge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const SECRET: &str = "a-test-secret-of-reasonable-length";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn roles_come_from_valid_tokens() {
        for (name, role) in [
            ("anon", Role::Anon),
            ("authenticated", Role::Authenticated),
            ("service_role", Role::ServiceRole),
        ] {
            let t = token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"role": name, "exp": now() + 60}),
            );
            assert_eq!(role_of(&t, SECRET).unwrap(), role);
        }
        assert!(Role::Anon < Role::Authenticated && Role::Authenticated < Role::ServiceRole);
    }

    #[test]
    fn bad_tokens_are_401() {
        let exp = now() + 60;
        let cases = [
            token(
                Algorithm::HS256,
                "another-secret",
                serde_json::json!({"role": "anon", "exp": exp}),
            ),
            token(
                Algorithm::HS384,
                SECRET,
                serde_json::json!({"role": "anon", "exp": exp}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"role": "anon", "exp": now() - 3600}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"role": "anon", "exp": exp, "nbf": now() + 3600}),
            ),
            token(
                Algorithm::HS256,
                SECRET,
                serde_json::json!({"role": "anon"}),
            ),
            // alg none: header {"alg":"none"}, no signature.
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.".to_owned(),
            "not.a.jwt".to_owned(),
        ];
        for t in cases {
            let problem = role_of(&t, SECRET).unwrap_err();
            assert_eq!(problem.status, 401, "{t}");
            assert!(problem.headers.iter().any(|(k, _)| k == "www-authenticate"));
        }
    }

    #[test]
    fn unknown_roles_are_403() {
        let t = token(
            Algorithm::HS256,
            SECRET,
            serde_json::json!({"role": "supabase_admin", "exp": now() + 60}),
        );
        assert_eq!(role_of(&t, SECRET).unwrap_err().status, 403);
    }
}
