//! The catalog an application writes before clusters: cluster profiles, cloud accounts, IP
//! pools and private cloud gateways (validated, stored with revisions, refused on delete
//! while something uses them).

use crate::error::{CoreError, Result};
use crate::model::{CloudAccount, Cluster, ClusterProfile, IpPool, PrivateCloudGateway};
use crate::store::ObjectKind;
use crate::validate::{self, Catalog};

use super::{decode, encode, executor, invalid, profile_key, Engine};

impl Engine {
    /// Creates or replaces a cluster profile (same name and version = a new revision:
    /// clusters on it get an update notification).
    pub async fn put_profile(&self, p: &ClusterProfile) -> Result<u64> {
        self.running()?;
        invalid(
            format!("cluster profile {}", p.name),
            validate::validate_profile(p),
        )?;
        let key = profile_key(&p.name, &p.version);
        let rev = self
            .inner
            .store
            .put_object(ObjectKind::Profile, &key, &encode(p)?, None)
            .await?;
        // Clusters on it learn of the new revision at once (update notification + event).
        let reference = p.reference();
        for c in self.inner.store.list_clusters(false).await? {
            if c.spec.profile == reference {
                self.inner.queue.add(c.id);
            }
        }
        Ok(rev)
    }

    /// Deletes a profile version. Refused, naming them, while live clusters' specs name it
    /// (clusters keep a snapshot of the profile they run, so older versions can go).
    pub async fn delete_profile(&self, name: &str, version: &str) -> Result<()> {
        let reference = crate::model::ProfileRef {
            name: name.to_string(),
            version: version.to_string(),
        };
        let users = self.cluster_users(|c| c.profile == reference).await?;
        self.delete_catalog_object(
            ObjectKind::Profile,
            "cluster profile",
            &profile_key(name, version),
            users,
        )
        .await
    }

    /// Deletes a cloud account. Refused, naming them, while live clusters use it.
    pub async fn delete_cloud_account(&self, name: &str) -> Result<()> {
        let users = self.cluster_users(|c| c.cloud_account == name).await?;
        self.delete_catalog_object(ObjectKind::CloudAccount, "cloud account", name, users)
            .await
    }

    /// Deletes an IP pool. Refused while live clusters' placements name it or any of its
    /// addresses is still allocated.
    pub async fn delete_ip_pool(&self, name: &str) -> Result<()> {
        let mut users = self
            .cluster_users(|c| {
                c.node_pools
                    .iter()
                    .flat_map(|p| &p.placements)
                    .any(|d| d.ip_pool.as_deref() == Some(name))
            })
            .await?;
        let leases = self.inner.store.ip_leases(Some(name), None).await?;
        if users.is_empty() && !leases.is_empty() {
            users.push(format!("{} allocated address(es)", leases.len()));
        }
        self.delete_catalog_object(ObjectKind::IpPool, "IP pool", name, users)
            .await
    }

    /// Deletes a private cloud gateway. Refused, listing them, while live clusters reach
    /// vCenter through it, cloud accounts other than its default one reference it, or IP
    /// pools are linked to it. Its default cloud account (made at pairing) and its status go
    /// with it; its agents are refused from their next request.
    pub async fn delete_gateway(&self, name: &str) -> Result<()> {
        let (_, status) = self.gateway_status(name).await?;
        let default = status.default_account.clone();
        let mut accounts = Vec::new();
        for o in self
            .inner
            .store
            .list_objects(ObjectKind::CloudAccount)
            .await?
        {
            let a: CloudAccount = decode("cloud account", o.body)?;
            if a.gateway() == Some(name) {
                accounts.push(a.name.clone());
            }
        }
        let mut users = self
            .cluster_users(|c| accounts.contains(&c.cloud_account))
            .await?;
        users.extend(
            accounts
                .iter()
                .filter(|a| default.as_ref() != Some(*a))
                .map(|a| format!("cloud account {a}")),
        );
        for o in self.inner.store.list_objects(ObjectKind::IpPool).await? {
            let p: IpPool = decode("ip pool", o.body)?;
            if p.gateway_name == name {
                users.push(format!("IP pool {}", p.name));
            }
        }
        self.delete_catalog_object(ObjectKind::Gateway, "gateway", name, users)
            .await?;
        if let Some(a) = default.filter(|a| accounts.contains(a)) {
            self.inner
                .store
                .delete_object(ObjectKind::CloudAccount, &a)
                .await?;
        }
        self.inner
            .store
            .delete_object(ObjectKind::GatewayStatus, name)
            .await?;
        Ok(())
    }

    /// `cluster NAME` for every live cluster whose spec matches.
    async fn cluster_users(&self, uses: impl Fn(&Cluster) -> bool) -> Result<Vec<String>> {
        Ok(self
            .inner
            .store
            .list_clusters(false)
            .await?
            .into_iter()
            .filter(|r| uses(&r.spec))
            .map(|r| format!("cluster {}", r.spec.name))
            .collect())
    }

