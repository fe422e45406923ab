"""The receive path: options, checks and opening of the capture (AF_XDP or kernel socket)."""
