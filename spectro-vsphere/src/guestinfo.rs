//! What a node learns through `guestinfo.*` (cloud-init's VMware datasource, as Cluster
//! API's vSphere provider uses it): user data, and metadata with hostname and network.
//! Pure functions, tested without vCenter.

use base64::Engine as _;
use serde_json::{json, Value};
use spectro_core::bootstrap::ProxyCloudConfig;
use spectro_core::provider::NodeNetwork;

/// The extraConfig key of the user data.
pub const USERDATA: &str = "guestinfo.userdata";
/// The extraConfig key of the metadata.
pub const METADATA: &str = "guestinfo.metadata";
/// The extraConfig key of the load balancer's backend list (`addr:port` per line).
pub const LB_BACKENDS: &str = "guestinfo.spectro.lb-backends";
/// The extraConfig key carrying the owning cluster's id (set atomically with the clone).
pub const OWNER: &str = "spectro.cluster-id";
/// The extraConfig key carrying the machine mark (pool, role, zone, shape, token, address).
pub const MACHINE: &str = "spectro.machine";

/// The guestinfo entries of one VM: user data and metadata, base64 (gzip+base64 when the
/// user data is already gzip-compressed).
pub fn entries(
    name: &str,
    user_data: &[u8],
    network: Option<&NodeNetwork>,
) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let gz = user_data.starts_with(&[0x1f, 0x8b]);
    vec![
        (USERDATA.into(), b64.encode(user_data)),
        (
            format!("{USERDATA}.encoding"),
            if gz { "gzip+base64" } else { "base64" }.into(),
        ),
        (METADATA.into(), b64.encode(metadata(name, network))),
        (format!("{METADATA}.encoding"), "base64".into()),
    ]
}

/// cloud-init metadata: instance id, hostname, and a netplan v2 network: the static address,
/// gateway and DNS servers from the IP pool, or DHCP.
pub fn metadata(name: &str, network: Option<&NodeNetwork>) -> String {
    let eth = match network {
        Some(n) => {
            let mut e = json!({
                "match": { "name": "e*" },
                "set-name": "eth0",
                "dhcp4": false,
                "addresses": [format!("{}/{}", n.address, n.prefix)],
                "routes": [{ "to": "default", "via": n.gateway.to_string() }],
            });
            if !n.nameservers.is_empty() {
                e["nameservers"] = json!({
                    "addresses": n.nameservers.iter().map(|a| a.to_string()).collect::<Vec<_>>()
                });
            }
            e
        }
        None => json!({ "match": { "name": "e*" }, "set-name": "eth0", "dhcp4": true }),
    };
    let doc = json!({
        "instance-id": name,
        "local-hostname": name,
        "network": { "version": 2, "ethernets": { "id0": eth } },
    });
    serde_norway::to_string(&doc).unwrap_or_default()
}

/// HAProxy's configuration as the load balancer's cloud-config writes it: TCP on 6443, health
/// checks, the backends (`server cpN addr:port check`) appended after the `# spectro-backends`
/// line by [`LB_SYNC_SCRIPT`].
pub const HAPROXY_CFG: &str = "global\n    log stdout format raw local0\n    maxconn 4096\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\nfrontend kube-apiserver\n    bind *:6443\n    default_backend control-plane\nbackend control-plane\n    option tcp-check\n    balance roundrobin\n# spectro-backends\n";

/// The load balancer's backend sync (`/usr/local/bin/spectro-lb-sync`, every 5 s): reads
/// `guestinfo.spectro.lb-backends` with vmware-rpctool, rewrites HAProxy's backends and reloads
/// it when they changed. `SPECTRO_LB_CFG` overrides the configuration path (tests).
pub const LB_SYNC_SCRIPT: &str = r#"#!/bin/sh
# Rewrites HAProxy's backends from guestinfo when they change.
set -eu
want=$(vmware-rpctool "info-get guestinfo.spectro.lb-backends" 2>/dev/null || true)
cfg=${SPECTRO_LB_CFG:-/etc/haproxy/haproxy.cfg}
new=$(mktemp)
sed '/^# spectro-backends$/q' "$cfg" > "$new"
i=0
for b in $want; do
  i=$((i+1))
  echo "    server cp$i $b check" >> "$new"
done
if ! cmp -s "$new" "$cfg"; then
  mv "$new" "$cfg"
  chmod 0644 "$cfg"
  systemctl reload haproxy || systemctl restart haproxy
else
  rm -f "$new"
