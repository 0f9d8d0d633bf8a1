//! Private cloud gateways' lifecycle: pairing, the gateway's credential, replicas, upgrade,
//! reset (the reference doc's VMware section).
//!
//! A gateway is created `Pending`. [`Engine::gateway_pairing_code`] issues a short one-time
//! code (expires after [`GatewayConfig::pairing_code_ttl`](super::GatewayConfig), revoked after
//! [`GatewayConfig::pairing_attempts`](super::GatewayConfig) wrong tries); an agent presents it
//! with [`Engine::pair_gateway`] and receives the gateway's long-lived credential (only its
//! hash is stored), the gateway turns `Provisioning` and its default cloud account is created
//! from the vCenter credentials the agent gave. The first replica heard from with that
//! credential ([`Engine::gateway_heartbeat`]) makes it `Running`. A replica older than the
//! release the endpoint ships raises an upgrade notification; [`Engine::upgrade_gateway`]
//! turns the gateway `Upgrading` (new clusters queue) until every connected replica runs
//! it. [`Engine::reset_gateway`] revokes the credential and goes back to `Pending`. Every
//! transition and every refusal is an event whose subject is the gateway's id
//! ([`GatewayStatus::id`]).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::model::{
    CloudAccount, Credentials, GatewayReplica, GatewayState, GatewayStatus, PairingCodeRecord,
    PairingRequest, PrivateCloudGateway, VsphereCredentials,
};
use crate::provider::ClusterId;
use crate::records::event::{NewEvent, Severity};
use crate::secret::Secret;
use crate::store::{ClusterWrite, ObjectKind};

use super::{decode, encode, Engine};

/// Letters of pairing codes: no 0/O, 1/I/L (read aloud, typed by hand).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters of a pairing code (~39 bits).
const CODE_LEN: usize = 8;

/// A one-time pairing code, shown once to the administrator.
#[derive(Debug, Clone)]
pub struct PairingCode {
    /// The code (8 characters).
    pub code: Secret,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// The long-lived credential a paired gateway's agents authenticate with.
#[derive(Debug, Clone)]
pub struct GatewayCredential {
    /// The gateway.
    pub gateway: String,
    /// The credential (`Authorization: Bearer <token>`); the engine keeps only its hash.
    pub token: Secret,
}

fn hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    getrandom::fill(&mut out).map_err(|e| CoreError::Pki {
        message: format!("the system's random source failed: {e}"),
    })?;
    Ok(out)
}

fn new_code() -> Result<String> {
    Ok(random_bytes(CODE_LEN)?
        .into_iter()
        // The 256 % 31 bias is irrelevant for a code that expires and allows 5 tries.
        .map(|b| CODE_ALPHABET[b as usize % CODE_ALPHABET.len()] as char)
        .collect())
}

