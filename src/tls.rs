//! How a TLS peer's certificate is trusted, for the HTTPS clients built on
//! ureq (the vSphere endpoint, the WinRM listener): the system's
//! certificate store (OpenSSL's, where openssl-probe finds it, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), a CA file, a pinned SHA-256 thumbprint (govc's `-thumbprint`, for ESXi hosts
//! and cloned Windows images with their self-signed certificates), a pin
//! learned from the first certificate seen, or nothing at all.
//!
//! ureq verifies names and chains; a pin needs a verifier that compares the
//! end-entity certificate's SHA-256 with the pin and ignores names and
//! issuers, so that mode plugs its own rustls connector into ureq's
//! transport chain. The handshake signatures are still checked, so the
//! server must hold the pinned certificate's key.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

/// How the endpoint's certificate is trusted.
#[derive(Clone)]
pub enum Trust {
    /// The CA certificates of the system's store, read when the agent is
    /// made: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else where
    /// OpenSSL keeps them (/etc/ssl/certs, /etc/pki/tls, ...), so a site
    /// CA added there (update-ca-certificates, update-ca-trust) is trusted.
    System,
    /// The CA certificates of a PEM file.
    Ca(Vec<ureq::tls::Certificate<'static>>),
    /// The SHA-256 of the endpoint's certificate.
    Pinned([u8; 32]),
    /// The first certificate presented is accepted and pinned for every
    /// later connection of the agent: see [`FirstUse`].
    FirstUse(Arc<FirstUse>),
    /// No verification (`insecure = true`).
    Off,
}

/// Trust on first use, for one agent: the first end-entity certificate a
/// handshake presents is accepted (its signature over the handshake still
/// checked) and its SHA-256 pinned; every later handshake must present the
/// same certificate. The owner reads the pin to record it.
#[derive(Debug, Default)]
pub struct FirstUse {
    pin: Mutex<Option<[u8; 32]>>,
}

impl FirstUse {
    /// Nothing seen yet.
    pub fn new() -> Arc<FirstUse> {
        Arc::new(FirstUse::default())
    }

    /// The SHA-256 of the certificate the first handshake accepted.
    pub fn pinned(&self) -> Option<[u8; 32]> {
        *self.pin.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Trust {
    /// Reads a CA file: one or more PEM certificates. `what` names it in
    /// errors, e.g. "the vSphere ca_file".
    pub fn ca_file(path: &Path, what: &str) -> Result<Trust, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!("cannot parse {what} {}: {e}", path.display()));
                }
            }
        }
        if certs.is_empty() {
            return Err(format!(
                "{what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(Trust::Ca(certs))
    }
}

/// Parses a SHA-256 thumbprint: 32 bytes in hex, with or without `:`
/// between them (govc prints `AA:BB:...`), any case.
pub fn parse_thumbprint(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`thumbprint` must be the certificate's SHA-256: 32 hex bytes, e.g. \"AB:CD:...\" (64 hex digits); got {s:?}"
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("`thumbprint`: {e}"))?;
    }
    Ok(out)
}

/// The SHA-256 of a certificate (DER), as a thumbprint pins it.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

