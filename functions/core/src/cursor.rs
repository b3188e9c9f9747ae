//! Opaque pagination cursors: base64url of a small JSON document, so that
//! clients cannot come to depend on their insides.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("cursors serialise"))
}

/// Decodes the `field` query parameter as a cursor.
pub fn decode<T: DeserializeOwned>(field: &str, text: &str) -> Result<T, Problem> {
    let invalid = || {
        Problem::bad_request(
            field,
            "is not a cursor this API handed out; start again without it",
        )
    };
    if text.len() > 512 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let text = encode(&(42_i32, "x"));
        assert_eq!(
            decode::<(i32, String)>("next", &text).unwrap(),
            (42, "x".to_owned())
        );
        for bad in ["", "!!!", "eyJ9", &"A".repeat(600)] {
            assert_eq!(
                decode::<(i32, String)>("cursor", bad).unwrap_err().status,
                400
            );
        }
    }
}
