//! Credentials shaped like a Supabase project's, generated afresh: what
//! `cargo xtask up` hands a developer and what the tests sign with, so that
//! both exercise the path a real project takes.
//!
//! - [`SigningKey`]: an ES256 (P-256) or RS256 key pair with a `kid`; its
//!   public half as a JWK, and tokens signed with it.
//! - [`jwks`]: the JSON Web Key Set of some keys, as Supabase publishes it.
//! - [`ApiKeys`]: an `sb_secret_…` / `sb_publishable_…` pair and the
//!   SHA-256 digests the app is configured with.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The roles the API knows, least privileged first.
pub const ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a key: {0}")]
    Generate(String),
    #[error("signing a token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A key pair that signs tokens, named by its `kid`.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A new P-256 key for ES256, the algorithm Supabase signs with by default.
    pub fn es256(kid: &str) -> Result<SigningKey, Error> {
        let secret = p256::SecretKey::random(&mut OsRng);
        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(Error::Generate("a P-256 point without coordinates".into()));
        };
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| Error::Generate(e.to_string()))?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
        })
    }

    /// A new 2048-bit RSA key for RS256.
    pub fn rs256(kid: &str) -> Result<SigningKey, Error> {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048)
            .map_err(|e| Error::Generate(e.to_string()))?;
        let der = private
            .to_pkcs1_der()
            .map_err(|e| Error::Generate(e.to_string()))?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
            }),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// `claims` signed with this key, the header naming its `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String, Error> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// A token for `role` valid for `secs` seconds, shaped like Supabase's
    /// (a signed-in user's carries a `sub` and the `authenticated` audience).
    pub fn token(&self, role: &str, secs: u64) -> Result<String, Error> {
        self.sign(&role_claims(role, secs))
    }
}

/// Claims of a token for `role`, valid from now for `secs` seconds.
pub fn role_claims(role: &str, secs: u64) -> Value {
    let now = now();
    let mut claims = json!({"iss": "local-dev", "role": role, "iat": now, "exp": now + secs});
    if role == "authenticated" {
        claims["sub"] = json!("00000000-0000-0000-0000-000000000001");
        claims["aud"] = json!("authenticated");
    }
    claims
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The JSON Web Key Set of `keys`, as Supabase serves it.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// `claims` signed with HS256 and `secret` (the legacy JWT secret).
pub fn hs256(secret: &str, claims: &Value) -> Result<String, Error> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A project's pair of API keys.
pub struct ApiKeys {
    /// `sb_secret_…`: the service role.
    pub secret: String,
    /// `sb_publishable_…`: anon.
    pub publishable: String,
}

impl ApiKeys {
    pub fn generate() -> ApiKeys {
        ApiKeys {
            secret: format!("sb_secret_{}", random_hex(24)),
            publishable: format!("sb_publishable_{}", random_hex(24)),
        }
    }
}

/// The hex SHA-256 of a key, as the app's `api_*_keys_sha256` variables hold it.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What a Supabase project made this year authenticates with: an ES256
/// signing key, published in the app's JWKS, and a pair of API keys of
/// which the app holds only the digests; no legacy JWT secret.
pub struct Credentials {
    pub signing: SigningKey,
    pub api: ApiKeys,
}

impl Credentials {
    /// New keys; `kid` names the signing key.
    pub fn generate(kid: &str) -> Result<Credentials, Error> {
        Ok(Credentials {
            signing: SigningKey::es256(kid)?,
            api: ApiKeys::generate(),
        })
    }

    /// The app's authentication variables (`[variables]` of spin.toml).
    pub fn app_variables(&self) -> [(&'static str, String); 3] {
        [
            ("jwt_jwks", jwks(&[&self.signing])),
            ("api_secret_keys_sha256", sha256_hex(&self.api.secret)),
            (
                "api_publishable_keys_sha256",
                sha256_hex(&self.api.publishable),
            ),
        ]
    }

    /// A token for `role` valid for `secs` seconds.
    pub fn token(&self, role: &str, secs: u64) -> Result<String, Error> {
        self.signing.token(role, secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_their_own_tokens_through_their_jwk() {
        for key in [
            SigningKey::es256("a").unwrap(),
            SigningKey::rs256("b").unwrap(),
        ] {
            let token = key.token("anon", 60).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(key.kid()));
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks(&[&key])).unwrap();
            let decoding =
                jsonwebtoken::DecodingKey::from_jwk(set.find(key.kid()).unwrap()).unwrap();
            let mut validation = jsonwebtoken::Validation::new(key.algorithm());
            validation.validate_aud = false;
            let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
            assert_eq!(data.claims["role"], "anon");
        }
    }

    #[test]
    fn api_keys_have_supabase_prefixes_and_differ() {
        let (a, b) = (ApiKeys::generate(), ApiKeys::generate());
        assert!(a.secret.starts_with("sb_secret_") && a.publishable.starts_with("sb_publishable_"));
        assert_ne!(a.secret, b.secret);
        assert_eq!(sha256_hex("abc").len(), 64);
    }
}
