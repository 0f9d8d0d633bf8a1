//! Pack objects: server-side apply (field manager `spectro`, forced) and deletion.

use std::collections::HashMap;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use spectro_core::workload::{Manifest, ObjectRef, WorkloadError, FIELD_MANAGER};

use crate::kube_err;

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// The API of one object's kind (discovered once per kind and call).
async fn api_for(
    client: &kube::Client,
    cache: &mut HashMap<(String, String), (ApiResource, bool)>,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>, WorkloadError> {
    let key = (api_version.to_string(), kind.to_string());
    if !cache.contains_key(&key) {
        let (ar, caps) = pinned_kind(client, &gvk(api_version, kind))
            .await
            .map_err(|e| kube_err(format!("discover {api_version} {kind}"), e))?;
        cache.insert(key.clone(), (ar, caps.scope == Scope::Namespaced));
    }
    let (ar, namespaced) = &cache[&key];
    Ok(if *namespaced {
        Api::namespaced_with(client.clone(), namespace.unwrap_or("default"), ar)
    } else {
        Api::all_with(client.clone(), ar)
    })
}

fn field<'a>(o: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut v = o;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

pub(crate) async fn apply(
    client: &kube::Client,
    objects: &[Manifest],
) -> Result<(), WorkloadError> {
    let mut cache = HashMap::new();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for m in objects {
        let o = &m.object;
        let (Some(av), Some(kind), Some(name)) = (
            field(o, &["apiVersion"]),
            field(o, &["kind"]),
            field(o, &["metadata", "name"]),
        ) else {
            return Err(WorkloadError::Invalid(
                "a manifest object lacks apiVersion, kind or metadata.name".into(),
            ));
        };
        let ns = field(o, &["metadata", "namespace"]);
        let api = api_for(client, &mut cache, av, kind, ns).await?;
        api.patch(name, &params, &Patch::Apply(o))
            .await
            .map_err(|e| {
                kube_err(
                    format!(
                        "apply {kind} {}{name}",
                        ns.map(|n| format!("{n}/")).unwrap_or_default()
                    ),
                    e,
                )
            })?;
    }
    Ok(())
}

pub(crate) async fn delete(client: &kube::Client, r: &ObjectRef) -> Result<bool, WorkloadError> {
    let mut cache = HashMap::new();
    let api = match api_for(
        client,
        &mut cache,
        &r.api_version,
        &r.kind,
        r.namespace.as_deref(),
    )
    .await
    {
        Ok(a) => a,
        // The kind itself is gone (its CRD was pruned first): nothing left to delete.
        Err(WorkloadError::Refused { code: 404, .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    match api.delete(&r.name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(kube_err(format!("delete {r}"), e)),
    }
}
