//! A CA bundle as a kubeconfig's `certificate-authority-data` carries it (base64 of PEM text),
//! kept in the smallest form that gives back the very same text.
//!
//! A source keeps one per cluster for as long as the cluster exists, and publishes it verbatim in
//! the profile. As text it is base64 of base64 (the PEM body): ~1.8 bytes per byte of certificate,
//! most of a source's memory per cluster once credentials are no longer kept. A bundle written the
//! way every PEM writer writes it (64-column lines, `\n`, no headers or text around the blocks) is
//! kept as its certificates' DER and written again on demand; anything else is kept as found.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The PEM tag of a certificate.
const CERTIFICATE: &str = "CERTIFICATE";

/// A CA bundle that gives back its base64 text exactly as it was found.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle(Kept);

#[derive(Clone, PartialEq, Eq)]
enum Kept {
    /// The DER of each certificate, in order: the text is their canonical PEM, base64-encoded.
    Certificates(Box<[Box<[u8]>]>),
    /// Any other text, as found.
    Text(Box<str>),
}

impl CaBundle {
    /// From `certificate-authority-data` as a kubeconfig writes it (base64 of PEM). The text is
    /// not checked here; [`CaBundle::to_base64`] returns it unchanged.
    pub fn from_base64(text: &str) -> Self {
        match BASE64.decode(text) {
            // Only canonical base64 (padded, no line breaks) is rebuilt from bytes.
            Ok(pem) if BASE64.encode(&pem) == text => Self::from_pem(&pem),
            _ => Self(Kept::Text(text.into())),
        }
    }

    /// From PEM bytes (a Secret's `tls.crt`); [`CaBundle::to_base64`] gives their base64.
    pub fn from_pem(pem: &[u8]) -> Self {
        match canonical_certificates(pem) {
            Some(certificates) => Self(Kept::Certificates(certificates)),
            None => Self(Kept::Text(BASE64.encode(pem).into())),
        }
    }

    /// The base64 text, byte for byte as it was found.
    pub fn to_base64(&self) -> String {
        match &self.0 {
            Kept::Certificates(certificates) => BASE64.encode(pem_text(certificates)),
            Kept::Text(text) => text.to_string(),
        }
    }
}

impl std::fmt::Debug for CaBundle {
    /// A bundle is public, but thousands of bytes of base64 help nobody reading a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kept::Certificates(certificates) => {
                write!(f, "CaBundle({} certificates)", certificates.len())
            }
            Kept::Text(text) => write!(f, "CaBundle({} bytes of base64)", text.len()),
        }
    }
}

/// The certificates of `pem` if writing them again gives `pem` back exactly.
fn canonical_certificates(pem: &[u8]) -> Option<Box<[Box<[u8]>]>> {
    let blocks = pem::parse_many(pem).ok()?;
    if blocks.is_empty()
        || blocks
            .iter()
            .any(|block| block.tag() != CERTIFICATE || block.headers().iter().next().is_some())
    {
        return None;
    }
    let certificates: Box<[Box<[u8]>]> = blocks
        .into_iter()
        .map(|block| block.into_contents().into_boxed_slice())
        .collect();
    (pem_text(&certificates).as_bytes() == pem).then_some(certificates)
}

/// The canonical PEM of `certificates`: blocks written one after another, `\n` line endings.
fn pem_text(certificates: &[Box<[u8]>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certificates
        .iter()
        .map(|der| pem::encode_config(&pem::Pem::new(CERTIFICATE, der.to_vec()), config))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two certificates as a PEM writer lays them out (DER bytes need not be a real
    /// certificate: only the text's layout decides what is kept).
    fn canonical_pem() -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        let first = pem::Pem::new(CERTIFICATE, (0u8..=200).collect::<Vec<_>>());
        let second = pem::Pem::new(CERTIFICATE, vec![7u8; 100]);
        pem::encode_config(&first, config) + &pem::encode_config(&second, config)
    }

    #[test]
    fn a_canonical_bundle_is_kept_as_der_and_written_back_exactly() {
        let text = BASE64.encode(canonical_pem());
        let bundle = CaBundle::from_base64(&text);
        assert!(matches!(&bundle.0, Kept::Certificates(c) if c.len() == 2));
        assert_eq!(bundle.to_base64(), text);
        assert_eq!(
            CaBundle::from_pem(canonical_pem().as_bytes()).to_base64(),
            text
        );
        assert_eq!(format!("{bundle:?}"), "CaBundle(2 certificates)");
    }

    #[test]
    fn any_other_text_is_kept_as_found() {
        let pem = canonical_pem();
        let variants = [
            // Windows line endings, text around the blocks, another tag, a missing final newline.
            BASE64.encode(pem.replace('\n', "\r\n")),
            BASE64.encode(format!("subject=CN=ca\n{pem}")),
            BASE64.encode(pem.replace("CERTIFICATE", "TRUSTED CERTIFICATE")),
            BASE64.encode(pem.trim_end()),
            // Base64 wrapped over lines; not base64, or not PEM at all.
            BASE64
                .encode(&pem)
                .as_bytes()
                .chunks(76)
                .map(|line| String::from_utf8_lossy(line).into_owned())
                .collect::<Vec<_>>()
                .join("\n"),
            "%%%".to_string(),
            BASE64.encode("no certificate here"),
        ];
        for text in variants {
            let bundle = CaBundle::from_base64(&text);
            assert!(matches!(bundle.0, Kept::Text(_)), "{text:?}");
            assert_eq!(bundle.to_base64(), text);
        }
        let odd = "subject=CN=ca\n".to_string() + &pem;
        assert_eq!(
            CaBundle::from_pem(odd.as_bytes()).to_base64(),
            BASE64.encode(odd)
        );
    }
}
