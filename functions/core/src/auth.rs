//! Supabase authentication as a project made in 2025 or later has it.
//!
//! - User access tokens (JWTs) signed with the project's asymmetric signing
//!   keys, ES256 or RS256, each naming its key with `kid`; the public keys
//!   come from the project's JWKS (`/auth/v1/.well-known/jwks.json`), given
//!   to the app whole in the `jwt_jwks` variable, so a rotation is a new
//!   value of the variable, not new code. HS256 tokens signed with the
//!   legacy JWT secret are accepted only when `jwt_secret` is set.
//! - The API keys `sb_secret_…` (the service role) and `sb_publishable_…`
//!   (anon), in the `apikey` header or as the Bearer token. They are not
//!   JWTs: the app holds only their SHA-256 and compares in constant time.
//!   A user's JWT in `Authorization` decides when both are sent, as
//!   Supabase's gateway does.
//!
//! The `role` claim of a verified token decides what the caller may do.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::http::Request;
use subtle::ConstantTimeEq;

use crate::config;
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

/// The prefix of Supabase's secret API keys (the service role).
pub const SECRET_KEY_PREFIX: &str = "sb_secret_";
/// The prefix of Supabase's publishable API keys (anon).
pub const PUBLISHABLE_KEY_PREFIX: &str = "sb_publishable_";

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// What the app trusts, from its Spin variables.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// The legacy HS256 JWT secret, where the project still has one.
    pub hs256_secret: Option<String>,
    /// The project's signing keys.
    pub jwks: Option<JwkSet>,
    /// The `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` every token must carry, when set.
    pub audience: Option<String>,
    /// SHA-256 of each accepted `sb_secret_…` key.
    pub secret_keys: Vec<[u8; 32]>,
    /// SHA-256 of each accepted `sb_publishable_…` key.
    pub publishable_keys: Vec<[u8; 32]>,
}

impl Keys {
    /// Reads `jwt_jwks`, `jwt_secret`, `jwt_issuer`, `jwt_audience`,
    /// `api_secret_keys_sha256` and `api_publishable_keys_sha256`. A value
    /// that cannot be read, or no way at all to verify a token, is the
    /// operator's mistake: a 500 that names the variable.
    pub fn load() -> Result<Keys, Problem> {
        let jwks = config::optional("jwt_jwks")
            .map(|text| parse_jwks(&text))
            .transpose()
            .map_err(|e| config::misconfigured(&e))?;
        let keys = Keys {
            hs256_secret: config::optional("jwt_secret"),
            jwks,
            issuer: config::optional("jwt_issuer"),
            audience: config::optional("jwt_audience"),
            secret_keys: digests("api_secret_keys_sha256")?,
            publishable_keys: digests("api_publishable_keys_sha256")?,
        };
        if keys.hs256_secret.is_none() && keys.jwks.is_none() {
            return Err(config::misconfigured(
                "neither jwt_jwks (the project's JWKS) nor jwt_secret (its legacy JWT secret) is set",
            ));
        }
        Ok(keys)
    }
}

/// A JWKS document, or what is wrong with it.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    serde_json::from_str::<JwkSet>(text)
        .map_err(|e| format!("jwt_jwks is not a JSON Web Key Set ({e})"))
}

/// A comma-separated list of lowercase or uppercase hex SHA-256 digests.
fn digests(variable: &str) -> Result<Vec<[u8; 32]>, Problem> {
    let Some(text) = config::optional(variable) else {
        return Ok(Vec::new());
    };
    parse_digests(&text).map_err(|item| {
        config::misconfigured(&format!(
            "{variable} holds {item:?}, not the hex SHA-256 of a key"
        ))
    })
}

fn parse_digests(text: &str) -> Result<Vec<[u8; 32]>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            hex::decode(item)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| item.chars().take(8).chain("…".chars()).collect())
        })
        .collect()
}

#[derive(Deserialize)]
struct Claims {
    role: Option<String>,
    sub: Option<String>,
    email: Option<String>,
}

