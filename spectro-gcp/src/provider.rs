//! `GcpProvider`: the `CloudProvider` for GCP, from the building blocks of this crate.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use spectro_core::budget::CallClass;
use spectro_core::model::{CloudAccount, CloudType, Credentials, GcpCredentials};
use spectro_core::provider::{
    CloudProvider, ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec, InfraStatus,
    Machine, MachineBatch, ProviderError,
};

use crate::client::{key_identity, CallCounter, Gce, GcpConnector};
use crate::error::{Class, GcpError};
use crate::names::placement;

/// The GCP cloud provider: one connector (endpoint, a request budget per project shared by
/// every cluster, call counter, clients per service-account key) for every account.
#[derive(Debug, Clone, Default)]
pub struct GcpProvider {
    connector: GcpConnector,
}

fn credentials(account: &CloudAccount) -> Result<&GcpCredentials, GcpError> {
    match &account.credentials {
        Credentials::Gcp(c) => Ok(c),
        _ => Err(GcpError::Credentials {
            account: account.name.clone(),
            message: "holds no GCP service-account key".into(),
        }),
    }
}

impl GcpProvider {
    /// A provider reaching Compute Engine through `connector`.
    #[must_use]
    pub fn new(connector: GcpConnector) -> Self {
        GcpProvider { connector }
    }

    /// The connector.
    #[must_use]
    pub fn connector(&self) -> &GcpConnector {
        &self.connector
    }

    /// Every attempt by operation.
    #[must_use]
    pub fn calls(&self) -> &Arc<CallCounter> {
        self.connector.calls()
    }

    /// The Compute Engine client of `ctx`'s cluster: its account in its project.
    pub async fn gce(&self, ctx: &ClusterContext) -> Result<Gce, GcpError> {
        let g = placement(ctx)?;
        self.connector
            .gce(&ctx.account.name, credentials(&ctx.account)?, &g.project)
            .await
    }
}

#[async_trait]
impl CloudProvider for GcpProvider {
    fn cloud(&self) -> CloudType {
        CloudType::Gcp
    }

    fn user_data_limit(&self) -> Option<usize> {
        Some(crate::machines::USER_DATA_LIMIT)
    }

    /// A token signed with the key, then one read in the key's project (its regions): the
    /// error names the service account and the project, never the key.
    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        let creds = credentials(account)?;
        let id = key_identity(&account.name, creds.service_account_json.expose())?;
        if id.project_id.is_empty() {
            return Err(GcpError::Credentials {
                account: account.name.clone(),
                message: "credentials.gcp.serviceAccountJson has no `project_id`".into(),
            }
            .into());
        }
        let gce = self
            .connector
            .gce(&account.name, creds, &id.project_id)
            .await?;
        gce.check_token(&account.name).await?;
        let project = id.project_id.clone();
        let read = gce
            .call("Regions.List", CallClass::Read, || {
                gce.c
                    .regions
                    .list()
                    .set_project(&project)
                    .set_max_results(1_u32)
                    .send()
            })
            .await;
        match read {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.class(),
                    Class::Unauthorized | Class::NotFound | Class::Terminal
                ) =>
            {
                Err(ProviderError::unauthorized(format!(
                    "service account {} cannot read project {project}: {e}",
                    id.client_email
                ))
                .with_source(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        spec.require_ready_image("GCP", "image")?;
        Ok(crate::image::resolve(&self.gce(ctx).await?, spec).await?)
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        Ok(crate::network::ensure(&self.gce(ctx).await?, ctx).await?)
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        let mut all = crate::machines::list_project(&self.gce(ctx).await?).await?;
        Ok(all.remove(&ctx.cluster_id).unwrap_or_default())
    }

    /// Clusters of one project: one aggregated listing of the project's instances observes
    /// all of them (whatever account each uses: the listing shows every spectro instance of
    /// the project).
    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        let g = placement(ctx).ok()?;
        Some(format!("gcp/{}", g.project))
    }

    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        let mut all = crate::machines::list_project(&self.gce(ctx).await?).await?;
        all.entry(ctx.cluster_id).or_default();
        Ok(all)
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        Ok(crate::machines::create(&self.gce(ctx).await?, ctx, infra, batch).await?)
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        Ok(crate::machines::delete(&self.gce(ctx).await?, machines).await?)
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        Ok(crate::network::delete(&self.gce(ctx).await?, ctx).await?)
    }
}
