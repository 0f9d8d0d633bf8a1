//! AWS placement rules: region, key pair, bastion CIDRs, static placement (VPC and subnets
//! per zone), pool zones within the region, EBS volume types and sizes.

use std::collections::BTreeSet;

use super::super::rules::{is_aws_id, is_aws_region};
use super::super::{field, index, Report};
use super::disk_size;
use crate::model::{AwsPlacement, NodePool};

const AWS_VOLUME_TYPES: [&str; 7] = ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

/// `cloud.aws`: the cluster's placement.
pub(super) fn validate_placement(r: &mut Report, a: &AwsPlacement) {
    r.check(
        is_aws_region(&a.region),
        "cloud.aws.region",
        format!("`{}` is not an AWS region (e.g. us-east-1)", a.region),
    );
    if let Some(k) = &a.ssh_key_name {
        r.check(
            !k.trim().is_empty() && k.len() <= 255,
            "cloud.aws.sshKeyName",
            "must name an EC2 key pair (1 to 255 characters)",
        );
    }
    for (i, n) in a.bastion_allowed_cidrs.iter().enumerate() {
        r.check(
            n.trunc() == *n,
            index("cloud.aws.bastionAllowedCidrs", i),
            format!("`{n}` has host bits set: write the network, {}", n.trunc()),
        );
    }
    if let Some(s) = &a.static_placement {
        let base = "cloud.aws.staticPlacement";
        r.check(
            is_aws_id(&s.vpc_id, "vpc"),
            field(base, "vpcId"),
            format!("`{}` is not a VPC id (vpc-...)", s.vpc_id),
        );
        r.check(
            !s.subnets.is_empty(),
            field(base, "subnets"),
            "static placement needs at least one zone's subnets",
        );
        let mut zones = BTreeSet::new();
        for (i, z) in s.subnets.iter().enumerate() {
            let zb = index(&field(base, "subnets"), i);
            r.check(
                aws_zone_in_region(&z.zone, &a.region),
                field(&zb, "zone"),
                format!("`{}` is not a zone of region {}", z.zone, a.region),
            );
            r.check(
                zones.insert(z.zone.as_str()),
                field(&zb, "zone"),
                format!("zone `{}` is listed twice", z.zone),
            );
            r.check(
                is_aws_id(&z.private_subnet_id, "subnet"),
                field(&zb, "privateSubnetId"),
                format!("`{}` is not a subnet id (subnet-...)", z.private_subnet_id),
            );
            if let Some(p) = &z.public_subnet_id {
                r.check(
                    is_aws_id(p, "subnet"),
                    field(&zb, "publicSubnetId"),
                    format!("`{p}` is not a subnet id (subnet-...)"),
                );
            }
        }
    }
}

/// The rule an EC2 instance type `t` breaks, if any.
pub(super) fn instance_type_rule(t: &str) -> Option<String> {
    let ok = t.split_once('.').is_some_and(|(f, s)| {
        !f.is_empty()
            && !s.is_empty()
            && f.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    (!ok).then(|| format!("`{t}` is not an EC2 instance type (FAMILY.SIZE, e.g. m5.large)"))
}

/// A pool's AWS-specific shape: zones of the region (and of the static placement), volume.
pub(super) fn validate_pool(
    r: &mut Report,
    a: &AwsPlacement,
    p: &NodePool,
    base: &str,
    zones_path: &str,
) {
    r.check(
        !p.availability_zones.is_empty(),
        zones_path,
        "choose one or more availability zones",
    );
    for (i, z) in p.availability_zones.iter().enumerate() {
        r.check(
            aws_zone_in_region(z, &a.region),
            index(zones_path, i),
            format!("`{z}` is not a zone of region {}", a.region),
        );
        if let Some(s) = &a.static_placement {
            r.check(
                s.subnets.iter().any(|x| &x.zone == z),
                index(zones_path, i),
                format!("static placement has no subnets for zone `{z}`"),
            );
        }
    }
    if let Some(t) = &p.disk_type {
        r.check(
            AWS_VOLUME_TYPES.contains(&t.as_str()),
            field(base, "diskType"),
            format!("must be one of {}", AWS_VOLUME_TYPES.join(", ")),
        );
    }
    disk_size(r, base, p, 8, 16384);
}

/// What cannot change on AWS after creation: the region and the VPC.
pub(super) fn validate_update(r: &mut Report, a: &AwsPlacement, b: &AwsPlacement, immutable: &str) {
    r.check(a.region == b.region, "cloud.aws.region", immutable);
    r.check(
        a.static_placement.as_ref().map(|s| &s.vpc_id)
            == b.static_placement.as_ref().map(|s| &s.vpc_id),
        "cloud.aws.staticPlacement",
        "the VPC (or dynamic placement) cannot change after creation",
    );
}

fn aws_zone_in_region(zone: &str, region: &str) -> bool {
    zone.strip_prefix(region).is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 2
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}
