//! Who the WinRM channel is, to the listener: HTTP Basic, or HTTP
//! `Negotiate` (RFC 4559, MS-N2HT) carrying NTLMv2 (MS-NLMP), in SPNEGO
//! (RFC 4178) or bare, with the session keys that then seal every message
//! (see [`super::encryption`]).
//!
//! The cryptography is Devolutions' `sspi` crate (the SSPI calls
//! InitializeSecurityContext, EncryptMessage and DecryptMessage, in Rust):
//! maintained by the company that ships it in its RDP client and gateway,
//! it implements NTLM, SPNEGO and Kerberos and exposes the sealing of an
//! established context, which WinRM's message encryption needs. What was
//! weighed against it: `ntlmclient` builds the three NTLM messages but has
//! no signing or sealing; `ntlmssp` seals, but is a young one-author crate
//! without SPNEGO or key exchange; `libgssapi` (with gss-ntlmssp) would
//! put a C library and its configuration on every management node. The
//! price is `sspi`'s dependencies (about 125 packages, a few minutes of a
//! first build): its Kerberos needs ASN.1, X.509 and RSA code that
//! NTLM does not use. Its TLS, network, DNS and smart-card features stay
//! off.
//!
//! An NTLM context belongs to one TCP connection: the listener forgets it
//! when the connection closes, and answers the next sealed request on a
//! new connection with a 401. The channel then starts over (see
//! [`super::WinRm`]).
//!
//! Secrets: the password goes into `sspi`'s zeroizing `Secret` and into
//! nothing else; the session keys live inside the `sspi` context only,
//! which is dropped with the connection's session and never printed
//! (`Context`'s Debug shows the mechanism alone).

use std::fmt;

use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, CredentialsBuffers,
    DataRepresentation, EncryptionFlags, Negotiate, NegotiateConfig, Ntlm, SecurityBuffer,
    SecurityBufferRef, SecurityStatus, Sspi, SspiImpl, Username,
};

use crate::names::names;
use crate::secret::Secret;
use sspi::ntlm::NtlmConfig;

/// How the WinRM channel authenticates (`auth` of an OS profile: the
/// configuration keeps the name, this channel decodes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// HTTP `Negotiate` with SPNEGO around NTLMv2, every message sealed
    /// (MS-WSMV encryption over HTTP): what Windows accepts as shipped.
    #[default]
    Negotiate,
    /// HTTP `Negotiate` with bare NTLMv2 tokens (no SPNEGO), sealed the
    /// same way: for listeners or proxies that take NTLM only.
    Ntlm,
    /// HTTP Basic: needs Basic enabled on the image, and over plain HTTP
    /// also `allow_unencrypted`.
    Basic,
}

names!(Auth {
    Negotiate => "negotiate",
    Ntlm => "ntlm",
    Basic => "basic",
});

impl std::str::FromStr for Auth {
    type Err = String;

    /// Parses the config spelling: `negotiate`, `ntlm`, `basic`.
    fn from_str(s: &str) -> Result<Auth, String> {
        Auth::from_name(s)
            .ok_or_else(|| format!("unknown WinRM auth `{s}`: use {}", Auth::choices()))
    }
}

/// The HTTP auth scheme Windows offers for NTLM and SPNEGO alike.
pub const NEGOTIATE: &str = "Negotiate";

/// Bytes of an NTLM message signature: the header MS-WSMV puts before
/// the sealed data.
pub const SIGNATURE_LEN: usize = 16;

/// The scheme name an `auth` setting sends.
pub fn scheme(auth: Auth) -> &'static str {
    match auth {
        Auth::Basic => "Basic",
        Auth::Negotiate | Auth::Ntlm => NEGOTIATE,
    }
}

/// One challenge of a `WWW-Authenticate` header: the scheme and, for
/// Negotiate, the base64 token after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub token: Option<String>,
}

/// The challenges in `WWW-Authenticate` values (one header each, or
/// several in one separated by commas): a part whose first word holds no
/// `=` starts a challenge (`Basic realm="WSMAN"`, `Negotiate TlRM...==`),
/// other parts are parameters of the one before.
pub fn challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for v in values {
        for part in v.split(',') {
            let part = part.trim();
            let mut words = part.splitn(2, ' ');
            let Some(first) = words.next().filter(|w| !w.is_empty() && !w.contains('=')) else {
                continue;
            };
            let rest = words.next().map(str::trim).unwrap_or("");
            let token = (!rest.is_empty() && !rest.contains('"') && !rest.contains(' '))
                .then(|| rest.to_string());
            out.push(Challenge {
                scheme: first.to_string(),
                token,
            });
        }
    }
    out
}