    async fn delete_catalog_object(
        &self,
        kind: ObjectKind,
        what: &'static str,
        name: &str,
        users: Vec<String>,
    ) -> Result<()> {
        if !users.is_empty() {
            return Err(CoreError::InUse {
                kind: what,
                name: name.to_string(),
                users,
            });
        }
        if self.inner.store.delete_object(kind, name).await? {
            Ok(())
        } else {
            Err(CoreError::NotFound {
                kind: what,
                name: name.to_string(),
            })
        }
    }

    /// Reads a profile and its revision.
    pub async fn profile(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<(ClusterProfile, u64)>> {
        match self
            .inner
            .store
            .get_object(ObjectKind::Profile, &profile_key(name, version))
            .await?
        {
            Some(o) => Ok(Some((decode("profile", o.body)?, o.revision))),
            None => Ok(None),
        }
    }

    /// Creates or replaces a cloud account (its secrets are stored, never shown).
    pub async fn put_cloud_account(&self, a: &CloudAccount) -> Result<u64> {
        self.running()?;
        invalid(
            format!("cloud account {}", a.name),
            validate::validate_cloud_account(a),
        )?;
        self.inner
            .store
            .put_object(ObjectKind::CloudAccount, &a.name, &encode(a)?, None)
            .await
    }

    /// Asks the account's cloud whether the credentials work.
    pub async fn verify_cloud_account(&self, name: &str) -> Result<()> {
        let a = executor::load_account(&self.inner, name).await?;
        let p = self
            .inner
            .providers
            .get(&a.cloud())
            .ok_or(CoreError::NoProvider(a.cloud()))?;
        p.validate_account(&a).await.map_err(CoreError::from)
    }

    /// Creates or updates an IP pool.
    pub async fn put_ip_pool(&self, p: &IpPool) -> Result<u64> {
        self.running()?;
        let mut v = validate::validate_ip_pool(p);
        let old = self
            .inner
            .store
            .get_object(ObjectKind::IpPool, &p.name)
            .await?;
        if let Some(o) = &old {
            let old: IpPool = decode("ip pool", o.body.clone())?;
            v.extend(validate::validate_ip_pool_update(&old, p));
        }
        invalid(format!("IP pool {}", p.name), v)?;
        self.inner
            .store
            .put_object(
                ObjectKind::IpPool,
                &p.name,
                &encode(p)?,
                Some(old.map_or(0, |o| o.revision)),
            )
            .await
    }

    /// Creates or updates (resizes 1 → 3) a private cloud gateway. A new gateway is
    /// `Pending` until an agent pairs with it ([`Engine::gateway_pairing_code`]).
    pub async fn put_gateway(&self, g: &PrivateCloudGateway) -> Result<u64> {
        self.running()?;
        let mut v = validate::validate_gateway(g);
        let old = self
            .inner
            .store
            .get_object(ObjectKind::Gateway, &g.name)
            .await?;
        let mut old_size = None;
        if let Some(o) = &old {
            let old: PrivateCloudGateway = decode("gateway", o.body.clone())?;
            v.extend(validate::validate_gateway_update(&old, g));
            old_size = Some(old.size);
        }
        invalid(format!("gateway {}", g.name), v)?;
        // The state is the engine's to report, never the writer's.
        let mut body = g.clone();
        body.state = crate::model::GatewayState::default();
        let rev = self
            .inner
            .store
            .put_object(
                ObjectKind::Gateway,
                &g.name,
                &encode(&body)?,
                Some(old.map_or(0, |o| o.revision)),
            )
            .await?;
        let (status, _) = self.load_gateway_status(&g.name).await?;
        if let Some(was) = old_size.filter(|s| *s != g.size) {
            self.gateway_event(
                status.id,
                crate::records::event::Severity::Info,
                "GatewayResized",
                &format!(
                    "resized from {was} to {} replica(s): start the new agent replicas with the gateway's credential",
                    g.size
                ),
            )
            .await?;
        }
        Ok(rev)
    }

    pub(super) async fn catalog_for(&self, c: &Cluster) -> Result<Catalog> {
        let mut cat = Catalog {
            strict: true,
            ..Default::default()
        };
        if let Some((p, _)) = self.profile(&c.profile.name, &c.profile.version).await? {
            cat.profiles.insert((p.name.clone(), p.version.clone()), p);
        }
        if let Some(o) = self
            .inner
            .store
            .get_object(ObjectKind::CloudAccount, &c.cloud_account)
            .await?
        {
            let a: CloudAccount = decode("cloud account", o.body)?;
            cat.accounts.insert(a.name.clone(), a);
        }
        for pool in &c.node_pools {
            for d in &pool.placements {
                if let Some(name) = &d.ip_pool {
                    if let Some(o) = self
                        .inner
                        .store
                        .get_object(ObjectKind::IpPool, name)
                        .await?
                    {
                        cat.ip_pools
                            .insert(name.clone(), decode("ip pool", o.body)?);
                    }
                }
            }
        }
        Ok(cat)
    }
}
