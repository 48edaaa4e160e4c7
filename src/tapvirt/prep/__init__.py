"""tapvirt-prep: the privileged preparer and its deny-by-default policy."""