/// What a request presents.
enum Credential<'a> {
    Jwt(&'a str),
    ApiKey(&'a str),
}

fn is_api_key(value: &str) -> bool {
    value.starts_with(SECRET_KEY_PREFIX) || value.starts_with(PUBLISHABLE_KEY_PREFIX)
}

/// The credential that decides: a JWT in `Authorization`, else an API key
/// there or in `apikey`.
fn credential(req: &Request) -> Result<Credential<'_>, Problem> {
    let header = |name| {
        req.header(name)
            .and_then(|value| value.as_str())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let bearer = match header("authorization") {
        None => None,
        Some(value) => Some(
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .ok_or_else(|| {
                    unauthorized(
                        Some("invalid_request"),
                        "the Authorization scheme must be Bearer",
                    )
                })?,
        ),
    };
    match (bearer, header("apikey")) {
        (Some(token), _) if !is_api_key(token) => Ok(Credential::Jwt(token)),
        (Some(key), _) | (None, Some(key)) => Ok(Credential::ApiKey(key)),
        (None, None) => Err(unauthorized(
            None,
            "send Authorization: Bearer <JWT>, or the project's API key in the apikey header",
        )),
    }
}

/// The caller's role, or 401 with `WWW-Authenticate` (403 for a verified
/// token whose role this API does not know).
pub fn authenticate(req: &Request, keys: &Keys) -> Result<Role, Problem> {
    match credential(req)? {
        Credential::Jwt(token) => role_of(token, keys),
        Credential::ApiKey(key) => role_of_key(key, keys),
    }
}

/// The role an API key stands for, when it is one of the project's.
pub fn role_of_key(key: &str, keys: &Keys) -> Result<Role, Problem> {
    let (role, accepted) = if key.starts_with(SECRET_KEY_PREFIX) {
        (Role::ServiceRole, &keys.secret_keys)
    } else if key.starts_with(PUBLISHABLE_KEY_PREFIX) {
        (Role::Anon, &keys.publishable_keys)
    } else {
        return Err(unauthorized(
            Some("invalid_token"),
            "the apikey header must hold an sb_secret_ or sb_publishable_ key",
        ));
    };
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    // Every digest is compared, so the time taken says nothing of which.
    let matched = accepted
        .iter()
        .fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&digest));
    if bool::from(matched) {
        Ok(role)
    } else {
        Err(unauthorized(
            Some("invalid_token"),
            "the API key is not one of this project's keys",
        ))
    }
}

/// Verifies `token` and reads its role.
pub fn role_of(token: &str, keys: &Keys) -> Result<Role, Problem> {
    let name = verified_claims(token, keys)?
        .role
        .ok_or_else(|| unauthorized(Some("invalid_token"), "the token has no role claim"))?;
    Role::parse(&name).ok_or_else(|| {
        Problem::new(403)
            .kind("forbidden")
            .detail(format!("the role {name:?} has no access to this API"))
    })
}

/// The user a request's verified token names: its `email` claim, else its
/// `sub`; `None` for callers that name nobody (an API key, or a token of
/// the anon or service role without a `sub`). Email first because it is
/// what assessors recognise in a list of rankings; Supabase signs both
/// for a signed-in user.
pub fn user_of(req: &Request, keys: &Keys) -> Result<Option<String>, Problem> {
    let Credential::Jwt(token) = credential(req)? else {
        return Ok(None);
    };
    let claims = verified_claims(token, keys)?;
    Ok(claims
        .email
        .filter(|e| !e.trim().is_empty())
        .or(claims.sub.filter(|s| !s.trim().is_empty())))
}

/// The key that verifies a token signed with `alg` and naming `kid`.
fn decoding_key(alg: Algorithm, kid: Option<&str>, keys: &Keys) -> Result<DecodingKey, Problem> {
    let invalid = |why: &str| unauthorized(Some("invalid_token"), why);
    match alg {
        Algorithm::HS256 => keys
            .hs256_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()))
            .ok_or_else(|| {
                invalid("HS256 tokens are not accepted: sign with the project's signing keys")
            }),
        Algorithm::ES256 | Algorithm::RS256 => {
            let jwks = keys
                .jwks
                .as_ref()
                .ok_or_else(|| invalid("the token must be signed with HS256"))?;
            let kid = kid.ok_or_else(|| invalid("the token names no signing key (kid)"))?;
            let jwk = jwks.find(kid).ok_or_else(|| {
                invalid("the token's signing key (kid) is not one of the project's")
            })?;
            let wanted = if alg == Algorithm::ES256 {
                KeyAlgorithm::ES256
            } else {
                KeyAlgorithm::RS256
            };
            // The key's own type (and algorithm, when it names one) must be
            // the token's: a header cannot talk a key into another use.
            let fits = match (&jwk.algorithm, alg) {
                (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
                    ec.curve == EllipticCurve::P256
                }
                (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
                _ => false,
            } && jwk.common.key_algorithm.is_none_or(|a| a == wanted);
            if !fits {
                return Err(invalid(
                    "the token's algorithm does not match its signing key",
                ));
            }
            DecodingKey::from_jwk(jwk)
                .map_err(|_| invalid("the project's signing key cannot be read"))
        }
        _ => Err(invalid(
            "the token must be signed with ES256, RS256 or HS256",
        )),
    }
}

