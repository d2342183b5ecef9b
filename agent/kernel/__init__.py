"""Kernel side, seen from user space: feature probes, the attach table,
and the loader (the only module that imports bcc)."""
