//! `AwsProvider`: the `CloudProvider` for AWS, from the building blocks of this crate.
//!
//! Infrastructure (dynamic placement): the per-cluster network of [`crate::network`], a
//! classic ELB for the API server across the control-plane nodes (TCP 6443, health check
//! TCP:6443, in the public subnets), and a bastion in the first zone's public subnet as the
//! only SSH entry. Nodes: batched launches in the private subnets of their zone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_elasticloadbalancing::types::{HealthCheck, Listener, Tag as LbTag};
use spectro_core::model::{CloudAccount, CloudPlacement, CloudType, Credentials, PoolRole};
use spectro_core::provider::{
    CloudProvider, CloudResource, ClusterContext, DeleteStatus, ImageRef, ImageSpec, InfraStatus,
    Machine, MachineBatch, MachineState, ProviderError,
};

use crate::client::{AwsClients, AwsConnector, CallCounter};
use crate::error::from_sdk;
use crate::machines::{launch, list_machines, terminate, Launch};
use crate::network::{delete_network, ensure_network};

/// Largest user data EC2 accepts (before base64).
pub const USER_DATA_LIMIT: usize = 16 * 1024;
/// Bastion instance type.
pub const BASTION_TYPE: &str = "t3.micro";

/// The AWS cloud provider.
#[derive(Debug)]
pub struct AwsProvider {
    connector: AwsConnector,
    clients: Mutex<HashMap<(String, String), (AwsClients, aws_sdk_elasticloadbalancing::Client)>>,
}

fn region(ctx: &ClusterContext) -> Result<&str, ProviderError> {
    match &ctx.spec.cloud {
        CloudPlacement::Aws(a) => Ok(&a.region),
        _ => Err(ProviderError::Terminal {
            message: "not an AWS cluster".into(),
        }),
    }
}

/// The classic ELB's name: deterministic per cluster, at most 32 characters.
pub fn lb_name(cluster_id: &str) -> String {
    let hex: String = cluster_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(24)
        .collect();
    format!("spectro-{hex}")
}

impl AwsProvider {
    /// A provider reaching AWS through `connector`.
    pub fn new(connector: AwsConnector) -> Self {
        AwsProvider {
            connector,
            clients: Mutex::default(),
        }
    }

    /// API attempts by operation, for every account and region.
    pub fn calls(&self) -> &Arc<CallCounter> {
        self.connector.calls()
    }

    fn clients(
        &self,
        account: &CloudAccount,
        region: &str,
    ) -> Result<(AwsClients, aws_sdk_elasticloadbalancing::Client), ProviderError> {
        let Credentials::Aws(creds) = &account.credentials else {
            return Err(ProviderError::Unauthorized {
                message: format!("account {} holds no AWS credentials", account.name),
            });
        };
        let key = (creds.access_key_id.clone(), region.to_string());
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = self.connector.clients(creds, region);
        let lb = self.connector.elb_client(creds, region);
        map.insert(key, (c.clone(), lb.clone()));
        Ok((c, lb))
    }

    async fn ensure_lb(
        &self,
        lb: &aws_sdk_elasticloadbalancing::Client,
        ctx: &ClusterContext,
        subnets: Vec<String>,
        internal: bool,
        sg: String,
    ) -> Result<String, ProviderError> {
        let name = lb_name(&ctx.cluster_id.to_string());
        let found = lb
            .describe_load_balancers()
            .load_balancer_names(&name)
            .send()
            .await;
        if let Ok(out) = &found {
            if let Some(dns) = out
                .load_balancer_descriptions()
                .first()
                .and_then(|d| d.dns_name())
            {
                return Ok(dns.to_string());
            }
        }
        let mut req = lb
            .create_load_balancer()
            .load_balancer_name(&name)
            .listeners(
                Listener::builder()
                    .protocol("TCP")
                    .load_balancer_port(6443)
                    .instance_protocol("TCP")
                    .instance_port(6443)
                    .build()
                    .map_err(|e| ProviderError::Terminal {
                        message: e.to_string(),
                    })?,
            )
            .set_subnets(Some(subnets))
            .security_groups(sg);
        if internal {
            req = req.scheme("internal");
        }
        for (k, v) in ctx.ownership_tags() {
            req = req.tags(LbTag::builder().key(k).value(v).build().map_err(|e| {
                ProviderError::Terminal {
                    message: e.to_string(),
                }
            })?);
        }
        let out = req
            .send()
            .await
            .map_err(|e| from_sdk("CreateLoadBalancer", e))?;
        lb.configure_health_check()
            .load_balancer_name(&name)
            .health_check(
                HealthCheck::builder()
                    .target("TCP:6443")
                    .interval(10)
                    .timeout(5)
                    .unhealthy_threshold(3)
                    .healthy_threshold(2)
                    .build()
                    .map_err(|e| ProviderError::Terminal {
                        message: e.to_string(),
                    })?,
            )
            .send()
            .await
            .map_err(|e| from_sdk("ConfigureHealthCheck", e))?;
        Ok(out.dns_name().unwrap_or_default().to_string())
    }
}