/// A thumbprint in govc's form: colon-separated upper-case hex.
pub fn fmt_thumbprint(t: &[u8]) -> String {
    t.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A ureq agent for the endpoint, trusting its certificate as `trust` says.
pub fn agent(trust: Trust, connect_timeout: Duration) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    let pin = match trust {
        Trust::System => match system_roots() {
            Ok(certs) => {
                tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(certs));
                None
            }
            Err(why) => Some(Err(*why)),
        },
        Trust::Ca(certs) => {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
            None
        }
        Trust::Off => {
            tls = tls.disable_verification(true);
            None
        }
        Trust::Pinned(p) => Some(Ok(Pin::Fixed(p))),
        Trust::FirstUse(f) => Some(Ok(Pin::FirstUse(f))),
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls.build())
        .timeout_connect(Some(connect_timeout))
        .user_agent(concat!("reimage/", env!("CARGO_PKG_VERSION")))
        .build();
    match pin {
        None => config.new_agent(),
        Some(Err(why)) => ureq::Agent::with_parts(
            config,
            ().chain(TcpConnector::default()).chain(Refuse(why)),
            DefaultResolver::default(),
        ),
        Some(Ok(pin)) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(PinVerifier {
                pin,
                algorithms: provider.signature_verification_algorithms,
            });
            let client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth()
                });
            match client {
                Ok(c) => {
                    let connector = ().chain(TcpConnector::default()).chain(PinnedTls {
                        config: Arc::new(c),
                    });
                    ureq::Agent::with_parts(config, connector, DefaultResolver::default())
                }
                // ring supports the default versions; if it ever does not,
                // fail closed: every TLS connection is refused.
                Err(_) => ureq::Agent::with_parts(
                    config,
                    ().chain(TcpConnector::default())
                        .chain(Refuse("no TLS setup for the pinned thumbprint")),
                    DefaultResolver::default(),
                ),
            }
        }
    }
}

/// Where a pinned verifier's pin comes from.
#[derive(Debug)]
enum Pin {
    /// Given.
    Fixed([u8; 32]),
    /// Taken from the first certificate seen.
    FirstUse(Arc<FirstUse>),
}

/// Accepts exactly the certificate whose SHA-256 is the pin.
#[derive(Debug)]
struct PinVerifier {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha256(end_entity.as_ref());
        let pin = match &self.pin {
            Pin::Fixed(p) => *p,
            Pin::FirstUse(f) => {
                let mut seen = f.pin.lock().unwrap_or_else(|p| p.into_inner());
                *seen.get_or_insert(got)
            }
        };
        if got == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate thumbprint mismatch: the server's SHA-256 is {}, the pinned one is {}",
                fmt_thumbprint(&got),
                fmt_thumbprint(&pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Wraps the TCP transport in rustls with the pin verifier.
#[derive(Debug)]
struct PinnedTls {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host).map_err(|_| ureq::Error::Tls("invalid host name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PinnedTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// The CA certificates of the system's store, read once per process (a
/// WinRM wait makes an agent per connection). None at all is an error
/// (every certificate would fail as of an unknown issuer): the message
/// says where they were looked for. Files that could not be read beside
/// ones that could are left out, as OpenSSL does.
fn system_roots() -> &'static Result<Vec<ureq::tls::Certificate<'static>>, &'static str> {
    static ROOTS: OnceLock<Result<Vec<ureq::tls::Certificate<'static>>, &'static str>> =
        OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(
                "the system's certificate store holds no CA certificate (looked in SSL_CERT_FILE and SSL_CERT_DIR when set, else OpenSSL's directory): install ca-certificates, or set ca_file or thumbprint",
            );
        }
        Ok(found
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect())
    })
}

/// Refuses every TLS connection, saying why (no trust could be set up).
#[derive(Debug)]
struct Refuse(&'static str);

impl<In: Transport> Connector<In> for Refuse {
    type Out = In;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if details.needs_tls() {
            return Err(ureq::Error::Tls(self.0));
        }
        Ok(chained)
    }
}

struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedTransport")
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_in_govc_form_or_bare() {
        let t = "F0:E8:4E:9C:45:D9:BC:8E:62:A6:F2:91:D0:0A:34:CE:AC:BA:38:17:CA:BE:32:8C:44:79:84:CB:26:A2:A4:CB";
        let p = parse_thumbprint(t).expect("govc form");
        assert_eq!(p[0], 0xF0);
        assert_eq!(p[31], 0xCB);
        assert_eq!(fmt_thumbprint(&p), t);
        let bare = t.replace(':', "").to_lowercase();
        assert_eq!(parse_thumbprint(&bare).expect("bare"), p);
        assert!(parse_thumbprint("AB:CD").is_err());
        assert!(parse_thumbprint(&t.replace("F0", "G0")).is_err());
        // A SHA-1 thumbprint (what older tools print) is refused.
        assert!(parse_thumbprint(&"AB:".repeat(20)).is_err());
    }
}