fi
"#;

/// User data of the HAProxy load-balancer VM (DHCP clusters): HAProxy in TCP mode on 6443
/// ([`HAPROXY_CFG`]), its backends read every 5 s from `guestinfo.spectro.lb-backends`
/// ([`LB_SYNC_SCRIPT`]), which the provider keeps equal to the control-plane nodes'
/// addresses (no network path to the VM needed, so it works from behind a private cloud
/// gateway). With the cluster's `proxy` (from
/// [`spectro_core::bootstrap::proxy_cloud_config`], as the nodes get it): the proxy variables
/// in `/etc/environment` and apt's proxy, so the `haproxy` and `open-vm-tools` packages
/// install behind it; no systemd drop-ins (HAProxy and the sync fetch nothing over HTTP).
pub fn load_balancer_user_data(
    cluster: &str,
    ssh_keys: &[String],
    proxy: Option<&ProxyCloudConfig>,
) -> String {
    let timer = "[Unit]\nDescription=spectro load balancer backend sync\n[Timer]\nOnBootSec=5s\nOnUnitActiveSec=5s\n[Install]\nWantedBy=timers.target\n";
    let service = "[Unit]\nDescription=spectro load balancer backend sync\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/spectro-lb-sync\n";
    let mut files = vec![
        json!({ "path": "/etc/haproxy/haproxy.cfg", "permissions": "0644", "content": HAPROXY_CFG }),
        json!({ "path": "/usr/local/bin/spectro-lb-sync", "permissions": "0755", "content": LB_SYNC_SCRIPT }),
        json!({ "path": "/etc/systemd/system/spectro-lb-sync.service", "permissions": "0644", "content": service }),
        json!({ "path": "/etc/systemd/system/spectro-lb-sync.timer", "permissions": "0644", "content": timer }),
    ];
    let mut doc = json!({
        "hostname": format!("{cluster}-lb"),
        "packages": ["haproxy", "open-vm-tools"],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "haproxy"],
            ["systemctl", "enable", "--now", "spectro-lb-sync.timer"],
        ],
    });
    if let Some(p) = proxy {
        files.extend(p.write_files.iter().cloned());
        doc["apt"] = p.apt.clone();
    }
    doc["write_files"] = Value::Array(files);
    if !ssh_keys.is_empty() {
        doc["users"] = json!([{
            "name": "spectro",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "ssh_authorized_keys": ssh_keys,
        }]);
    }
    format!(
        "#cloud-config\n{}",
        serde_norway::to_string(&doc).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(v: &str) -> String {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
    }

    #[test]
    fn static_metadata_carries_address_gateway_and_dns() {
        let n = NodeNetwork {
            address: "10.0.0.5".parse().unwrap(),
            prefix: 24,
            gateway: "10.0.0.1".parse().unwrap(),
            nameservers: vec!["10.0.0.2".parse().unwrap()],
        };
        let e = entries("c-w-1", b"#cloud-config\n", Some(&n));
        assert_eq!(e[1].1, "base64");
        let md: serde_json::Value = serde_norway::from_str(&decode(&e[2].1)).unwrap();
        assert_eq!(md["local-hostname"], "c-w-1");
        let eth = &md["network"]["ethernets"]["id0"];
        assert_eq!(eth["addresses"][0], "10.0.0.5/24");
        assert_eq!(eth["routes"][0]["via"], "10.0.0.1");
        assert_eq!(eth["nameservers"]["addresses"][0], "10.0.0.2");
        assert_eq!(eth["dhcp4"], false);
    }

    #[test]
    fn dhcp_metadata_and_gzip_user_data() {
        let e = entries("c-w-2", &[0x1f, 0x8b, 1, 2], None);
        assert_eq!(e[1].1, "gzip+base64");
        let md: serde_json::Value = serde_norway::from_str(&decode(&e[2].1)).unwrap();
        assert_eq!(md["network"]["ethernets"]["id0"]["dhcp4"], true);
    }

    #[test]
    fn load_balancer_user_data_is_cloud_config() {
        let u = load_balancer_user_data("c", &["ssh-ed25519 AAAA k".into()], None);
        assert!(u.starts_with("#cloud-config\n"));
        let doc: serde_json::Value = serde_norway::from_str(&u["#cloud-config\n".len()..]).unwrap();
        assert_eq!(doc["users"][0]["name"], "spectro");
        assert!(u.contains("guestinfo.spectro.lb-backends"));
    }
}
