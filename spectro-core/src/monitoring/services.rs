//! Application services: every Service of type LoadBalancer or NodePort in any namespace,
//! with the links a user opens — the load balancer's host name or IP and the service port,
//! or (NodePort, and a LoadBalancer still waiting for its address) a node's address and the
//! node port. The node is a Ready worker when there is one (its `ExternalIP`, else
//! `InternalIP`). The scheme is `https` for ports 443 and 8443 and ports named `https*`,
//! `http` for other TCP ports; UDP and SCTP ports get `host:port` without a scheme.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::report::{NodeReport, ServicePortReport, ServiceReport};

/// A service with its links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppService {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `LoadBalancer` or `NodePort`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its ports.
    pub ports: Vec<ServicePortReport>,
    /// The links, one per port and address.
    pub links: Vec<String>,
}

impl AppService {
    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn link(host: &str, port: &ServicePortReport, number: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port.protocol != "TCP" {
        return format!("{host}:{number}");
    }
    let https =
        matches!(port.port, 443 | 8443) || port.name.to_ascii_lowercase().starts_with("https");
    format!("{}://{host}:{number}", if https { "https" } else { "http" })
}

/// The services of a report, sorted by namespace and name, with their links.
#[must_use]
pub fn app_services(services: &[ServiceReport], nodes: &[NodeReport]) -> Vec<AppService> {
    let node = nodes
        .iter()
        .filter(|n| n.ready())
        .min_by_key(|n| (n.control_plane, n.name.clone()))
        .or_else(|| {
            nodes
                .iter()
                .min_by_key(|n| (n.control_plane, n.name.clone()))
        })
        .and_then(NodeReport::reachable_address);
    let mut out: Vec<AppService> = services
        .iter()
        .filter(|s| s.kind == "LoadBalancer" || s.kind == "NodePort")
        .map(|s| {
            let mut links = Vec::new();
            for p in &s.ports {
                if s.kind == "LoadBalancer" && !s.ingress.is_empty() {
                    links.extend(s.ingress.iter().map(|h| link(h, p, p.port)));
                } else if let (Some(addr), Some(np)) = (node, p.node_port) {
                    links.push(link(addr, p, np));
                }
            }
            AppService {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                kind: s.kind.clone(),
                ports: s.ports.clone(),
                links,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::report::{NodeAddressReport, NodeConditionReport};

    fn port(name: &str, port: u16, np: Option<u16>) -> ServicePortReport {
        ServicePortReport {
            name: name.into(),
            protocol: "TCP".into(),
            port,
            node_port: np,
        }
    }

    #[test]
    fn links_for_load_balancers_and_node_ports_and_nothing_else() {
        let nodes = vec![
            NodeReport {
                name: "cp".into(),
                control_plane: true,
                conditions: vec![NodeConditionReport {
                    kind: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                addresses: vec![NodeAddressReport {
                    kind: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }],
                ..Default::default()
            },
            NodeReport {
                name: "w".into(),
                conditions: vec![NodeConditionReport {
                    kind: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                addresses: vec![NodeAddressReport {
                    kind: "InternalIP".into(),
                    address: "10.0.0.2".into(),
                }],
                ..Default::default()
            },
        ];
        let svc = |ns: &str, name: &str, kind: &str, ports, ingress: &[&str]| ServiceReport {
            namespace: ns.into(),
            name: name.into(),
            kind: kind.into(),
            ports,
            ingress: ingress.iter().map(|s| s.to_string()).collect(),
        };
        let out = app_services(
            &[
                svc(
                    "b",
                    "web",
                    "LoadBalancer",
                    vec![port("https", 443, Some(31443))],
                    &["lb.example.com"],
                ),
                svc("a", "np", "NodePort", vec![port("", 80, Some(30080))], &[]),
                svc("a", "internal", "ClusterIP", vec![port("", 80, None)], &[]),
                svc(
                    "c",
                    "pending",
                    "LoadBalancer",
                    vec![port("", 8080, Some(30111))],
                    &[],
                ),
            ],
            &nodes,
        );
        let links: Vec<_> = out.iter().map(|s| (s.key(), s.links.clone())).collect();
        assert_eq!(
            links,
            [
                (
                    "a/np".to_string(),
                    vec!["http://10.0.0.2:30080".to_string()]
                ),
                (
                    "b/web".to_string(),
                    vec!["https://lb.example.com:443".to_string()]
                ),
                (
                    "c/pending".to_string(),
                    vec!["http://10.0.0.2:30111".to_string()]
                ),
            ]
        );
    }
}
