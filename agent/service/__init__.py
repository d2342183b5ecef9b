"""Running as a long-lived service: systemd notification, status, reload, overload control."""
