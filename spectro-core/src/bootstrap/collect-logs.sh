#!/bin/bash
# spectro node log collector: archives this node's cloud-init, kubelet, container runtime,
# container and kernel logs (and a few facts about the node) into one tar.gz to attach to a
# support ticket. Installed on every node by cloud-init as /usr/local/bin/spectro-collect-logs.
#
# Usage: spectro-collect-logs [DESTDIR]     (default: /tmp)
# SPECTRO_LOG_ROOT: a directory standing for / (the paths read are below it; for tests).
set -u
# The archive holds every pod's log: readable by its owner only.
umask 077

root="${SPECTRO_LOG_ROOT:-}"
destdir="${1:-/tmp}"
stamp="$(date -u +%Y%m%d-%H%M%S)"
host="$(hostname 2>/dev/null || echo node)"
name="spectro-logs-${host}-${stamp}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$name" "$destdir"

# Facts about the node (each best effort).
{
  echo "collected: $stamp (UTC)"
  uname -a
  cat "$root/etc/os-release" 2>/dev/null
  df -h 2>/dev/null
  free -m 2>/dev/null
  ip -brief address 2>/dev/null
} > "$work/$name/node.txt"

# The journal of the units that build a node (the kubelet logs only there), last 3 days.
if [ -z "$root" ] && command -v journalctl >/dev/null 2>&1; then
  for unit in kubelet containerd cloud-init cloud-config cloud-final; do
    journalctl --no-pager --since=-3d -u "$unit" > "$work/$name/journal-$unit.log" 2>&1 || true
  done
  journalctl --no-pager --since=-3d -k > "$work/$name/journal-kernel.log" 2>&1 || true
fi
# cloud-init's output holds kubeadm's join command: its token and certificate key blanked.
if [ -f "$root/var/log/cloud-init-output.log" ]; then
  sed -E 's/(--token|--certificate-key)([ =]+)[^ ]+/\1\2***/g' \
    "$root/var/log/cloud-init-output.log" > "$work/$name/cloud-init-output.log"
fi
if [ -z "$root" ] && command -v crictl >/dev/null 2>&1; then
  crictl ps -a > "$work/$name/containers.txt" 2>&1 || true
fi

# Log files and directories that exist on this node, relative to the root.
found=()
for path in \
  /var/log/cloud-init.log \
  /var/log/containers \
  /var/log/pods \
  /var/log/kern.log \
  /var/log/syslog \
  /var/log/messages; do
  if [ -e "$root$path" ]; then
    found+=("${path#/}")
  fi
done
for path in "$root"/var/log/syslog.* "$root"/var/log/kern.log.*; do
  if [ -e "$path" ]; then
    found+=("${path#"$root"/}")
  fi
done

archive="$destdir/$name.tgz"
# -h: /var/log/containers holds symlinks into /var/log/pods. Logs still being written
# change while they are read: tar then exits 1 with a complete archive (2 is a failure).
rc=0
tar --create --gzip --dereference --ignore-failed-read --warning=no-file-changed \
  --file="$archive" -C "$work" "$name" -C "${root:-/}" "${found[@]}" || rc=$?
if [ "$rc" -gt 1 ]; then
  echo "spectro-collect-logs: could not write $archive" >&2
  exit 1
fi
echo "$archive"
