//! `AzureProvider`: the `CloudProvider` for Azure, from the building blocks of this crate.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use spectro_core::model::{CloudAccount, CloudType, Credentials};
use spectro_core::provider::{
    CloudProvider, ClusterContext, ClusterId, DeleteStatus, ImageRef, ImageSpec, InfraStatus,
    Machine, MachineBatch, ProviderError,
};

use crate::client::{Arm, AzureConnector, CallCounter, COMPUTE_API};
use crate::error::AzureError;
use crate::names::placement;

/// The Azure cloud provider: one connector (endpoints, token source, a request budget per
/// subscription shared by every cluster, call counter) for every account.
#[derive(Debug, Clone, Default)]
pub struct AzureProvider {
    connector: AzureConnector,
}

fn credentials(
    account: &CloudAccount,
) -> Result<&spectro_core::model::AzureCredentials, AzureError> {
    match &account.credentials {
        Credentials::Azure(c) => Ok(c),
        _ => Err(AzureError::NoCredentials {
            account: account.name.clone(),
        }),
    }
}

impl AzureProvider {
    /// A provider reaching Azure through `connector`.
    #[must_use]
    pub fn new(connector: AzureConnector) -> Self {
        AzureProvider { connector }
    }

    /// The connector.
    pub fn connector(&self) -> &AzureConnector {
        &self.connector
    }

    /// Every attempt by operation.
    pub fn calls(&self) -> &Arc<CallCounter> {
        self.connector.calls()
    }

    /// The ARM client of `ctx`'s cluster: its account in its subscription.
    pub fn arm(&self, ctx: &ClusterContext) -> Result<Arm, AzureError> {
        let a = placement(ctx)?;
        Ok(self
            .connector
            .arm(credentials(&ctx.account)?, &a.subscription_id))
    }
}

#[async_trait]
impl CloudProvider for AzureProvider {
    fn cloud(&self) -> CloudType {
        CloudType::Azure
    }

    fn user_data_limit(&self) -> Option<usize> {
        Some(crate::machines::USER_DATA_LIMIT)
    }

    /// A token from Entra ID, then (when the account names a subscription) one read in the
    /// subscription: the error names what failed.
    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        let creds = credentials(account)?;
        let Some(sub) = creds.subscription_id.as_deref() else {
            // No subscription to read: the token alone proves the credentials.
            let arm = self.connector.arm(creds, "-");
            return arm.check_token().await.map_err(ProviderError::from);
        };
        let arm = self.connector.arm(creds, sub);
        arm.check_token().await?;
        let path = format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines");
        match arm
            .send(
                "VirtualMachines.ListAll",
                reqwest::Method::GET,
                &arm.url_of(&path, COMPUTE_API),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                Err(ProviderError::unauthorized(format!(
                    "client {} cannot read subscription {sub}: {e}",
                    creds.client_id
                ))
                .with_source(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_image(
        &self,
        _ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        spec.require_ready_image("Azure", "image")?;
        Ok(crate::image::resolve(spec)?)
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        Ok(crate::network::ensure(&self.arm(ctx)?, ctx).await?)
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        let rg = &placement(ctx)?.resource_group;
        let mut all = crate::machines::list_group(&self.arm(ctx)?, rg).await?;
        Ok(all.remove(&ctx.cluster_id).unwrap_or_default())
    }

    /// Clusters of one identity in one subscription and resource group: one listing of the
    /// group's VMs and NICs observes all of them.
    fn fleet(&self, ctx: &ClusterContext) -> Option<String> {
        let a = placement(ctx).ok()?;
        let c = credentials(&ctx.account).ok()?;
        Some(format!(
            "azure/{}/{}/{}/{}",
            c.tenant_id,
            c.client_id,
            a.subscription_id,
            a.resource_group.to_ascii_lowercase()
        ))
    }

    async fn list_fleet(
        &self,
        ctx: &ClusterContext,
    ) -> Result<HashMap<ClusterId, Vec<Machine>>, ProviderError> {
        let rg = &placement(ctx)?.resource_group;
        let mut all = crate::machines::list_group(&self.arm(ctx)?, rg).await?;
        all.entry(ctx.cluster_id).or_default();
        Ok(all)
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        Ok(crate::machines::create(&self.arm(ctx)?, ctx, infra, batch).await?)
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        Ok(crate::machines::delete(&self.arm(ctx)?, machines).await?)
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        Ok(crate::network::delete(&self.arm(ctx)?, ctx).await?)
    }
}
