"""QEMU: per-interface checks and connection, the pure argv builder, QMP, processes."""
