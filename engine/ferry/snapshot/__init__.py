"""Snapshots: a self-describing, versioned on-disk image of a running VM."""
