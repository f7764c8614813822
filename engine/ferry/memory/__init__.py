"""Guest memory: the RAM itself (``guest``), its 2 MiB chunks and their digests
(``chunks``, ``digests``), KVM's dirty log (``dirty``), moving it to and from files
(``transfer``) and a saved image of it, raw, zstd or in chunk files (``image``). Snapshots and
migration both build on these; neither imports the other for them."""

from .guest import GuestMemory, GuestMemoryError, Region, plan_regions

__all__ = ["GuestMemory", "GuestMemoryError", "Region", "plan_regions"]
