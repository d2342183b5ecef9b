"""Bytes from the kernel to typed events. No kernel access here."""
