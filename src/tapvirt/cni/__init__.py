"""tapvirt-cni: a CNI plugin that precreates a tap or macvtap in a pod, owned by the pod's
unprivileged uid, for tapvirt running inside the pod (docs/cni.md).

It imports nothing from `tapvirt.qemu`: the plugin only prepares devices.
"""
