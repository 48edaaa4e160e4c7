"""The `<domain>` level, one module per element: `root` walks `<domain>` itself (name,
uuid, memory, vcpu, os, lifecycle) and hands each sub-element to its module (`clock`,
`features`, `pm`, `metadata`, ...). Each module holds that element's model, parse, rules
and canonical format, like the device families in `tapvirt.conf.devices`.

This package's `__init__` imports nothing: `tapvirt.conf.model` imports the element types
from the modules here, and the modules never import `tapvirt.conf.model` (no cycle).
"""
