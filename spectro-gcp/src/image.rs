//! Machine images: the OS pack's `image` annotation names a ready Compute Engine image,
//! either an image family (`projects/P/global/images/family/F`) or an image
//! (`projects/P/global/images/NAME`), or the same as a URL
//! (`https://www.googleapis.com/compute/v1/projects/...`). The image is read (`images.get` or
//! `images.getFromFamily`): a missing, failed, obsolete or deleted image is a final error
//! naming the annotation. A family stays the machines' image reference (Compute Engine
//! boots a new machine from the family's newest image): the reference, and so the machines'
//! shape, does not change when the family publishes a new image, so nothing is repaved by
//! it; to roll a pool onto a new image, name the image or change the pack.

use spectro_core::budget::CallClass;
use spectro_core::model::pack::ANNOTATION_IMAGE;
use spectro_core::provider::{ImageRef, ImageSpec};

use crate::client::Gce;
use crate::error::{Class, GcpError};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageName {
    /// `projects/P/global/images/family/F`.
    Family {
        /// Project.
        project: String,
        /// Family.
        family: String,
    },
    /// `projects/P/global/images/NAME`.
    Image {
        /// Project.
        project: String,
        /// Image name.
        name: String,
    },
}

fn field() -> String {
    format!("annotation `{ANNOTATION_IMAGE}` of the os pack")
}

/// Parses an image reference (path or URL).
pub fn parse(reference: &str) -> Result<ImageName, GcpError> {
    let r = reference.trim();
    let path = r
        .find("projects/")
        .filter(|i| *i == 0 || r.starts_with("https://"))
        .map(|i| &r[i..])
        .unwrap_or(r);
    let parts: Vec<&str> = path.split('/').collect();
    let ok = |s: &str| crate::names::is_resource_name(s) || s.contains('.') && !s.is_empty();
    match parts.as_slice() {
        ["projects", p, "global", "images", "family", f] if ok(p) && ok(f) => {
            Ok(ImageName::Family {
                project: (*p).into(),
                family: (*f).into(),
            })
        }
        ["projects", p, "global", "images", n] if ok(p) && ok(n) => Ok(ImageName::Image {
            project: (*p).into(),
            name: (*n).into(),
        }),
        _ => Err(GcpError::invalid(
            field(),
            format!(
                "`{r}` is not a Compute Engine image: write projects/PROJECT/global/images/NAME or projects/PROJECT/global/images/family/FAMILY"
            ),
        )),
    }
}

/// Resolves the profile's image: one read.
pub async fn resolve(gce: &Gce, spec: &ImageSpec) -> Result<ImageRef, GcpError> {
    let Some(reference) = spec.base_image.as_deref() else {
        return Err(GcpError::invalid(
            field(),
            "is required on GCP: name a ready image (projects/PROJECT/global/images/NAME or .../family/FAMILY)",
        ));
    };
    let name = parse(reference)?;
    let found = match &name {
        ImageName::Family { project, family } => {
            gce.call("Images.GetFromFamily", CallClass::Read, || {
                gce.c
                    .images
                    .get_from_family()
                    .set_project(project)
                    .set_family(family)
                    .send()
            })
            .await
        }
        ImageName::Image { project, name } => {
            gce.call("Images.Get", CallClass::Read, || {
                gce.c
                    .images
                    .get()
                    .set_project(project)
                    .set_image(name)
                    .send()
            })
            .await
        }
    };
    let image = match found {
        Ok(i) => i,
        Err(e) if e.class() == Class::NotFound => {
            return Err(GcpError::invalid(
                field(),
                format!("image `{reference}` does not exist (or the account cannot read it)"),
            ))
        }
        Err(e) => return Err(e),
    };
    let project = match &name {
        ImageName::Family { project, .. } | ImageName::Image { project, .. } => project,
    };
    let image_name = image.name.clone().unwrap_or_default();
    if image
        .status
        .as_ref()
        .and_then(|s| s.name())
        .is_some_and(|s| s == "FAILED" || s == "DELETING")
        || image
            .deprecated
            .as_ref()
            .and_then(|d| d.state.as_ref())
            .and_then(|s| s.name())
            .is_some_and(|s| s == "OBSOLETE" || s == "DELETED")
    {
        return Err(GcpError::invalid(
            field(),
            format!("image `{reference}` ({image_name}) is not usable: failed, being deleted, obsolete or deleted"),
        ));
    }
    let id = match &name {
        ImageName::Family { family, .. } => {
            format!("projects/{project}/global/images/family/{family}")
        }
        ImageName::Image { .. } => format!("projects/{project}/global/images/{image_name}"),
    };
    Ok(ImageRef {
        id,
        customized: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed() {
        assert_eq!(
            parse("projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts").unwrap(),
            ImageName::Family {
                project: "ubuntu-os-cloud".into(),
                family: "ubuntu-2204-lts".into()
            }
        );
        assert_eq!(
            parse("https://www.googleapis.com/compute/v1/projects/p1/global/images/img-1").unwrap(),
            ImageName::Image {
                project: "p1".into(),
                name: "img-1".into()
            }
        );
        let e = parse("ubuntu-2204").unwrap_err().to_string();
        assert!(e.contains("annotation `image` of the os pack"), "{e}");
    }
}
