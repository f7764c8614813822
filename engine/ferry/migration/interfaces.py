"""What the two ends of a migration need from the host they run on (as cloud-hypervisor's
Pausable/Snapshottable/Migratable): the sender drives a ``Source`` (a ``LiveSource`` when
the VM runs), the receiver fills a ``Target``. ``host.migrate`` (a running VM over its control socket, or a stopped one)
and ``vmprocess.incoming`` implement them; the protocol code sees nothing else of the host.
"""

from __future__ import annotations

from typing import Callable, Protocol

from ..machine.state import Section


class SourceRam(Protocol):
    size: int
    fd: int | None  # a memfd the sender may sendfile from, or None

    def read(self, offset: int, length: int) -> bytes | memoryview: ...  # valid until the next read
    def used_ranges(self) -> list[tuple[int, int]]: ...


class Source(Protocol):
    """What every migration needs of the source (a cold one moves a stopped VM)."""

    memory: SourceRam
    pause_parts: dict  # where the last pause's time went, ms (see sender.DOWNTIME_PARTS)

    def begin(self, live: bool) -> None: ...
    def pause(self) -> list[tuple[int, int]]: ...        # the last dirty ranges (live), the guest paused
    def sections(self) -> list[Section]: ...
    def resume(self) -> None: ...                        # the migration failed before the handover
    def handover(self) -> None: ...                      # recorded durably before COMMIT is sent
    def finish(self, outcome: str, report: dict) -> None: ...
    def progress(self, progress: dict) -> None: ...


class LiveSource(Source, Protocol):
    """A running VM, which a live migration copies while it runs."""

    def dirty(self) -> list[tuple[int, int]]: ...        # ranges written since the last call
    def throttle(self, share: float) -> None: ...        # slow the vCPUs to this share (auto-converge)


class Target(Protocol):
    name: str
    log: Callable[[str], None]                            # the receiver's log, one line per call

    def check_offer(self, values: dict, memory: int, mode: str) -> None: ...
    def create_memory(self, size: int): ...              # a GuestMemory, or None for a cold migration
    def build(self, values: dict, memory, sections: list[Section]): ...   # a paused machine
    def ready(self) -> None: ...                          # everything the commit needs, on disk
    def commit(self, machine, values: dict) -> None: ...  # the one durable step, then run
    def discard(self) -> None: ...