/// The Negotiate token among `challenges`, if the listener sent one.
pub fn negotiate_token(challenges: &[Challenge]) -> Option<&str> {
    challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case(NEGOTIATE))
        .and_then(|c| c.token.as_deref())
}

/// True when `challenges` offer `scheme`.
pub fn offers(challenges: &[Challenge], scheme: &str) -> bool {
    challenges
        .iter()
        .any(|c| c.scheme.eq_ignore_ascii_case(scheme))
}

/// The security package of a context.
enum Mech {
    Negotiate(Box<Negotiate>, Option<CredentialsBuffers>),
    Ntlm(Box<Ntlm>, Option<sspi::AuthIdentityBuffers>),
}

/// A client security context (NTLM, bare or in SPNEGO) for one connection.
pub struct Context {
    mech: Mech,
    /// `HTTP/host`, the service principal the context is for.
    target: String,
    done: bool,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.mech {
            Mech::Negotiate(..) => "Negotiate",
            Mech::Ntlm(..) => "NTLM",
        };
        f.debug_struct("Context")
            .field("mech", &name)
            .field("target", &self.target)
            .field("done", &self.done)
            .finish()
    }
}

/// What one handshake step produced.
#[derive(Debug)]
pub struct Step {
    /// The token to send, if any.
    pub token: Vec<u8>,
    /// The context is established: messages can be sealed.
    pub done: bool,
}

/// The flags a WinRM client asks for: message integrity and
/// confidentiality (sealing), as MS-WSMV's encryption needs.
fn flags() -> ClientRequestFlags {
    ClientRequestFlags::CONFIDENTIALITY
        | ClientRequestFlags::INTEGRITY
        | ClientRequestFlags::ALLOCATE_MEMORY
}

/// This node's host name, as NTLM's workstation field (Windows logs it).
fn workstation() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "reimage".into())
}

impl Context {
    /// A context for `user` with `password` toward `host`: SPNEGO around
    /// NTLM for [`Auth::Negotiate`], bare NTLM for [`Auth::Ntlm`]. `user`
    /// may name a domain (`DOMAIN\user`, `user@domain`); a bare name is a
    /// local account of the computer.
    pub fn new(auth: Auth, user: &str, password: &Secret, host: &str) -> anyhow::Result<Context> {
        let username = Username::parse(user)
            .map_err(|e| anyhow::anyhow!("the WinRM user {user:?} is not a user name: {e}"))?;
        let identity = AuthIdentity {
            username,
            password: password.expose().to_string().into(),
        };
        let target = format!("HTTP/{host}");
        let ws = workstation();
        let mech = match auth {
            Auth::Ntlm => {
                let mut ntlm = Ntlm::with_config(NtlmConfig::new(ws));
                let creds = ntlm
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&identity)
                    .execute(&mut ntlm)
                    .map_err(sspi_error)?
                    .credentials_handle;
                Mech::Ntlm(Box::new(ntlm), creds)
            }
            Auth::Negotiate | Auth::Basic => {
                // NTLM only: Kerberos would need a KDC and its transport
                // (see the module's and the man page's notes).
                let config = NegotiateConfig::new(
                    Box::new(NtlmConfig::new(ws.clone())),
                    Some("ntlm,!kerberos,!pku2u".into()),
                    ws,
                );
                let mut nego = Negotiate::new_client(config).map_err(sspi_error)?;
                let data = Credentials::AuthIdentity(identity);
                let creds = nego
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&data)
                    .execute(&mut nego)
                    .map_err(sspi_error)?
                    .credentials_handle;
                Mech::Negotiate(Box::new(nego), creds)
            }
        };
        Ok(Context {
            mech,
            target,
            done: false,
        })
    }

    /// The next token: the first without `input`, then one for each token
    /// the listener sent back.
    pub fn step(&mut self, input: Option<&[u8]>) -> anyhow::Result<Step> {
        let target = self.target.clone();
        let (token, status) = match &mut self.mech {
            Mech::Negotiate(c, creds) => step(c.as_mut(), creds, &target, input)?,
            Mech::Ntlm(c, creds) => step(c.as_mut(), creds, &target, input)?,
        };
        self.done = !matches!(
            status,
            SecurityStatus::ContinueNeeded | SecurityStatus::CompleteAndContinue
        );
        Ok(Step {
            token,
            done: self.done,
        })
    }

    /// True once the handshake finished on this side.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Seals `data` (MS-NLMP EncryptMessage): the signature, then the
    /// encrypted bytes (as long as `data`).
    pub fn seal(&mut self, data: &[u8]) -> anyhow::Result<([u8; SIGNATURE_LEN], Vec<u8>)> {
        let mut signature = [0u8; SIGNATURE_LEN];
        let mut buf = data.to_vec();
        let mut bufs = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut buf),
        ];
        let r = match &mut self.mech {
            Mech::Negotiate(c, _) => c.encrypt_message(EncryptionFlags::empty(), &mut bufs),
            Mech::Ntlm(c, _) => c.encrypt_message(EncryptionFlags::empty(), &mut bufs),
        };
        r.map_err(sspi_error)?;
        Ok((signature, buf))
    }

    /// Unseals what the listener sealed (DecryptMessage): checks the
    /// signature and the sequence number, returns the plain bytes.
    pub fn unseal(&mut self, signature: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut sig = signature.to_vec();
        let mut buf = sealed.to_vec();
        let mut bufs = [
            SecurityBufferRef::token_buf(&mut sig),
            SecurityBufferRef::data_buf(&mut buf),
        ];
        let r = match &mut self.mech {
            Mech::Negotiate(c, _) => c.decrypt_message(&mut bufs),
            Mech::Ntlm(c, _) => c.decrypt_message(&mut bufs),
        };
        r.map_err(sspi_error)?;
        Ok(bufs[1].data().to_vec())
    }
}

