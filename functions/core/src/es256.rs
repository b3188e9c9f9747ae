//! ES256 signatures verified with p256 0.14, plugged into `jsonwebtoken`
//! through its `CryptoProvider` hook; every other algorithm stays with
//! jsonwebtoken's own RustCrypto provider.
//!
//! Why: verifying a Supabase access token is the largest cost of a signed-in
//! request. jsonwebtoken 11 verifies ES256 with p256 0.13, which computes
//! u1·G + u2·Q as two constant-time scalar multiplications; p256 0.14
//! interleaves them (a verification handles only public values, so nothing
//! is lost). Measured in Wasmtime 48, one verification of a
//! Supabase-shaped token: 1.11 ms with 0.13, 0.62 ms with 0.14.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::ecdsa::signature::Verifier as _;

/// jsonwebtoken's RustCrypto provider with ES256 verification replaced.
static PROVIDER: CryptoProvider = {
    let theirs = &rust_crypto::DEFAULT_PROVIDER;
    CryptoProvider {
        signer_factory: theirs.signer_factory,
        verifier_factory,
        key_utils: KeyUtils {
            rsa_pub_components_from_private_key: theirs
                .key_utils
                .rsa_pub_components_from_private_key,
            rsa_pub_components_from_public_key: theirs.key_utils.rsa_pub_components_from_public_key,
            ec_pub_components_from_private_key: theirs.key_utils.ec_pub_components_from_private_key,
            ed_pub_components_from_private_key: theirs.key_utils.ed_pub_components_from_private_key,
            compute_digest: theirs.key_utils.compute_digest,
        },
    }
};

/// Makes [`PROVIDER`] the one jsonwebtoken uses; idempotent (a component
/// instance serves one request, a test process many).
pub fn install() {
    // Err means a provider is installed already: this one, as nothing
    // else in the API installs one.
    let _ = PROVIDER.install_default();
}

fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match alg {
        Algorithm::ES256 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.try_get_as_bytes()?)
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            Ok(Box::new(Es256(key)))
        }
        _ => (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key),
    }
}

struct Es256(p256::ecdsa::VerifyingKey);

impl jsonwebtoken::signature::Verifier<Vec<u8>> for Es256 {
    fn verify(
        &self,
        msg: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), jsonwebtoken::signature::Error> {
        // A JWS ES256 signature is r ‖ s, 32 bytes each (RFC 7518 §3.4).
        let signature = p256::ecdsa::Signature::from_slice(signature)
            .map_err(|_| jsonwebtoken::signature::Error::new())?;
        self.0
            .verify(msg, &signature)
            .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtVerifier for Es256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}
