"""The systemd service: notify protocol, the unit, install, least privilege."""
