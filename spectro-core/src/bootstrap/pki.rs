//! Cluster PKI: the CAs kubeadm derives every leaf certificate from, the service-account
//! key pair, the bootstrap token, and the admin credentials the engine hands to the user.
//!
//! Generated once per cluster (ECDSA P-256), persisted through the store with every private
//! key as a [`Secret`]: never in logs, events or Debug output.
//!
//! Generating ([`ClusterPki::generate`]) needs rcgen and ring (feature `engine`); reading
//! and rendering a stored PKI needs neither.

#[cfg(feature = "engine")]
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
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

#[cfg(feature = "engine")]
fn pki_err(e: rcgen::Error) -> CoreError {
    CoreError::Pki {
        message: e.to_string(),
    }
}

#[cfg(feature = "engine")]
fn years_from_now(years: i32) -> time::OffsetDateTime {
    // Certificates must be valid in real time, whatever clock the engine runs on.
    let now = crate::clock::system_now();
    use chrono::Datelike;
    rcgen::date_time_ymd(
        now.year() + years,
        now.month() as u8,
        now.day().min(28) as u8,
    )
}

#[cfg(feature = "engine")]
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

/// A client-auth certificate (`O=org`, `CN=cn`) with a fresh key, signed by `issuer`, valid
/// from an hour ago (clock skew) until `until`.
#[cfg(feature = "engine")]
fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    org: Option<&str>,
    cn: &str,
    until: time::OffsetDateTime,
) -> Result<CertKey> {
    let key = KeyPair::generate().map_err(pki_err)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = years_from_now(0) - std::time::Duration::from_secs(3600);
    p.not_after = until;
    let cert = p.signed_by(&key, issuer).map_err(pki_err)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: Secret::new(key.serialize_pem()),
    })
}

#[cfg(feature = "engine")]
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
    /// Generates the PKI of a new cluster: CAs valid 10 years, admin certificate 1 year
    /// (feature `engine`).
    #[cfg(feature = "engine")]
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
        let admin = client_cert(
            &issuer,
            Some("system:masters"),
            "spectro-admin",
            years_from_now(1),
        )?;
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
            admin,
            bootstrap_token: Secret::new(random_token()),
        })
    }

    /// The discovery hash workers pin the cluster CA with: `sha256:` + hex of the SHA-256 of
    /// the CA's DER SubjectPublicKeyInfo (as kubeadm documents it).
    pub fn ca_cert_hash(&self) -> Result<String> {
        let der = pem_der(&self.ca.cert_pem, "CERTIFICATE")?;
        let spki = certificate_spki(&der).ok_or_else(|| CoreError::Pki {
            message: "the cluster CA certificate is not a well-formed X.509 certificate".into(),
        })?;
        let digest = Sha256::digest(spki);
        Ok(format!(
            "sha256:{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ))
    }

    /// A client certificate for the cluster's etcd (CN `spectro-etcd-client`, client auth),
    /// signed by its etcd CA, valid 7 days: what the engine presents to remove a member
    /// (feature `engine`). Returns the certificate (PEM) and its key.
    #[cfg(feature = "engine")]
    pub fn etcd_client(&self) -> Result<(String, Secret)> {
        let ca_key = KeyPair::from_pem(self.etcd_ca.key_pem.expose()).map_err(pki_err)?;
        // The issuer is the CA's subject name and key: the same as when it was generated.
        let issuer = Issuer::new(ca_params("etcd-ca", 10)?, ca_key);
        let c = client_cert(
            &issuer,
            None,
            "spectro-etcd-client",
            years_from_now(0) + std::time::Duration::from_secs(7 * 86_400),
        )?;
        Ok((c.cert_pem, c.key_pem))
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

/// The DER bytes of the first PEM block labelled `label`.
fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| CoreError::Pki {
            message: format!("no PEM block {label}"),
        })?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| CoreError::Pki {
            message: format!("PEM block {label}: {e}"),
        })
}

/// A DER element split off its input: (tag, whole element, contents, rest).
type DerSplit<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// One DER element at the start of `input`.
fn der_element(input: &[u8]) -> Option<DerSplit<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &input[..header + len], &rest[..len], &rest[len..]))
}

/// The DER SubjectPublicKeyInfo of an X.509 certificate (RFC 5280: Certificate ::= SEQUENCE
/// { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity, subject, subjectPublicKeyInfo, ... }, ... }).
fn certificate_spki(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (tag, _, cert, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _, mut tbs, _) = der_element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // The explicit version tag, when present.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.3;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        tbs = der_element(tbs)?.3;
    }
    let (tag, spki, _, _) = der_element(tbs)?;
    (tag == SEQUENCE).then_some(spki)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_certificates_are_errors_not_panics() {
        for pem in [
            "",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMIIBIjAN\n-----END CERTIFICATE-----",
        ] {
            let pki = ClusterPki {
                ca: CertKey {
                    cert_pem: pem.into(),
                    key_pem: Secret::new(String::new()),
                },
                etcd_ca: CertKey {
                    cert_pem: String::new(),
                    key_pem: Secret::new(String::new()),
                },
                front_proxy_ca: CertKey {
                    cert_pem: String::new(),
                    key_pem: Secret::new(String::new()),
                },
                service_account_key: Secret::new(String::new()),
                service_account_pub: String::new(),
                admin: CertKey {
                    cert_pem: String::new(),
                    key_pem: Secret::new(String::new()),
                },
                bootstrap_token: Secret::new(String::new()),
            };
            assert!(
                matches!(pki.ca_cert_hash(), Err(CoreError::Pki { .. })),
                "{pem:?}"
            );
        }
    }

    #[cfg(feature = "engine")]
    #[test]
    fn ca_cert_hash_is_the_hash_of_the_ca_key() {
        use rcgen::PublicKeyData;
        let pki = ClusterPki::generate().unwrap();
        let key = KeyPair::from_pem(pki.ca.key_pem.expose()).unwrap();
        let want: String = Sha256::digest(key.subject_public_key_info())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(pki.ca_cert_hash().unwrap(), format!("sha256:{want}"));
    }
}
