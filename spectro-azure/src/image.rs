//! Machine images: the OS pack's `image` annotation names a ready Azure image, either a
//! marketplace URN (`publisher:offer:sku:version`, `version` may be `latest`) or the resource
//! id of a managed image or a gallery image version (`/subscriptions/...`).
//!
//! ARM checks that the image exists when a VM is created: the image APIs are not part of
//! the VM and network APIs this provider is validated against, so [`resolve`] checks the
//! reference's form and a missing image is the VM create's final refusal
//! (`PlatformImageNotFound`, `InvalidParameter`).

use spectro_core::model::pack::ANNOTATION_IMAGE;
use spectro_core::provider::{ImageRef, ImageSpec};

use crate::error::AzureError;
use crate::models::ImageReference;

/// The image reference of an image id (URN or resource id).
pub fn image_reference(id: &str) -> Result<ImageReference, AzureError> {
    let id = id.trim();
    if id.starts_with("/subscriptions/") {
        let ok = id.contains("/providers/Microsoft.Compute/images/")
            || id.contains("/providers/Microsoft.Compute/galleries/");
        if !ok {
            return Err(AzureError::invalid(
                format!("annotation `{ANNOTATION_IMAGE}` of the os pack"),
                format!("`{id}` is not a managed image or gallery image version id"),
            ));
        }
        return Ok(ImageReference {
            id: Some(id.to_string()),
            ..ImageReference::default()
        });
    }
    let parts: Vec<&str> = id.split(':').collect();
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() != 4 || !parts.iter().all(|p| valid_part(p)) {
        return Err(AzureError::invalid(
            format!("annotation `{ANNOTATION_IMAGE}` of the os pack"),
            format!(
                "`{id}` is neither a marketplace URN (publisher:offer:sku:version) nor an image resource id (/subscriptions/...)"
            ),
        ));
    }
    Ok(ImageReference {
        id: None,
        publisher: Some(parts[0].into()),
        offer: Some(parts[1].into()),
        sku: Some(parts[2].into()),
        version: Some(parts[3].into()),
    })
}

/// The image for the OS + Kubernetes packs: the OS pack's `image` annotation, checked.
pub fn resolve(spec: &ImageSpec) -> Result<ImageRef, AzureError> {
    let Some(id) = spec.base_image.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Err(AzureError::invalid(
            format!("annotation `{ANNOTATION_IMAGE}` of os pack {}", spec.os.name),
            "Azure needs a ready image: name a marketplace URN (publisher:offer:sku:version) or an image resource id with Kubernetes installed",
        ));
    };
    image_reference(id)?;
    Ok(ImageRef {
        id: id.trim().to_string(),
        customized: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_and_ids_are_told_apart() {
        let r = image_reference("Canonical:ubuntu-24_04-lts:server:latest").unwrap();
        assert_eq!(r.publisher.as_deref(), Some("Canonical"));
        assert_eq!(r.version.as_deref(), Some("latest"));
        let id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/k/images/u/versions/1.0.0";
        assert_eq!(image_reference(id).unwrap().id.as_deref(), Some(id));
        for bad in ["ami-123", "a:b:c", "a:b::d", "/subscriptions/s/other"] {
            let e = image_reference(bad).unwrap_err().to_string();
            assert!(e.contains("annotation `image`"), "{e}");
        }
    }
}
