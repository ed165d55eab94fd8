//! Certificates and keys for one control plane, generated fresh: a CA, the apiserver's serving
//! certificate, an admin client certificate (group `system:masters`) and the ServiceAccount token
//! signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM material of one control plane.
#[derive(Clone, Debug)]
pub struct Pki {
    /// CA certificate (trust anchor for the serving cert and client certs).
    pub ca_cert: String,
    /// CA private key (kube-controller-manager signs with it when asked).
    pub ca_key: String,
    /// Serving certificate for 127.0.0.1 and localhost.
    pub server_cert: String,
    /// Serving key.
    pub server_key: String,
    /// Admin client certificate (CN `inventory-bridge-admin`, O `system:masters`).
    pub admin_cert: String,
    /// Admin client key.
    pub admin_key: String,
    /// ServiceAccount token signing key.
    pub service_account_key: String,
    /// Its public half, which the apiserver verifies tokens with.
    pub service_account_public_key: String,
}

impl Pki {
    /// Generate everything for a control plane named `name`.
    pub fn generate(name: &str) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("inventory-bridge test CA ({name})"),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, format!("kube-apiserver ({name})"));
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin_params = CertificateParams::new(Vec::<String>::new())?;
        admin_params
            .distinguished_name
            .push(DnType::CommonName, "inventory-bridge-admin");
        admin_params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin_params.signed_by(&admin_key, &issuer)?;

        let service_account_key = KeyPair::generate()?;
        Ok(Self {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_key: service_account_key.serialize_pem(),
            service_account_public_key: service_account_key.public_key_pem(),
        })
    }
}
