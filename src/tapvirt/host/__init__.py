"""Linux networking: the only place with ioctl, netlink, sysfs and device nodes."""
