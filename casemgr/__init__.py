"""casemgr: privacy-first case management for students in a school care programme."""

__version__ = "0.1.0"