#[async_trait]
impl CloudProvider for AwsProvider {
    fn cloud(&self) -> CloudType {
        CloudType::Aws
    }

    fn user_data_limit(&self) -> Option<usize> {
        Some(USER_DATA_LIMIT)
    }

    async fn validate_account(&self, account: &CloudAccount) -> Result<(), ProviderError> {
        let (c, _) = self.clients(account, "us-east-1")?;
        crate::image::caller_account(&c).await.map(|_| ())
    }

    async fn ensure_image(
        &self,
        ctx: &ClusterContext,
        spec: &ImageSpec,
    ) -> Result<ImageRef, ProviderError> {
        spec.require_ready_image("AWS", "AMI")?;
        let (c, _) = self.clients(&ctx.account, region(ctx)?)?;
        crate::image::resolve_image(&c, spec).await
    }

    async fn ensure_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<InfraStatus, ProviderError> {
        let CloudPlacement::Aws(aws) = &ctx.spec.cloud else {
            return Err(ProviderError::Terminal {
                message: "not an AWS cluster".into(),
            });
        };
        let (c, lb) = self.clients(&ctx.account, &aws.region)?;
        let id = ctx.cluster_id.to_string();
        let mut zones: Vec<String> = ctx
            .spec
            .node_pools
            .iter()
            .flat_map(|p| p.availability_zones.clone())
            .collect();
        zones.sort();
        zones.dedup();
        let tags = ctx.ownership_tags();
        let net = match &aws.static_placement {
            None => ensure_network(&c, &id, &ctx.spec.name, &zones, &tags).await?,
            Some(sp) => {
                // The user's VPC and subnets: only our security groups go in; nothing of
                // theirs is modified, and delete (by our tag) never touches it.
                let mut n = crate::network::observe(&c, &id).await?;
                n.vpc = sp.vpc_id.clone();
                for z in &sp.subnets {
                    n.private_subnets
                        .insert(z.zone.clone(), z.private_subnet_id.clone());
                    if let Some(p) = &z.public_subnet_id {
                        n.public_subnets.insert(z.zone.clone(), p.clone());
                    }
                }
                crate::network::ensure_security_groups(&c, &mut n, &ctx.spec.name, &tags).await?;
                n
            }
        };
        let internal = net.public_subnets.is_empty();
        let lb_subnets: Vec<String> = if internal {
            net.private_subnets.values().cloned().collect()
        } else {
            net.public_subnets.values().cloned().collect()
        };
        let dns = self
            .ensure_lb(
                &lb,
                ctx,
                lb_subnets,
                internal,
                net.security_groups["lb"].clone(),
            )
            .await?;
        // The bastion: the only SSH entry, in the first zone's public subnet.
        let mut resources = net.resources.clone();
        resources.push(CloudResource {
            kind: "load-balancer".into(),
            id: lb_name(&id),
        });
        let image = ctx.image.as_ref().ok_or_else(|| ProviderError::Retryable {
            message: "the bastion waits for the cluster image".into(),
        })?;
        let bastion_name = vec![format!("{}-bastion-0", ctx.spec.name)];
        let first_zone = zones
            .iter()
            .find(|z| net.public_subnets.contains_key(*z))
            .cloned();
        // Without a public subnet (static placement in private subnets) there is no bastion:
        // SSH reaches the nodes the way the user's network allows.
        let bastion = match first_zone {
            None => Vec::new(),
            Some(first_zone) => {
                launch(
                    &c,
                    &Launch {
                        cluster_id: &id,
                        tags: &tags,
                        token: &format!("{id}-bastion"),
                        names: &bastion_name,
                        pool: "bastion",
                        role: PoolRole::Worker,
                        shape: "bastion",
                        image: &image.id,
                        instance_type: BASTION_TYPE,
                        subnet: net
                            .public_subnets
                            .get(&first_zone)
                            .map(String::as_str)
                            .unwrap_or_default(),
                        security_groups: &[net.security_groups["bastion"].clone()],
                        key_name: aws.ssh_key_name.as_deref(),
                        user_data: b"#cloud-config\n",
                        bastion: true,
                    },
                )
                .await?
            }
        };
        resources.extend(bastion.iter().map(|m| CloudResource {
            kind: "bastion".into(),
            id: m.id.clone(),
        }));
        let mut outputs = std::collections::BTreeMap::new();
        for (z, s) in &net.private_subnets {
            outputs.insert(format!("subnet/{z}"), s.clone());
        }
        for (role, g) in &net.security_groups {
            outputs.insert(format!("sg/{role}"), g.clone());
        }
        outputs.insert("lb".into(), lb_name(&id));
        let ready = net.pending_nat == 0;
        Ok(InfraStatus {
            ready,
            endpoint: Some(format!("{dns}:6443")),
            resources,
            message: (!ready).then(|| format!("{} NAT gateway(s) pending", net.pending_nat)),
            outputs,
        })
    }

