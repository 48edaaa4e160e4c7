"""tapvirt: run QEMU guests without privileges on precreated tap and macvtap devices."""

__version__ = "0.1.0"
