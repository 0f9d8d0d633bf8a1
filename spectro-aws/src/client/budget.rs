//! Every request through the account's request budget: an HTTP client wrapping the SDK's
//! default one that takes a permit before each attempt (retries included). Throttled
//! answers reach the budget through the `ThrottleSignal` interceptor.
//!
//! AWS's Query protocol (EC2, classic ELB, STS) names the operation in the form body
//! (`Action=RunInstances&...`): reads are `Describe*`, `Get*` and `List*`, everything else
//! mutates; RunInstances also takes `MaxCount` permits of the instances bucket.

use std::sync::Arc;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use spectro_core::budget::{CallClass, RequestBudget};

/// The SDK's default HTTPS client (rustls, proxy settings from the environment), built once
/// and shared by every account's clients (one connection pool).
pub(crate) fn default_client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut b =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

/// An HTTP client whose every request waits on `budget`.
#[derive(Debug, Clone)]
pub(crate) struct BudgetedClient {
    pub(crate) inner: SharedHttpClient,
    pub(crate) budget: Arc<RequestBudget>,
}

impl HttpClient for BudgetedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(BudgetedConnector {
            inner: self.inner.http_connector(settings, components),
            budget: self.budget.clone(),
        })
    }
}

#[derive(Debug)]
struct BudgetedConnector {
    inner: SharedHttpConnector,
    budget: Arc<RequestBudget>,
}

/// What a request costs: its class, and the instances it launches. The JSON protocol
/// (Service Quotas) names the operation in `X-Amz-Target` (`Service.Operation`) instead.
pub(crate) fn cost_of(body: Option<&[u8]>, target: Option<&str>) -> (CallClass, u64) {
    if let Some(t) = target {
        return (class_of(t.rsplit('.').next().unwrap_or(t)), 0);
    }
    let Some(body) = body else {
        return (CallClass::Read, 0);
    };
    let mut action = "";
    let mut instances = 0;
    for pair in body.split(|b| *b == b'&') {
        let pair = std::str::from_utf8(pair).unwrap_or_default();
        if let Some(a) = pair.strip_prefix("Action=") {
            action = a;
        } else if let Some(n) = pair.strip_prefix("MaxCount=") {
            instances = n.parse().unwrap_or(1);
        }
    }
    match class_of(action) {
        CallClass::Mutate if action == "RunInstances" => (CallClass::Mutate, instances.max(1)),
        class => (class, 0),
    }
}

/// The class of an operation by its name: reads are `Describe*`, `Get*`, `List*`.
pub(crate) fn class_of(action: &str) -> CallClass {
    if ["Describe", "Get", "List"]
        .iter()
        .any(|p| action.starts_with(p))
    {
        CallClass::Read
    } else {
        CallClass::Mutate
    }
}

impl HttpConnector for BudgetedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (class, instances) = cost_of(
            request.body().bytes(),
            request.headers().get("x-amz-target"),
        );
        let inner = self.inner.clone();
        let budget = self.budget.clone();
        HttpConnectorFuture::new(async move {
            let over = |e| ConnectorError::other(Box::new(e), None);
            budget.acquire(class, 1).await.map_err(over)?;
            if instances > 0 {
                budget
                    .acquire(CallClass::Instances, instances)
                    .await
                    .map_err(over)?;
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_action_decides_the_class() {
        assert_eq!(
            cost_of(Some(b"Action=DescribeInstances&Version=2016-11-15"), None),
            (CallClass::Read, 0)
        );
        assert_eq!(
            cost_of(Some(b"Action=RunInstances&MaxCount=3&MinCount=3"), None),
            (CallClass::Mutate, 3)
        );
        assert_eq!(
            cost_of(Some(b"Action=CreateVpc&CidrBlock=10.0.0.0%2F16"), None),
            (CallClass::Mutate, 0)
        );
        assert_eq!(
            cost_of(Some(b"Action=GetCallerIdentity"), None),
            (CallClass::Read, 0)
        );
        assert_eq!(cost_of(None, None), (CallClass::Read, 0));
        assert_eq!(
            cost_of(
                Some(b"{\"ServiceCode\":\"vpc\"}"),
                Some("ServiceQuotasV20190624.ListServiceQuotas")
            ),
            (CallClass::Read, 0)
        );
    }
}