/// Verifies `token` (signature, `exp`, `nbf`, and `iss`/`aud` when
/// configured) and reads its claims.
fn verified_claims(token: &str, keys: &Keys) -> Result<Claims, Problem> {
    use jsonwebtoken::errors::ErrorKind;

    crate::es256::install();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| unauthorized(Some("invalid_token"), "the token is malformed"))?;
    let key = decoding_key(header.alg, header.kid.as_deref(), keys)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    // A configured claim must be present too: the library checks `iss`
    // and `aud` only where a token carries them.
    match &keys.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &keys.issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|err| {
        let why = match err.kind() {
            ErrorKind::ExpiredSignature => "the token has expired",
            ErrorKind::ImmatureSignature => "the token is not valid yet",
            ErrorKind::InvalidSignature => "the token's signature does not match",
            ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its signing key",
            ErrorKind::InvalidIssuer => "the token was issued by another project",
            ErrorKind::InvalidAudience => "the token is meant for another audience",
            ErrorKind::MissingRequiredClaim(_) => {
                "the token lacks a required claim (exp, iss or aud)"
            }
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
    use dev_keys::{ApiKeys, SigningKey, hs256, jwks, now, role_claims, sha256_hex};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-reasonable-length";

    struct Project {
        current: SigningKey,
        previous: SigningKey,
        rsa: SigningKey,
        removed: SigningKey,
        api: ApiKeys,
    }

    fn project() -> &'static Project {
        static PROJECT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
        PROJECT.get_or_init(|| Project {
            current: SigningKey::es256("current").unwrap(),
            previous: SigningKey::es256("previous").unwrap(),
            rsa: SigningKey::rs256("rsa").unwrap(),
            removed: SigningKey::es256("removed").unwrap(),
            api: ApiKeys::generate(),
        })
    }

    /// Keys as a project with asymmetric keys (current, previous and an
    /// RSA one), no legacy secret, and one pair of API keys configures them.
    fn keys() -> Keys {
        let p = project();
        Keys {
            jwks: Some(parse_jwks(&jwks(&[&p.current, &p.previous, &p.rsa])).unwrap()),
            secret_keys: vec![digest(&p.api.secret)],
            publishable_keys: vec![digest(&p.api.publishable)],
            ..Keys::default()
        }
    }

    fn digest(key: &str) -> [u8; 32] {
        parse_digests(&sha256_hex(key)).unwrap()[0]
    }

    fn refused(token: &str, keys: &Keys) -> Problem {
        let problem = role_of(token, keys).unwrap_err();
        assert_eq!(problem.status, 401, "{token}");
        assert!(problem.headers.iter().any(|(k, _)| k == "www-authenticate"));
        problem
    }

    #[test]
    fn es256_and_rs256_tokens_of_the_project_keys_are_accepted() {
        let p = project();
        for key in [&p.current, &p.previous, &p.rsa] {
            for (name, role) in [
                ("anon", Role::Anon),
                ("authenticated", Role::Authenticated),
                ("service_role", Role::ServiceRole),
            ] {
                assert_eq!(
                    role_of(&key.token(name, 60).unwrap(), &keys()).unwrap(),
                    role
                );
            }
        }
        assert!(Role::Anon < Role::Authenticated && Role::Authenticated < Role::ServiceRole);
    }

    #[test]
    fn tokens_the_project_did_not_sign_are_refused() {
        let p = project();
        let keys = keys();
        // A key removed from the JWKS (revoked after a rotation).
        refused(&p.removed.token("anon", 60).unwrap(), &keys);
        // A known kid with another key's signature.
        let other = SigningKey::es256("current").unwrap();
        refused(&other.token("service_role", 60).unwrap(), &keys);
        // No kid.
        let no_kid = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &role_claims("anon", 60),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let problem = refused(&no_kid, &keys);
        assert!(
            problem.detail.as_deref().unwrap().contains("HS256"),
            "{problem:?}"
        );
        // Expired, and not valid yet.
        refused(
            &p.current
                .sign(&json!({"role": "anon", "exp": now() - 3600}))
                .unwrap(),
            &keys,
        );
        refused(
            &p.current
                .sign(&json!({"role": "anon", "exp": now() + 3600, "nbf": now() + 3600}))
                .unwrap(),
            &keys,
        );
        refused(&p.current.sign(&json!({"role": "anon"})).unwrap(), &keys);
        // alg none, and garbage.
        refused(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.",
            &keys,
        );
        refused("not.a.jwt", &keys);
    }

    #[test]
    fn an_algorithm_that_does_not_fit_the_key_is_refused() {
        let p = project();
        // An RS256 token naming the EC key, and an ES256 one naming the RSA key.
        for (key, kid) in [(&p.rsa, "current"), (&p.current, "rsa")] {
            let token = relabel(&key.token("service_role", 60).unwrap(), kid);
            let problem = refused(&token, &keys());
            assert!(
                problem
                    .detail
                    .as_deref()
                    .unwrap()
                    .contains("does not match"),
                "{problem:?}"
            );
        }
        // HS256 signed with a public key's text: refused, as no secret is set.
        let hs = hs256(
            &p.current.jwk().to_string(),
            &role_claims("service_role", 60),
        )
        .unwrap();
        refused(&hs, &keys());
    }

    /// `token` with its header's kid replaced (the signature then belongs
    /// to the old header, but the check must fail before it matters).
    fn relabel(token: &str, kid: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (header, rest) = token.split_once('.').unwrap();
        let mut header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        header["kid"] = json!(kid);
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
    }

    #[test]
    fn the_legacy_secret_verifies_hs256_only_when_set() {
        let token = hs256(SECRET, &role_claims("authenticated", 60)).unwrap();
        refused(&token, &keys());
        let legacy = Keys {
            hs256_secret: Some(SECRET.into()),
            ..keys()
        };
        assert_eq!(role_of(&token, &legacy).unwrap(), Role::Authenticated);
        refused(
            &hs256("another-secret", &role_claims("anon", 60)).unwrap(),
            &legacy,
        );
        let hs384 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS384),
            &role_claims("anon", 60),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        refused(&hs384, &legacy);
        // The asymmetric keys keep working beside it.
        let es = project().current.token("anon", 60).unwrap();
        assert_eq!(role_of(&es, &legacy).unwrap(), Role::Anon);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let key = &project().current;
        let strict = Keys {
            issuer: Some("https://ref.supabase.co/auth/v1".into()),
            audience: Some("authenticated".into()),
            ..keys()
        };
        let claims = |iss: &str, aud: &str| json!({"role": "authenticated", "exp": now() + 60, "iss": iss, "aud": aud});
        let good = key
            .sign(&claims("https://ref.supabase.co/auth/v1", "authenticated"))
            .unwrap();
        assert_eq!(role_of(&good, &strict).unwrap(), Role::Authenticated);
        refused(
            &key.sign(&claims(
                "https://other.supabase.co/auth/v1",
                "authenticated",
            ))
            .unwrap(),
            &strict,
        );
        refused(
            &key.sign(&claims("https://ref.supabase.co/auth/v1", "anon"))
                .unwrap(),
            &strict,
        );
        refused(
            &key.sign(&json!({"role": "anon", "exp": now() + 60}))
                .unwrap(),
            &strict,
        );
    }

    #[test]
    fn api_keys_map_to_their_roles() {
        let p = project();
        assert_eq!(
            role_of_key(&p.api.secret, &keys()).unwrap(),
            Role::ServiceRole
        );
        assert_eq!(
            role_of_key(&p.api.publishable, &keys()).unwrap(),
            Role::Anon
        );
        let other = ApiKeys::generate();
        assert_eq!(role_of_key(&other.secret, &keys()).unwrap_err().status, 401);
        assert_eq!(
            role_of_key(&other.publishable, &keys()).unwrap_err().status,
            401
        );
        // A publishable key is not a secret one, whatever its digest.
        let swapped = Keys {
            secret_keys: vec![digest(&p.api.publishable)],
            publishable_keys: vec![],
            ..keys()
        };
        assert_eq!(
            role_of_key(&p.api.publishable, &swapped)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(role_of_key("plain-key", &keys()).unwrap_err().status, 401);
    }

    #[test]
    fn unknown_roles_are_403() {
        let t = project().current.token("supabase_admin", 60).unwrap();
        assert_eq!(role_of(&t, &keys()).unwrap_err().status, 403);
    }

    #[test]
    fn digests_are_hex_sha256_lists() {
        let list = format!("{}, {}", sha256_hex("a"), sha256_hex("b").to_uppercase());
        assert_eq!(parse_digests(&list).unwrap().len(), 2);
        assert!(parse_digests("abcd").is_err());
        assert!(parse_digests("").unwrap().is_empty());
    }
}
