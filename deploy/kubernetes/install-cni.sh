#!/bin/sh
# Run by the tapvirt-cni DaemonSet: install the plugin into the node's CNI directory
# (mounted at /host/opt/cni/bin) atomically, then stay, so the pod shows the node has it.
set -eu
dest=/host/opt/cni/bin
cp /usr/lib/tapvirt/tapvirt-cni "$dest/.tapvirt-cni.new"
chmod 0755 "$dest/.tapvirt-cni.new"
mv -f "$dest/.tapvirt-cni.new" "$dest/tapvirt-cni"
echo "tapvirt-cni installed in /opt/cni/bin (needs python3 >= 3.11 on the node)"
exec sleep infinity
