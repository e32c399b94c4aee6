//! Base64 (HTTP Basic credentials, WinRM streams, SSH fingerprints), by the
//! `base64` crate, which ureq already builds. XML escaping is in
//! [`crate::xml`].

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};

/// Standard base64 with padding (RFC 4648).
pub fn base64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard base64, with or without padding, ignoring whitespace
/// (line breaks in long values); None on anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.split_ascii_whitespace().collect();
    STANDARD_PAD_INDIFFERENT.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        let all: Vec<u8> = (0..=255).collect();
        for n in 0..all.len() {
            assert_eq!(
                base64_decode(&base64_encode(&all[..n])).as_deref(),
                Some(&all[..n])
            );
        }
        assert_eq!(
            base64_decode("Zm9v\r\nYmFy").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(base64_decode("Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Zg=x"), None);
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zm9v!"), None);
    }
}