fn new_token() -> Result<String> {
    // 256 bits from the OS.
    let bytes = random_bytes(32)?;
    Ok(format!(
        "spg_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Normalizes a typed code: upper case, separators and blanks dropped.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// True when dotted version `a` is older than `b` (numeric parts compared as numbers).
#[must_use]
pub fn version_older(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a) < parts(b)
}

/// A status as shown to callers: the hashes of the pairing code (short: guessable offline
/// from its hash) and of the credential stay in the store.
fn redacted(mut st: GatewayStatus) -> GatewayStatus {
    if let Some(p) = &mut st.pairing {
        p.code_hash = crate::secret::REDACTED.to_string();
    }
    if st.credential_hash.is_some() {
        st.credential_hash = Some(crate::secret::REDACTED.to_string());
    }
    st
}

/// A refusal that changes nothing is recorded if none was in the last minute.
fn refusal_event_due(st: &GatewayStatus, now: DateTime<Utc>) -> bool {
    st.last_refusal_event
        .is_none_or(|t| now - t >= chrono::Duration::minutes(1))
}

/// `field` must be 1 to `max` characters of letters, digits, `.`, `-`, `_`, `:`, `[`, `]`.
fn check_field(out: &mut Vec<crate::validate::Violation>, field: &str, value: &str, max: usize) {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]@".contains(c));
    if !ok {
        out.push(crate::validate::Violation {
            path: field.into(),
            rule: format!(
                "required: 1 to {max} characters of letters, digits, '.', '-', '_', ':', '@', '[', ']'"
            ),
        });
    }
}

impl Engine {
    /// A gateway's spec (its `state` filled in) and status.
    pub async fn gateway_status(&self, name: &str) -> Result<(PrivateCloudGateway, GatewayStatus)> {
        let Some(o) = self
            .inner
            .store
            .get_object(ObjectKind::Gateway, name)
            .await?
        else {
            return Err(CoreError::NotFound {
                kind: "gateway",
                name: name.to_string(),
            });
        };
        let mut g: PrivateCloudGateway = decode("gateway", o.body)?;
        let (st, _) = self.load_gateway_status(name).await?;
        g.state = st.state;
        Ok((g, redacted(st)))
    }

    /// Every gateway with its status.
    pub async fn gateways(&self) -> Result<Vec<(PrivateCloudGateway, GatewayStatus)>> {
        let mut out = Vec::new();
        for o in self.inner.store.list_objects(ObjectKind::Gateway).await? {
            let mut g: PrivateCloudGateway = decode("gateway", o.body)?;
            let (st, _) = self.load_gateway_status(&g.name).await?;
            g.state = st.state;
            out.push((g, redacted(st)));
        }
        Ok(out)
    }

    /// Issues a new one-time pairing code for a `Pending` gateway (the previous one stops
    /// working). The code is returned once; only its hash is stored.
    pub async fn gateway_pairing_code(&self, name: &str) -> Result<PairingCode> {
        self.running()?;
        self.require_gateway(name).await?;
        let now = self.inner.clock.now();
        let ttl = self.inner.config.gateways.pairing_code_ttl;
        let attempts = self.inner.config.gateways.pairing_attempts;
        let code = new_code()?;
        let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let code_hash = hash(&code);
        self.update_gateway_status(name, |st| {
            if st.state != GatewayState::Pending {
                return Err(CoreError::GatewayState {
                    op: "issue a pairing code for",
                    gateway: name.to_string(),
                    state: st.state.as_str(),
                });
            }
            st.pairing = Some(PairingCodeRecord {
                code_hash: code_hash.clone(),
                expires_at,
                attempts_left: attempts.max(1),
            });
            Ok(vec![(
                Severity::Info,
                "PairingCodeIssued",
                format!("a pairing code valid until {expires_at} was issued"),
            )])
        })
        .await?;
        Ok(PairingCode {
            code: Secret::new(code),
            expires_at,
        })
    }

    /// Pairs an agent with a `Pending` gateway: checks the one-time code (a wrong, expired or
    /// used code is refused and recorded as an event), creates the gateway's default cloud
    /// account (`<gateway>-default`) from the vCenter credentials presented, and returns the
    /// gateway's credential. The gateway turns `Provisioning`.
    pub async fn pair_gateway(
        &self,
        name: &str,
        req: &PairingRequest,
    ) -> Result<GatewayCredential> {
        self.running()?;
        self.require_gateway(name).await?;
        let mut violations = Vec::new();
        check_field(&mut violations, "replica", &req.replica, 63);
        check_field(&mut violations, "version", &req.version, 63);
        check_field(&mut violations, "vcenterHost", &req.vcenter_host, 255);
        check_field(&mut violations, "username", &req.username, 255);
        let account = CloudAccount {
            name: format!("{name}-default"),
            credentials: Credentials::Vsphere(VsphereCredentials {
                gateway: name.to_string(),
                vcenter_host: req.vcenter_host.clone(),
                username: req.username.clone(),
                password: req.password.clone(),
                insecure: req.insecure,
            }),
        };
        if violations.is_empty() {
            violations.extend(crate::validate::validate_cloud_account(&account));
        }
        super::invalid(format!("pairing request for gateway {name}"), violations)?;
        let now = self.inner.clock.now();
        let token = new_token()?;
        let token_hash = hash(&token);
        let account_name = account.name.clone();
        let given = hash(&normalize_code(req.code.expose()));
        let mut refused: Option<String> = None;
        self.update_gateway_status(name, |st| {
            refused = None;
            let due = refusal_event_due(st, now);
            let why = match (st.state, &mut st.pairing) {
                (GatewayState::Pending, Some(p)) if p.expires_at < now => {
                    st.pairing = None;
                    Some("pairing refused: the pairing code expired (issue a new one)".to_string())
                }
                (GatewayState::Pending, Some(p)) if p.code_hash != given => {
                    p.attempts_left = p.attempts_left.saturating_sub(1);
                    if p.attempts_left == 0 {
                        st.pairing = None;
                        Some(
                            "pairing refused: wrong pairing code; too many wrong codes, the code is revoked (issue a new one)"
                                .to_string(),
                        )
                    } else {
                        Some(format!(
                            "pairing refused: wrong pairing code ({} attempt(s) left)",
                            p.attempts_left
                        ))
                    }
                }
                (GatewayState::Pending, Some(_)) => None,
                // Refusals that change nothing are recorded at most once a minute.
                _ if !due => {
                    refused = Some("pairing refused: no pairing code is outstanding".into());
                    return Ok(Vec::new());
                }
                (GatewayState::Pending, None) => Some(
                    "pairing refused: no pairing code is outstanding (it was used or revoked: issue a new one)"
                        .to_string(),
                ),
                (_, _) => Some(
                    "pairing refused: the gateway is already paired (the code was used; reset the gateway to pair again)"
                        .to_string(),
                ),
            };
            if let Some(why) = why {
                if st.pairing.is_none() || st.state != GatewayState::Pending {
                    st.last_refusal_event = Some(now);
                }
                refused = Some(why.clone());
                // The refusal is recorded (event + attempts) but the write must land: Ok.
                return Ok(vec![(
                    Severity::Warning,
                    "PairingRefused",
                    format!("replica {}: {why}", req.replica),
                )]);
            }
            st.pairing = None;
            st.state = GatewayState::Provisioning;
            st.credential_hash = Some(token_hash.clone());
            st.vcenter_host = Some(req.vcenter_host.clone());
            st.default_account = Some(account_name.clone());
            st.replicas.clear();
            Ok(vec![(
                Severity::Info,
                "GatewayPaired",
                format!(
                    "replica {} paired (agent {}, vCenter {}): provisioning; default cloud account {account_name}",
                    req.replica, req.version, req.vcenter_host
                ),
            )])
        })
        .await?;
        if let Some(why) = refused {
            return Err(CoreError::GatewayRefused {
                gateway: name.to_string(),
                why,
            });
        }
        self.put_cloud_account(&account).await?;
        Ok(GatewayCredential {
            gateway: name.to_string(),
            token: Secret::new(token),
        })
    }

    /// Checks a gateway credential (an agent's every connection). Another gateway's
    /// credential, a revoked one (after a reset) or garbage is refused with an event.
    pub async fn authenticate_gateway(&self, name: &str, token: &str) -> Result<()> {
        // Nothing is written for a gateway that does not exist (its agents are refused).
        if let Err(CoreError::NotFound { .. }) = self.require_gateway(name).await {
            return Err(CoreError::GatewayRefused {
                gateway: name.to_string(),
                why: "credential refused: no such gateway (deleted?)".into(),
            });
        }
        let (st, _) = self.load_gateway_status(name).await?;
        if st.credential_hash.as_deref() == Some(hash(token).as_str()) {
            return Ok(());
        }
        let why = if st.credential_hash.is_none() {
            "credential refused: the gateway is not paired"
        } else {
            "credential refused: not this gateway's"
        };
        let now = self.inner.clock.now();
        if refusal_event_due(&st, now) {
            self.update_gateway_status(name, |st| {
                if !refusal_event_due(st, now) {
                    return Ok(Vec::new());
                }
                st.last_refusal_event = Some(now);
                Ok(vec![(
                    Severity::Warning,
                    "CredentialRefused",
                    why.to_string(),
                )])
            })
            .await?;
        }
        Err(CoreError::GatewayRefused {
            gateway: name.to_string(),
            why: why.to_string(),
        })
    }

    /// A replica's heartbeat (the endpoint calls it when a replica connects and then every
    /// few seconds): marks it connected (stored when something changed, or at most every third
    /// of the replica timeout), turns a `Provisioning` gateway `Running`, raises the upgrade
    /// notification when the replica runs an older version than `release`, and ends an
    /// upgrade once every connected replica runs its version. Returns the status.
    pub async fn gateway_heartbeat(
        &self,
        name: &str,
        replica: &str,
        version: &str,
        release: &str,
    ) -> Result<GatewayStatus> {
        let now = self.inner.clock.now();
        let ttl = self.inner.config.gateways.replica_ttl;
        let refresh = chrono::Duration::from_std(ttl / 3).unwrap_or(chrono::Duration::MAX);
        let (current, _) = self.load_gateway_status(name).await?;
        let fresh = current
            .replicas
            .iter()
            .find(|r| r.id == replica)
            .is_some_and(|r| r.connected && r.version == version && now - r.last_seen < refresh);
        let quiet = fresh
            && match current.state {
                GatewayState::Running => {
                    current.upgrade_available.is_some() || !version_older(version, release)
                }
                _ => false,
            };
        if quiet {
            return Ok(current);
        }
        self.update_gateway_status(name, |st| {
            let mut events = Vec::new();
            if st.credential_hash.is_none() {
                return Err(CoreError::GatewayRefused {
                    gateway: name.to_string(),
                    why: "not paired".into(),
                });
            }
            match st.replicas.iter_mut().find(|r| r.id == replica) {
                Some(r) => {
                    if !r.connected {
                        r.connected = true;
                        r.connected_at = now;
                        events.push((
                            Severity::Info,
                            "ReplicaConnected",
                            format!("replica {replica} (agent {version}) connected"),
                        ));
                    }
                    if r.version != version {
                        events.push((
                            Severity::Info,
                            "ReplicaVersion",
                            format!("replica {replica} runs agent {version} (was {})", r.version),
                        ));
                        r.version = version.to_string();
                    }
                    r.last_seen = now;
                }
                None => {
                    st.replicas.push(GatewayReplica {
                        id: replica.to_string(),
                        version: version.to_string(),
                        connected_at: now,
                        last_seen: now,
                        connected: true,
                    });
                    events.push((
                        Severity::Info,
                        "ReplicaConnected",
                        format!("replica {replica} (agent {version}) connected"),
                    ));
                }
            }
            let versions: Vec<String> = st
                .connected(now, ttl)
                .into_iter()
                .map(|r| r.version.clone())
                .collect();
            let outdated = versions.iter().any(|v| version_older(v, release));
            if st.state == GatewayState::Provisioning {
                st.state = GatewayState::Running;
                events.push((
                    Severity::Info,
                    "GatewayRunning",
                    format!("replica {replica} is connected: the gateway is running"),
                ));
            }
            if st.state == GatewayState::Upgrading {
                let target = st.upgrading_to.clone().unwrap_or_else(|| release.to_string());
                let done = !versions.is_empty()
                    && versions.iter().all(|v| !version_older(v, &target));
                if done {
                    st.state = GatewayState::Running;
                    st.upgrading_to = None;
                    st.upgrade_available = None;
                    events.push((
                        Severity::Info,
                        "GatewayUpgraded",
                        format!("every connected replica runs agent {target}: the gateway is running"),
                    ));
                }
            } else if outdated && st.upgrade_available.as_deref() != Some(release) {
                st.upgrade_available = Some(release.to_string());
                events.push((
                    Severity::Info,
                    "GatewayUpgradeAvailable",
                    format!("agent {release} is available (a replica runs an older one): apply it with an upgrade"),
                ));
            } else if !outdated && st.upgrade_available.is_some() && st.state == GatewayState::Running {
                st.upgrade_available = None;
            }
            Ok(events)
        })
        .await
    }

    /// A replica disconnected (its connection ended or it was not heard from in time).
    pub async fn gateway_disconnected(&self, name: &str, replica: &str, why: &str) -> Result<()> {
        self.update_gateway_status(name, |st| {
            let mut events = Vec::new();
            if let Some(r) = st
                .replicas
                .iter_mut()
                .find(|r| r.id == replica && r.connected)
            {
                r.connected = false;
                events.push((
                    Severity::Warning,
                    "ReplicaDisconnected",
                    format!("replica {replica} disconnected: {why}"),
                ));
            }
            Ok(events)
        })
        .await
        .map(|_| ())
    }

    /// Starts the upgrade the gateway's notification offers: `Upgrading` until every connected
    /// replica runs the new agent; new clusters queue meanwhile, running ones are untouched.
    /// Returns the version upgraded to.
    pub async fn upgrade_gateway(&self, name: &str) -> Result<String> {
        self.running()?;
        self.require_gateway(name).await?;
        let mut target = String::new();
        self.update_gateway_status(name, |st| {
            let Some(v) = st.upgrade_available.clone() else {
                return Err(CoreError::GatewayState {
                    op: "upgrade",
                    gateway: name.to_string(),
                    state: "up to date (no upgrade notification)",
                });
            };
            if st.state != GatewayState::Running {
                return Err(CoreError::GatewayState {
                    op: "upgrade",
                    gateway: name.to_string(),
                    state: st.state.as_str(),
                });
            }
            st.state = GatewayState::Upgrading;
            st.upgrading_to = Some(v.clone());
            target = v.clone();
            Ok(vec![(
                Severity::Info,
                "GatewayUpgrading",
                format!(
                    "upgrading the gateway's agents to {v}: new clusters queue until it completes"
                ),
            )])
        })
        .await?;
        Ok(target)
    }

    /// Resets a gateway to `Pending` (the doc's Reset: provisioning stuck or misconfigured):
    /// its credential is revoked (connected agents are refused from their next request), its
    /// replicas forgotten, and a new pairing code issued.
    pub async fn reset_gateway(&self, name: &str) -> Result<PairingCode> {
        self.running()?;
        self.require_gateway(name).await?;
        self.update_gateway_status(name, |st| {
            let was = st.state.as_str();
            st.state = GatewayState::Pending;
            st.credential_hash = None;
            st.pairing = None;
            st.replicas.clear();
            st.upgrade_available = None;
            st.upgrading_to = None;
            Ok(vec![(
                Severity::Warning,
                "GatewayReset",
                format!("gateway reset from {was} to Pending: its credential is revoked; pair an agent again"),
            )])
        })
        .await?;
        self.gateway_pairing_code(name).await
    }

    async fn require_gateway(&self, name: &str) -> Result<()> {
        match self
            .inner
            .store
            .get_object(ObjectKind::Gateway, name)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(CoreError::NotFound {
                kind: "gateway",
                name: name.to_string(),
            }),
        }
    }

    /// The stored status (created, with a new id, on first use) and its revision.
    pub(super) async fn load_gateway_status(&self, name: &str) -> Result<(GatewayStatus, u64)> {
        load_gateway_status(&self.inner.store, name).await
    }

    /// Read-modify-write of a gateway's status with the store's revision check (retried on
    /// a concurrent write); `f` returns the events to record.
    async fn update_gateway_status(
        &self,
        name: &str,
        mut f: impl FnMut(&mut GatewayStatus) -> Result<Vec<(Severity, &'static str, String)>>,
    ) -> Result<GatewayStatus> {
        let mut last = None;
        for _ in 0..8 {
            let (mut st, rev) = self.load_gateway_status(name).await?;
            let before = st.clone();
            let events = f(&mut st)?;
            if st == before && events.is_empty() {
                return Ok(st);
            }
            match self
                .inner
                .store
                .put_object(ObjectKind::GatewayStatus, name, &encode(&st)?, Some(rev))
                .await
            {
                Ok(_) => {
                    for (severity, reason, message) in events {
                        self.gateway_event(st.id, severity, reason, &message)
                            .await?;
                    }
                    return Ok(st);
                }
                Err(e @ CoreError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(CoreError::Conflict {
            kind: "gateway status",
            name: name.to_string(),
            expected: 0,
            found: 0,
        }))
    }

    pub(super) async fn gateway_event(
        &self,
        id: uuid::Uuid,
        severity: Severity,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        let mut w = ClusterWrite::new(ClusterId(id));
        w.events.push(NewEvent {
            time: self.inner.clock.now(),
            severity,
            reason: reason.to_string(),
            message: message.to_string(),
        });
        let written = self.inner.store.commit(&w).await?;
        self.inner.published(&written);
        Ok(())
    }
}

/// A gateway's stored status, created (Pending, with a new id) when missing, and its revision
/// (0 when it was just made and not stored yet).
pub(crate) async fn load_gateway_status(
    store: &std::sync::Arc<dyn crate::store::Store>,
    name: &str,
) -> Result<(GatewayStatus, u64)> {
    match store.get_object(ObjectKind::GatewayStatus, name).await? {
        Some(o) => Ok((decode("gateway status", o.body)?, o.revision)),
        None => {
            let st = GatewayStatus {
                id: uuid::Uuid::new_v4(),
                ..Default::default()
            };
            match store
                .put_object(ObjectKind::GatewayStatus, name, &encode(&st)?, Some(0))
                .await
            {
                Ok(rev) => Ok((st, rev)),
                // Another writer made it first: read theirs.
                Err(CoreError::Conflict { .. }) => {
                    let o = store
                        .get_object(ObjectKind::GatewayStatus, name)
                        .await?
                        .ok_or(CoreError::NotFound {
                            kind: "gateway status",
                            name: name.to_string(),
                        })?;
                    Ok((decode("gateway status", o.body)?, o.revision))
                }
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_unambiguous_and_distinct() {
        let a = new_code().unwrap();
        let b = new_code().unwrap();
        assert_eq!(a.len(), CODE_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| CODE_ALPHABET.contains(&c)));
        assert_eq!(normalize_code(" abcd-efgh "), "ABCDEFGH");
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token().unwrap();
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, new_token().unwrap());
        assert_ne!(hash(&a), a);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_older("0.9.0", "0.10.0"));
        assert!(version_older("0.1.0", "0.1.1"));
        assert!(!version_older("1.0.0", "1.0.0"));
        assert!(!version_older("v2.0", "1.9.9"));
    }
}
