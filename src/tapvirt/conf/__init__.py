"""Domain definitions: libvirt XML <-> the typed model. Pure: no I/O but reading text."""
