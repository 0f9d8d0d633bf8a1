//! Cloud account rules.

use super::rules::{dns1123_label, is_host, is_uuid};
use super::{Report, Violation};
use crate::model::{CloudAccount, Credentials};
use crate::secret::Secret;

fn secret_rule(r: &mut Report, path: &str, s: &Secret) {
    if s.is_empty() {
        r.add(path, "is required");
    } else if s.is_placeholder() {
        r.add(
            path,
            "holds the redaction placeholder `***`: give the real secret",
        );
    }
}

/// Validates a cloud account's fields (not the credentials themselves: providers check those).
#[must_use]
pub fn validate_cloud_account(a: &CloudAccount) -> Vec<Violation> {
    let mut r = Report::default();
    if let Err(rule) = dns1123_label(&a.name) {
        r.add("name", rule);
    }
    match &a.credentials {
        Credentials::Aws(c) => {
            let id = &c.access_key_id;
            r.check(
                (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "credentials.aws.accessKeyId",
                "must be 16 to 128 letters or digits (an AWS access key id)",
            );
            secret_rule(
                &mut r,
                "credentials.aws.secretAccessKey",
                &c.secret_access_key,
            );
        }
        Credentials::Azure(c) => {
            r.check(
                is_uuid(&c.client_id),
                "credentials.azure.clientId",
                "must be a UUID (the AAD application's client id)",
            );
            r.check(
                is_uuid(&c.tenant_id),
                "credentials.azure.tenantId",
                "must be a UUID (the directory's tenant id)",
            );
            secret_rule(&mut r, "credentials.azure.clientSecret", &c.client_secret);
            if let Some(s) = &c.subscription_id {
                r.check(
                    is_uuid(s),
                    "credentials.azure.subscriptionId",
                    "must be a UUID",
                );
            }
        }
        Credentials::Gcp(c) => {
            let path = "credentials.gcp.serviceAccountJson";
            secret_rule(&mut r, path, &c.service_account_json);
            if !c.service_account_json.is_empty() && !c.service_account_json.is_placeholder() {
                match serde_json::from_str::<serde_json::Value>(c.service_account_json.expose()) {
                    Err(_) => r.add(
                        path,
                        "must be the service account's JSON key file (it is not JSON)",
                    ),
                    Ok(v) => {
                        if v.get("type").and_then(|t| t.as_str()) != Some("service_account") {
                            r.add(
                                path,
                                "must be a service account key: `type` must be \"service_account\"",
                            );
                        }
                        for k in ["project_id", "private_key", "client_email"] {
                            if v.get(k).and_then(|t| t.as_str()).is_none_or(str::is_empty) {
                                r.add(path, format!("the key file lacks `{k}`"));
                            }
                        }
                    }
                }
            }
        }
        Credentials::Vsphere(c) => {
            r.check(
                !c.gateway.trim().is_empty(),
                "credentials.vsphere.gateway",
                "is required: vSphere accounts are reached through a private cloud gateway",
            );
            let host = c.vcenter_host.split(':').next().unwrap_or("");
            r.check(
                is_host(host),
                "credentials.vsphere.vcenterHost",
                "must be the vCenter's IP address or FQDN (without scheme or path)",
            );
            r.check(
                !c.username.trim().is_empty(),
                "credentials.vsphere.username",
                "is required",
            );
            secret_rule(&mut r, "credentials.vsphere.password", &c.password);
        }
    }
    r.into_violations()
}
