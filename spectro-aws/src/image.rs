//! Machine images: the AMI for the OS + Kubernetes packs, and the account check.

use aws_sdk_ec2::types::{Filter, ImageState};
use spectro_core::provider::{ImageRef, ImageSpec, ProviderError};

use crate::client::AwsClients;
use crate::error::from_sdk;

/// The AMI name spectro publishes for an OS + Kubernetes pair (newest wins).
pub fn image_name_pattern(spec: &ImageSpec) -> String {
    format!(
        "spectro-{}-{}-k8s-{}*",
        spec.os.name, spec.os.version, spec.kubernetes.version
    )
}

/// Resolves the AMI: an explicit `image` annotation on the OS pack wins (it must exist in the
/// region); otherwise the newest available image named [`image_name_pattern`].
pub async fn resolve_image(c: &AwsClients, spec: &ImageSpec) -> Result<ImageRef, ProviderError> {
    if let Some(id) = &spec.base_image {
        let out = c
            .ec2
            .describe_images()
            .image_ids(id)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeImages", e));
        let found = match out {
            Ok(o) => o.images().iter().any(|i| i.image_id() == Some(id.as_str())),
            Err(ProviderError::Terminal { message }) if message.contains("NotFound") => false,
            Err(e) => return Err(e),
        };
        return if found {
            Ok(ImageRef {
                id: id.clone(),
                customized: false,
            })
        } else {
            Err(ProviderError::Terminal {
                message: format!(
                    "image {id} named by the `image` annotation of os pack {} does not exist in {}",
                    spec.os.name, c.region
                ),
            })
        };
    }
    let pattern = image_name_pattern(spec);
    let out = c
        .ec2
        .describe_images()
        .filters(Filter::builder().name("name").values(&pattern).build())
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(|e| from_sdk("DescribeImages", e))?;
    let newest = out
        .images()
        .iter()
        .filter(|i| i.state() == Some(&ImageState::Available) || i.state().is_none())
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()));
    match newest.and_then(|i| i.image_id()) {
        Some(id) => Ok(ImageRef {
            id: id.to_string(),
            customized: false,
        }),
        None => Err(ProviderError::Terminal {
            message: format!(
                "no image named {pattern} in {}: publish one, or name an AMI in the os pack's `image` annotation",
                c.region
            ),
        }),
    }
}

/// Checks the credentials (STS GetCallerIdentity) and returns the account id.
pub async fn caller_account(c: &AwsClients) -> Result<String, ProviderError> {
    let out = c
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| from_sdk("GetCallerIdentity", e))?;
    Ok(out.account().unwrap_or_default().to_string())
}
