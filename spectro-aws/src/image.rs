//! Machine images: the AMI for the OS + Kubernetes packs, and the account check.

use aws_sdk_ec2::types::{Filter, ImageState};
use spectro_core::provider::{ImageRef, ImageSpec};

use crate::client::AwsClients;
use crate::error::{from_sdk, AwsError};

/// The AMI name spectro publishes for an OS + Kubernetes pair (newest wins).
pub fn image_name_pattern(spec: &ImageSpec) -> String {
    format!(
        "spectro-{}-{}-k8s-{}*",
        spec.os.name, spec.os.version, spec.kubernetes.version
    )
}

/// OS pack annotation: further AWS accounts whose AMIs may be picked by name, comma-separated
/// 12-digit account ids (`amazon` and `aws-marketplace` are accepted too). The cluster's own
/// account (`self`) is always searched; nobody else's image is picked unless named here.
pub const ANNOTATION_IMAGE_OWNERS: &str = "imageOwners";

/// The owners an image may be picked from by name: `self` plus the OS pack's
/// [`ANNOTATION_IMAGE_OWNERS`].
pub fn image_owners(spec: &ImageSpec) -> Result<Vec<String>, AwsError> {
    let mut owners = vec!["self".to_string()];
    if let Some(text) = spec.os.annotations.get(ANNOTATION_IMAGE_OWNERS) {
        for o in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ok = (o.len() == 12 && o.bytes().all(|b| b.is_ascii_digit()))
                || matches!(o, "self" | "amazon" | "aws-marketplace");
            if !ok {
                return Err(AwsError::invalid(
                    format!(
                        "annotation `{ANNOTATION_IMAGE_OWNERS}` of os pack {}",
                        spec.os.name
                    ),
                    format!("`{o}` is not an AWS account id (12 digits)"),
                ));
            }
            if !owners.iter().any(|x| x == o) {
                owners.push(o.to_string());
            }
        }
    }
    Ok(owners)
}

/// An image as resolved, with the device name of its root volume.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// The image.
    pub image: ImageRef,
    /// `RootDeviceName` of the AMI (e.g. `/dev/xvda`), when AWS reports it.
    pub root_device_name: Option<String>,
}

/// Resolves the AMI: an explicit `image` annotation on the OS pack wins (it must exist in the
/// region); otherwise the newest available image named [`image_name_pattern`] owned by the
/// account itself or by an owner the OS pack names ([`ANNOTATION_IMAGE_OWNERS`]).
pub async fn resolve_image(c: &AwsClients, spec: &ImageSpec) -> Result<ImageRef, AwsError> {
    resolve(c, spec).await.map(|r| r.image)
}

/// The root device name of an AMI (one DescribeImages).
pub async fn root_device_name(c: &AwsClients, ami: &str) -> Result<String, AwsError> {
    let out = c
        .ec2
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .map_err(|e| from_sdk("DescribeImages", e))?;
    out.images()
        .iter()
        .find(|i| i.image_id() == Some(ami))
        .and_then(|i| i.root_device_name())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Unexpected {
            op: "DescribeImages",
            message: format!("image {ami} reports no root device name in {}", c.region),
        })
}

/// [`resolve_image`], with the image's root device name.
pub async fn resolve(c: &AwsClients, spec: &ImageSpec) -> Result<ResolvedImage, AwsError> {
    if let Some(id) = &spec.base_image {
        let out = c
            .ec2
            .describe_images()
            .image_ids(id)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeImages", e));
        let found = match out {
            Ok(o) => o
                .images()
                .iter()
                .find(|i| i.image_id() == Some(id.as_str()))
                .map(|i| i.root_device_name().map(str::to_string)),
            Err(e) if e.has_code(&["InvalidAMIID.NotFound"]) => None,
            Err(e) => return Err(e),
        };
        return if let Some(root_device_name) = found {
            Ok(ResolvedImage {
                image: ImageRef {
                    id: id.clone(),
                    customized: false,
                },
                root_device_name,
            })
        } else {
            Err(AwsError::NotFound {
                kind: "image",
                id: id.clone(),
                field: format!("the `image` annotation of os pack {}", spec.os.name),
                region: c.region.clone(),
            })
        };
    }
    let pattern = image_name_pattern(spec);
    let owners = image_owners(spec)?;
    let out = c
        .ec2
        .describe_images()
        .set_owners(Some(owners.clone()))
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
    match newest.and_then(|i| i.image_id().map(|id| (id, i.root_device_name()))) {
        Some((id, root)) => Ok(ResolvedImage {
            image: ImageRef {
                id: id.to_string(),
                customized: false,
            },
            root_device_name: root.map(str::to_string),
        }),
        None => Err(AwsError::NoImage {
            pattern,
            owners,
            region: c.region.clone(),
        }),
    }
}

/// Checks the credentials (STS GetCallerIdentity) and returns the account id.
pub async fn caller_account(c: &AwsClients) -> Result<String, AwsError> {
    let out = c
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| from_sdk("GetCallerIdentity", e))?;
    Ok(out.account().unwrap_or_default().to_string())
}
