"""Ferry's bundled hypervisor engine."""

__version__ = "0.1.0"
