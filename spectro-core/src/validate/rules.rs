//! Small, total predicates shared by the validators.

use std::net::IpAddr;

/// Maximum length of a DNS-1123 label.
pub const DNS1123_MAX: usize = 63;

/// Checks a DNS-1123 label; returns the broken rule.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    if s.len() > DNS1123_MAX {
        return Err(format!(
            "must be at most {DNS1123_MAX} characters (DNS-1123 label), got {}",
            s.len()
        ));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let b = s.as_bytes();
    let ok_ends = b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return Err(format!(
            "`{s}` must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// True for a host name (RFC 1123) or an IP address.
#[must_use]
pub fn is_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// True for an `http://` or `https://` URL with a host.
#[must_use]
pub fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    let Some(rest) = rest else { return false };
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    !host.is_empty() && is_host(host)
}

/// True for an OpenSSH public key line (`type base64 [comment]`).
#[must_use]
pub fn is_ssh_public_key(s: &str) -> bool {
    let mut parts = s.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    let known = [
        "ssh-rsa",
        "ssh-ed25519",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    known.contains(&kind)
        && body.len() >= 16
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// True for a UUID in its 8-4-4-4-12 form.
#[must_use]
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// AWS region, e.g. `us-east-1`, `us-gov-west-1`.
#[must_use]
pub fn is_aws_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// GCP region, e.g. `us-west1`.
#[must_use]
pub fn is_gcp_region(s: &str) -> bool {
    let Some((a, b)) = s.split_once('-') else {
        return false;
    };
    !a.is_empty()
        && a.bytes().all(|c| c.is_ascii_lowercase())
        && b.len() >= 2
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.bytes().last().is_some_and(|c| c.is_ascii_digit())
}

/// Azure region name, e.g. `westus2`, `eastus`.
#[must_use]
pub fn is_azure_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// An AWS resource id with `prefix` (`vpc`, `subnet`, ...): `prefix-` + 8 or 17 hex digits.
#[must_use]
pub fn is_aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(dns1123_label("prod-1").is_ok());
        assert!(dns1123_label("Prod").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label("").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_label("é").is_err());
    }

    #[test]
    fn regions_and_ids() {
        assert!(is_aws_region("us-east-1"));
        assert!(is_aws_region("us-gov-west-1"));
        assert!(!is_aws_region("useast1"));
        assert!(is_gcp_region("us-west1"));
        assert!(!is_gcp_region("us-west"));
        assert!(is_aws_id("vpc-0a1b2c3d", "vpc"));
        assert!(is_aws_id("subnet-0123456789abcdef0", "subnet"));
        assert!(!is_aws_id("subnet-xyz", "subnet"));
    }

    #[test]
    fn urls_and_keys() {
        assert!(is_http_url("http://user:pw@10.0.0.1:3128"));
        assert!(is_http_url("https://proxy.corp.org"));
        assert!(!is_http_url("socks5://x"));
        assert!(!is_http_url("http://"));
        assert!(is_ssh_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3 me@host"
        ));
        assert!(!is_ssh_public_key("not a key"));
    }
}