/// One InitializeSecurityContext call.
fn step<C: Sspi + SspiImpl>(
    ctx: &mut C,
    creds: &mut C::CredentialsHandle,
    target: &str,
    input: Option<&[u8]>,
) -> anyhow::Result<(Vec<u8>, SecurityStatus)> {
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    let mut input_bufs = input.map(|t| vec![SecurityBuffer::new(t.to_vec(), BufferType::Token)]);
    let mut builder = ctx
        .initialize_security_context()
        .with_credentials_handle(creds)
        .with_context_requirements(flags())
        .with_target_data_representation(DataRepresentation::Native)
        .with_target_name(target)
        .with_output(&mut output);
    if let Some(i) = input_bufs.as_mut() {
        builder = builder.with_input(i);
    }
    let result = ctx
        .initialize_security_context_impl(&mut builder)
        .and_then(|mut g| g.resolve_to_result())
        .map_err(sspi_error)?;
    if matches!(
        result.status,
        SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded
    ) {
        ctx.complete_auth_token(&mut output).map_err(sspi_error)?;
    }
    let token = output
        .into_iter()
        .next()
        .map(|b| b.buffer)
        .unwrap_or_default();
    Ok((token, result.status))
}

/// An `sspi` error as text: its kind and description (never a key or a
/// password; `sspi` puts neither in its messages).
fn sspi_error(e: sspi::Error) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.error_type, e.description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_split_by_scheme() {
        let c = challenges(["Negotiate", "Basic realm=\"WSMAN\", Kerberos"]);
        let names: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(names, ["Negotiate", "Basic", "Kerberos"]);
        assert!(c.iter().all(|c| c.token.is_none()));
        assert!(offers(&c, "basic") && offers(&c, "NEGOTIATE") && !offers(&c, "NTLM"));
        let c = challenges(["Negotiate TlRMTVNTUAACAAAA=="]);
        assert_eq!(negotiate_token(&c), Some("TlRMTVNTUAACAAAA=="));
        assert!(challenges([""]).is_empty());
        assert!(challenges(["realm=\"x\""]).is_empty());
    }

    #[test]
    fn a_context_starts_with_an_ntlm_negotiate_message() {
        let pw = Secret::new("pw");
        let mut c = Context::new(Auth::Ntlm, "Administrator", &pw, "pc7").expect("ntlm");
        let s = c.step(None).expect("first step");
        assert!(!s.done);
        assert!(s.token.starts_with(b"NTLMSSP\0\x01\0\0\0"), "{:?}", s.token);
        let mut c = Context::new(Auth::Negotiate, ".\\Administrator", &pw, "pc7").expect("spnego");
        let s = c.step(None).expect("first step");
        // SPNEGO: an [APPLICATION 0] GSS-API token around NegTokenInit.
        assert_eq!(s.token.first(), Some(&0x60));
        assert!(format!("{c:?}").contains("Negotiate"));
    }
}

