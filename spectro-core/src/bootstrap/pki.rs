//! Cluster PKI: the CAs kubeadm derives every leaf certificate from, the service-account
//! key pair, the bootstrap token, and the admin credentials the engine hands to the user.
//!
//! Generated once per cluster (ECDSA P-256), persisted through the store with every private
//! key as a [`Secret`]: never in logs, events or Debug output.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::secret::Secret;

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: Secret,
}

/// The PKI of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPki {
    /// Cluster CA (`/etc/kubernetes/pki/ca.*`).
    pub ca: CertKey,
    /// etcd CA (`/etc/kubernetes/pki/etcd/ca.*`).
    pub etcd_ca: CertKey,
    /// Front-proxy CA (`/etc/kubernetes/pki/front-proxy-ca.*`).
    pub front_proxy_ca: CertKey,
    /// Service-account signing key (`sa.key`), PEM.
    pub service_account_key: Secret,
    /// Service-account public key (`sa.pub`), PEM.
    pub service_account_pub: String,
    /// The admin client certificate (O=system:masters) signed by the cluster CA.
    pub admin: CertKey,
    /// kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` for node joins.
    pub bootstrap_token: Secret,
}

fn pki_err(e: rcgen::Error) -> CoreError {
    CoreError::Pki {
        message: e.to_string(),
    }
}

fn years_from_now(years: i32) -> time::OffsetDateTime {
    let now = chrono::Utc::now();
    use chrono::Datelike;
    rcgen::date_time_ymd(
        now.year() + years,
        now.month() as u8,
        now.day().min(28) as u8,
    )
}

fn ca_params(cn: &str, years: i32) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.not_before = years_from_now(0) - std::time::Duration::from_secs(3600);
    p.not_after = years_from_now(years);
    Ok(p)
}

fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = Vec::new();
    while bytes.len() < 22 {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    let s: String = bytes
        .iter()
        .take(22)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{}.{}", &s[..6], &s[6..])
}

impl ClusterPki {
    /// Generates the PKI of a new cluster: CAs valid 10 years, admin certificate 1 year.
    pub fn generate() -> Result<Self> {
        let mut cas = Vec::new();
        let mut ca_issuer = None;
        for cn in ["kubernetes", "etcd-ca", "front-proxy-ca"] {
            let key = KeyPair::generate().map_err(pki_err)?;
            let params = ca_params(cn, 10)?;
            let cert = params.self_signed(&key).map_err(pki_err)?;
            cas.push(CertKey {
                cert_pem: cert.pem(),
                key_pem: Secret::new(key.serialize_pem()),
            });
            if cn == "kubernetes" {
                ca_issuer = Some(Issuer::new(params, key));
            }
        }
        let issuer = ca_issuer.ok_or_else(|| CoreError::Pki {
            message: "cluster CA missing".into(),
        })?;
        let admin_key = KeyPair::generate().map_err(pki_err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:masters");
        dn.push(DnType::CommonName, "spectro-admin");
        p.distinguished_name = dn;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = years_from_now(0) - std::time::Duration::from_secs(3600);
        p.not_after = years_from_now(1);
        let admin_cert = p.signed_by(&admin_key, &issuer).map_err(pki_err)?;
        let sa = KeyPair::generate().map_err(pki_err)?;
        let mut it = cas.into_iter();
        let (ca, etcd_ca, front_proxy_ca) = match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => {
                return Err(CoreError::Pki {
                    message: "CA generation incomplete".into(),
                })
            }
        };
        Ok(ClusterPki {
            ca,
            etcd_ca,
            front_proxy_ca,
            service_account_key: Secret::new(sa.serialize_pem()),
            service_account_pub: sa.public_key_pem(),
            admin: CertKey {
                cert_pem: admin_cert.pem(),
                key_pem: Secret::new(admin_key.serialize_pem()),
            },
            bootstrap_token: Secret::new(random_token()),
        })
    }

    /// The discovery hash workers pin the cluster CA with: `sha256:` + hex of the SHA-256 of
    /// the CA's DER SubjectPublicKeyInfo (as kubeadm documents it).
    pub fn ca_cert_hash(&self) -> Result<String> {
        let key = KeyPair::from_pem(self.ca.key_pem.expose()).map_err(pki_err)?;
        let spki = key.subject_public_key_info();
        let digest = Sha256::digest(&spki);
        Ok(format!(
            "sha256:{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ))
    }

    /// The admin kubeconfig (YAML) for `cluster` at `endpoint` (`host:port`).
    #[must_use]
    pub fn admin_kubeconfig(&self, cluster: &str, endpoint: &str) -> Secret {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let user = format!("{cluster}-admin");
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": cluster,
                "cluster": {
                    "server": format!("https://{endpoint}"),
                    "certificate-authority-data": b64(&self.ca.cert_pem),
                }
            }],
            "users": [{
                "name": user,
                "user": {
                    "client-certificate-data": b64(&self.admin.cert_pem),
                    "client-key-data": b64(self.admin.key_pem.expose()),
                }
            }],
            "contexts": [{
                "name": format!("{user}@{cluster}"),
                "context": { "cluster": cluster, "user": user }
            }],
            "current-context": format!("{user}@{cluster}"),
        });
        Secret::new(serde_norway::to_string(&doc).unwrap_or_default())
    }
}