    async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
        let (c, _) = self.clients(&ctx.account, region(ctx)?)?;
        list_machines(&c, &ctx.cluster_id.to_string()).await
    }

    async fn create_machines(
        &self,
        ctx: &ClusterContext,
        infra: &InfraStatus,
        batch: &MachineBatch,
    ) -> Result<Vec<Machine>, ProviderError> {
        let CloudPlacement::Aws(aws) = &ctx.spec.cloud else {
            return Err(ProviderError::Terminal {
                message: "not an AWS cluster".into(),
            });
        };
        let (c, lb) = self.clients(&ctx.account, &aws.region)?;
        let out = |k: &str| {
            infra
                .outputs
                .get(k)
                .cloned()
                .ok_or_else(|| ProviderError::Retryable {
                    message: format!("the infrastructure has no {k} yet"),
                })
        };
        let subnet = out(&format!("subnet/{}", batch.zone))?;
        let sg = out(if batch.pool.is_control_plane() {
            "sg/control-plane"
        } else {
            "sg/worker"
        })?;
        let id = ctx.cluster_id.to_string();
        let machines = launch(
            &c,
            &Launch {
                cluster_id: &id,
                tags: &ctx.ownership_tags(),
                token: &batch.token,
                names: &batch.names,
                pool: &batch.pool.name,
                role: batch.pool.role,
                shape: &batch.shape,
                image: &batch.image.id,
                instance_type: batch.pool.instance_type.as_deref().unwrap_or("m5.large"),
                subnet: &subnet,
                security_groups: &[sg],
                key_name: aws.ssh_key_name.as_deref(),
                user_data: &batch.user_data,
                bastion: false,
            },
        )
        .await?;
        if batch.pool.is_control_plane() && !machines.is_empty() {
            lb.register_instances_with_load_balancer()
                .load_balancer_name(lb_name(&id))
                .set_instances(Some(
                    machines
                        .iter()
                        .map(|m| {
                            aws_sdk_elasticloadbalancing::types::Instance::builder()
                                .instance_id(&m.id)
                                .build()
                        })
                        .collect(),
                ))
                .send()
                .await
                .map_err(|e| from_sdk("RegisterInstancesWithLoadBalancer", e))?;
        }
        Ok(machines)
    }

    async fn delete_machines(
        &self,
        ctx: &ClusterContext,
        machines: &[Machine],
    ) -> Result<(), ProviderError> {
        let (c, _) = self.clients(&ctx.account, region(ctx)?)?;
        terminate(
            &c,
            &machines.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        )
        .await
    }

    async fn delete_infrastructure(
        &self,
        ctx: &ClusterContext,
    ) -> Result<DeleteStatus, ProviderError> {
        let (c, lb) = self.clients(&ctx.account, region(ctx)?)?;
        let id = ctx.cluster_id.to_string();
        lb.delete_load_balancer()
            .load_balancer_name(lb_name(&id))
            .send()
            .await
            .map_err(|e| from_sdk("DeleteLoadBalancer", e))?;
        // The bastion (and any node left over) goes before the network.
        let alive: Vec<Machine> = crate::machines::list_all(&c, &id).await?;
        let running: Vec<String> = alive
            .iter()
            .filter(|m| m.state != MachineState::Deleting)
            .map(|m| m.id.clone())
            .collect();
        if !running.is_empty() {
            terminate(&c, &running).await?;
        }
        if !alive.is_empty() {
            return Ok(DeleteStatus {
                done: false,
                remaining: alive
                    .iter()
                    .map(|m| CloudResource {
                        kind: "instance".into(),
                        id: m.id.clone(),
                    })
                    .collect(),
                message: Some("waiting for instances to terminate".into()),
            });
        }
        let left = delete_network(&c, &id).await?;
        Ok(DeleteStatus {
            done: left.is_empty(),
            message: (!left.is_empty()).then(|| "resources still present after delete".into()),
            remaining: left,
        })
    }
}
