//! WinRM message encryption over HTTP (MS-WSMV 2.2.9.1.1, "Negotiate
//! Encrypted Message"): a sealed SOAP message travels as a two-part
//! `multipart/encrypted` body whose `protocol` is
//! `application/HTTP-SPNEGO-session-encrypted`:
//!
//! ```text
//! --Encrypted Boundary\r\n
//! \tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n
//! \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=N\r\n
//! --Encrypted Boundary\r\n
//! \tContent-Type: application/octet-stream\r\n
//! LEN(u32, little-endian) SIGNATURE(LEN bytes) SEALED(N bytes)
//! --Encrypted Boundary--\r\n
//! ```
//!
//! (2.2.9.1.1.2.1 the first part, 2.2.9.1.1.2.2 the second; for NTLM the
//! header is the 16-byte MS-NLMP message signature and the sealed data is
//! as long as the plain message, RC4 being a stream cipher.) The reader
//! takes the sealed bytes by that length, never by looking for the
//! boundary, which sealed bytes may contain.

use super::auth::{Context, SIGNATURE_LEN};

/// The boundary Windows and its clients use.
const BOUNDARY: &str = "Encrypted Boundary";
/// The `protocol` of a Negotiate-encrypted body.
pub const PROTOCOL: &str = "application/HTTP-SPNEGO-session-encrypted";
/// The media type of the plain message inside.
const ORIGINAL_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// The HTTP Content-Type of an encrypted body.
pub fn content_type() -> String {
    format!("multipart/encrypted;protocol=\"{PROTOCOL}\";boundary=\"{BOUNDARY}\"")
}

/// True when a response's Content-Type says its body is encrypted.
pub fn is_encrypted(content_type: &str) -> bool {
    let t = content_type.to_ascii_lowercase();
    t.starts_with("multipart/encrypted") && t.contains(&PROTOCOL.to_ascii_lowercase())
}

/// Seals `plain` with `ctx` into an encrypted body.
pub fn wrap(ctx: &mut Context, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (signature, sealed) = ctx.seal(plain)?;
    let mut body = Vec::with_capacity(plain.len() + 256);
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\n\tContent-Type: {PROTOCOL}\r\n\
             \tOriginalContent: type={ORIGINAL_TYPE};Length={}\r\n\
             --{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n",
            plain.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(&(SIGNATURE_LEN as u32).to_le_bytes());
    body.extend_from_slice(&signature);
    body.extend_from_slice(&sealed);
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    Ok(body)
}

/// The signature and sealed bytes of an encrypted body, checked for
/// shape; Err says what is wrong, in a sentence.
pub fn split(body: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let head = format!("--{BOUNDARY}\r\n");
    let rest = body
        .strip_prefix(head.as_bytes())
        .ok_or("the encrypted body does not start with its boundary")?;
    let octets = b"\tContent-Type: application/octet-stream\r\n";
    let at = find(rest, octets).ok_or("the encrypted body has no application/octet-stream part")?;
    let first = std::str::from_utf8(&rest[..at])
        .map_err(|_| "the first part of the encrypted body is not text")?;
    if !first
        .to_ascii_lowercase()
        .contains(&PROTOCOL.to_ascii_lowercase())
    {
        return Err(format!("the first part does not name {PROTOCOL}"));
    }
    let length: usize = first
        .split_once("Length=")
        .map(|(_, n)| n.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
        .and_then(|n| n.parse().ok())
        .ok_or("the first part has no OriginalContent Length")?;
    let data = &rest[at + octets.len()..];
    let Some((len, data)) = data.split_first_chunk::<4>() else {
        return Err("the encrypted part is shorter than its length field".into());
    };
    let sig_len = u32::from_le_bytes(*len) as usize;
    if sig_len > data.len() || length > data.len() - sig_len {
        return Err(format!(
            "the encrypted part is shorter than its signature ({sig_len} bytes) and the message ({length} bytes)"
        ));
    }
    let (signature, data) = data.split_at(sig_len);
    let (sealed, tail) = data.split_at(length);
    if !tail.starts_with(format!("--{BOUNDARY}").as_bytes()) {
        return Err("the sealed message is not followed by the boundary".into());
    }
    Ok((signature, sealed))
}

/// Unseals an encrypted body with `ctx`.
pub fn unwrap(ctx: &mut Context, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (signature, sealed) = split(body).map_err(anyhow::Error::msg)?;
    ctx.unseal(signature, sealed)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(sig: &[u8], sealed: &[u8], length: usize) -> Vec<u8> {
        let mut b = format!(
            "--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\
             \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}\r\n\
             --Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n"
        )
        .into_bytes();
        b.extend_from_slice(&(sig.len() as u32).to_le_bytes());
        b.extend_from_slice(sig);
        b.extend_from_slice(sealed);
        b.extend_from_slice(b"--Encrypted Boundary--\r\n");
        b
    }

    #[test]
    fn split_takes_the_sealed_bytes_by_length() {
        // Sealed bytes that hold the boundary itself.
        let sealed = b"x--Encrypted Boundary--\r\ny";
        let sig = [7u8; 16];
        let b = body(&sig, sealed, sealed.len());
        assert_eq!(split(&b), Ok((&sig[..], &sealed[..])));
        assert!(split(&body(&sig, sealed, sealed.len() + 1)).is_err());
        assert!(split(&body(&sig, sealed, sealed.len() - 1)).is_err());
        assert!(split(&b[1..]).is_err());
        assert!(split(&b[..b.len() - 40]).is_err());
        let other = String::from_utf8_lossy(&b).replace("SPNEGO", "CredSSP");
        assert!(split(other.as_bytes()).is_err());
    }

    #[test]
    fn content_types() {
        assert!(is_encrypted(&content_type()));
        assert!(is_encrypted(
            "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";boundary=\"Encrypted Boundary\""
        ));
        assert!(!is_encrypted("application/soap+xml;charset=UTF-8"));
    }
}