/// The published NTLMv2 example, MS-NLMP section 4.2.4, run through
/// `sspi`: the test plays the client with the example's inputs (user
/// "User", domain "Domain", password "Password", client challenge 0xAA×8,
/// RandomSessionKey 0x55×16) against `sspi`'s acceptor, whose server
/// challenge is its own; the session key the acceptor derives is then the
/// example's, so its DecryptMessage must open the example's sealed
/// "Plaintext" (4.2.4.4) and accept its signature. The client's arithmetic is checked against the example's own values
/// (4.2.4.1.1, 4.2.4.2.2, 4.2.4.1.2 and 4.2.4.2.3) first.
#[cfg(test)]
mod ms_nlmp_4_2_4 {
    use hmac::{Hmac, KeyInit, Mac};
    use md4::{Digest, Md4};
    use md5::Md5;
    use rc4::StreamCipher;
    use sspi::{
        AuthIdentity, BufferType, CredentialUse, DataRepresentation, Ntlm, SecurityBuffer,
        SecurityBufferRef, SecurityStatus, ServerRequestFlags, Sspi, SspiImpl, Username,
    };

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn hmac_md5(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Md5> as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    fn rc4(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = <rc4::Rc4 as rc4::KeyInit>::new_from_slice(key).expect("16-byte key");
        let mut out = data.to_vec();
        c.apply_keystream(&mut out);
        out
    }

    /// NTOWFv2("Password", "User", "Domain").
    fn ntowfv2() -> Vec<u8> {
        let nt = Md4::digest(utf16("Password"));
        hmac_md5(&nt, &utf16(&("USER".to_string() + "Domain")))
    }

    /// NTLMv2's temp: the blob after NTProofStr.
    fn temp(time: u64, av_pairs: &[u8]) -> Vec<u8> {
        let mut t = vec![1, 1, 0, 0, 0, 0, 0, 0];
        t.extend_from_slice(&time.to_le_bytes());
        t.extend_from_slice(&[0xAA; 8]);
        t.extend_from_slice(&[0; 4]);
        t.extend_from_slice(av_pairs);
        t.extend_from_slice(&[0; 4]);
        t
    }

    /// The example's AV pairs: NetBIOS domain "Domain", computer "Server".
    fn av_pairs() -> Vec<u8> {
        let mut av = Vec::new();
        for (id, v) in [(2u16, "Domain"), (1, "Server")] {
            let v = utf16(v);
            av.extend_from_slice(&id.to_le_bytes());
            av.extend_from_slice(&(v.len() as u16).to_le_bytes());
            av.extend_from_slice(&v);
        }
        av.extend_from_slice(&[0; 4]);
        av
    }

    /// NEGOTIATE_KEY_EXCH | 56 | 128 | VERSION | TARGET_INFO |
    /// EXTENDED_SESSIONSECURITY | TARGET_TYPE_SERVER | ALWAYS_SIGN | NTLM |
    /// SEAL | SIGN | OEM | UNICODE, and REQUEST_TARGET: the example's.
    const FLAGS: u32 = 0xE28A_8237;
    const VERSION: [u8; 8] = [0x06, 0x00, 0x70, 0x17, 0x00, 0x00, 0x00, 0x0F];

    #[test]
    fn the_client_arithmetic_matches_the_example() {
        assert_eq!(ntowfv2(), hex("0c868a403bfd7a93a3001ef22ef02e3f"));
        let mut input = hex("0123456789abcdef");
        input.extend(temp(0, &av_pairs()));
        let proof = hmac_md5(&ntowfv2(), &input);
        assert_eq!(proof, hex("68cd0ab851e51c96aabc927bebef6a1c"));
        let session_base_key = hmac_md5(&ntowfv2(), &proof);
        assert_eq!(session_base_key, hex("8de40ccadbc14a82f15cb0ad0de95ca3"));
        assert_eq!(
            rc4(&session_base_key, &[0x55; 16]),
            hex("c5dad2544fc9799094ce1ce90bc9d03e")
        );
    }

    /// A field of an NTLM message: length, length, offset.
    fn field(len: usize, offset: usize) -> Vec<u8> {
        let mut f = (len as u16).to_le_bytes().to_vec();
        f.extend_from_slice(&(len as u16).to_le_bytes());
        f.extend_from_slice(&(offset as u32).to_le_bytes());
        f
    }

    fn accept(
        server: &mut Ntlm,
        creds: &mut Option<sspi::AuthIdentityBuffers>,
        token: Vec<u8>,
    ) -> (Vec<u8>, SecurityStatus) {
        let mut input = vec![SecurityBuffer::new(token, BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let builder = server
            .accept_security_context()
            .with_credentials_handle(creds)
            .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        let result = server
            .accept_security_context_impl(builder)
            .and_then(|mut g| g.resolve_to_result())
            .expect("accept");
        (output.remove(0).buffer, result.status)
    }

    #[test]
    fn sspi_unseals_the_examples_sealed_message() {
        let identity = AuthIdentity {
            username: Username::new("User", Some("Domain")).expect("user"),
            password: String::from("Password").into(),
        };
        let mut server = Ntlm::new();
        let mut creds = server
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Inbound)
            .with_auth_data(&identity)
            .execute(&mut server)
            .expect("credentials")
            .credentials_handle;

        let mut negotiate = b"NTLMSSP\0".to_vec();
        negotiate.extend_from_slice(&1u32.to_le_bytes());
        negotiate.extend_from_slice(&FLAGS.to_le_bytes());
        negotiate.extend_from_slice(&field(0, 40));
        negotiate.extend_from_slice(&field(0, 40));
        negotiate.extend_from_slice(&VERSION);
        let (challenge, status) = accept(&mut server, &mut creds, negotiate);
        assert_eq!(status, SecurityStatus::ContinueNeeded);
        assert!(challenge.starts_with(b"NTLMSSP\0\x02\0\0\0"));
        let server_challenge = challenge[24..32].to_vec();
        let u16_at = |i: usize| u16::from_le_bytes([challenge[i], challenge[i + 1]]) as usize;
        let (ti_len, ti_off) = (u16_at(40), u16_at(44));
        let mut ti = &challenge[ti_off..ti_off + ti_len];
        let mut time = None;
        while ti.len() >= 4 {
            let (id, len) = (
                u16::from_le_bytes([ti[0], ti[1]]),
                u16::from_le_bytes([ti[2], ti[3]]),
            );
            let value = &ti[4..4 + len as usize];
            if id == 7 {
                time = Some(u64::from_le_bytes(value.try_into().expect("8 bytes")));
            }
            ti = &ti[4 + len as usize..];
        }
        let time = time.expect("MsvAvTimestamp in the challenge");

        // The example's client, against this server challenge and time.
        let blob = temp(time, &av_pairs());
        let mut input = server_challenge.clone();
        input.extend_from_slice(&blob);
        let proof = hmac_md5(&ntowfv2(), &input);
        let key_exchange_key = hmac_md5(&ntowfv2(), &proof);
        let encrypted_key = rc4(&key_exchange_key, &[0x55; 16]);
        let mut nt = proof.clone();
        nt.extend_from_slice(&blob);
        let (lm, domain, user, ws) = (
            vec![0u8; 24],
            utf16("Domain"),
            utf16("User"),
            utf16("COMPUTER"),
        );
        let mut payload = Vec::new();
        let mut fields = Vec::new();
        for part in [&lm, &nt, &domain, &user, &ws, &encrypted_key] {
            fields.extend(field(part.len(), 88 + payload.len()));
            payload.extend_from_slice(part);
        }
        let mut authenticate = b"NTLMSSP\0".to_vec();
        authenticate.extend_from_slice(&3u32.to_le_bytes());
        authenticate.extend_from_slice(&fields);
        authenticate.extend_from_slice(&FLAGS.to_le_bytes());
        authenticate.extend_from_slice(&VERSION);
        authenticate.extend_from_slice(&[0; 16]); // MIC: not flagged in the AV pairs
        authenticate.extend_from_slice(&payload);
        let (_, status) = accept(&mut server, &mut creds, authenticate);
        if status == SecurityStatus::CompleteNeeded || status == SecurityStatus::CompleteAndContinue
        {
            server.complete_auth_token(&mut []).expect("complete");
        }

        // MS-NLMP 4.2.4.4: "Plaintext" sealed with sequence number 0.
        let mut signature = hex("010000007fb38ec5c55d497600000000");
        let mut data = hex("54e50165bf1936dc996020c1811b0f06fb5f");
        let mut bufs = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut data),
        ];
        server
            .decrypt_message(&mut bufs)
            .expect("the example's seal opens");
        assert_eq!(bufs[1].data(), utf16("Plaintext").as_slice());

        // A byte changed: the signature no longer holds.
        let mut signature = hex("010000007fb38ec5c55d497601000000");
        let mut data = hex("54e50165bf1936dc996020c1811b0f06fb5f");
        let mut bufs = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut data),
        ];
        assert!(server.decrypt_message(&mut bufs).is_err());
    }
}
