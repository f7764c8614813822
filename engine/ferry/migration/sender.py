"""The sending side: pre-copy with convergence control, then the two-phase handover.

``source`` is the running VM as the sender drives it (``host.migrate``
implements it over the VM's control socket): ``begin``, ``dirty``,
``throttle``, ``pause``, ``sections``, ``resume``, ``handover``,
``finish``, ``progress``, and ``memory`` (a ``SourceMemory``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .. import __version__
from ..errors import FerryError
from ..memory import chunks
from . import protocol
from ..memory.digests import ChunkDigests
from .interfaces import LiveSource, Source
from .laps import Laps
from .populate import chunk_runs
from .protocol import Kind, PeerFailed, ProtocolError
from .transport import Channel, LinkError

THROTTLE_START, THROTTLE_STEP, THROTTLE_MAX = 0.20, 0.10, 0.99
# Once the rest fits the downtime target, one more round while the guest runs still pays if the
# rest shrank to at most half the round before: it trades a long copy in the pause for a short one.
MAX_ROUNDS = 4        # pre-copy rounds, the first pass included, before the pause at the latest
SHORT_COPY_MS = 5.0   # a last copy this short is not worth another round
SETUP_PARTS = ("connect", "handshake", "begin", "scan", "accept")  # in order, as in the report
RESOLVE_TIMEOUT = 60.0


class MigrationTimeout(FerryError):
    pass


class InDoubt(FerryError):
    """The source cannot learn whether the destination committed: its guest stays paused."""


@dataclass
class Options:
    mode: str = "live"
    max_downtime_ms: float = 300.0
    timeout_s: float = 3600.0
    bandwidth: float | None = None  # bytes per second, None = as fast as the link goes
    token: bytes = b""


@dataclass
class Round:
    index: int
    bytes: int
    duration_ms: float
    dirty_bytes: int
    throttle: float
    # Where the round's time went, ms: the source's read, digest, send (blocked while the
    # socket is full) and sync (ROUND to ROUND_OK); the destination's wait (for the next
    # chunk), populate (its pages allocated), receive (out of the socket) and hash.
    parts: dict = field(default_factory=dict)


@dataclass
class Report:
    mode: str
    rounds: list[Round] = field(default_factory=list)
    total_ms: float = 0.0
    downtime_ms: float = 0.0
    final_bytes: int = 0
    stop_copy_ms: float = 0.0   # pause to last section sent
    prepare_ms: float = 0.0     # PREPARE to PREPARED: the destination checks and builds
    commit_ms: float = 0.0      # COMMIT to DONE: the destination records and starts
    setup_ms: float = 0.0       # start to the first memory sent
    setup_parts: dict = field(default_factory=dict)     # ms, in order; see SETUP_PARTS
    downtime_parts: dict = field(default_factory=dict)  # ms, in order; see DOWNTIME_PARTS
    bytes_on_wire: int = 0
    throttle: float = 0.0
    outcome: str = ""


# The downtime's steps, in the order they happen; each in ms, together the whole downtime.
# "in_flight" and "commit_link" are what the round trips took beyond the destination's own
# steps: the memory still on its way when the source sent PREPARE, and the link's latency.
DOWNTIME_PARTS = {
    "pause": "source VM process: stop the vCPUs, record stop-and-copy",
    "dirty_scan": "source VM process: read the last dirty log",
    "capture": "source VM process: capture the device state",
    "control": "source: the rest of that control call (socket, JSON, the answer decoded)",
    "last_send": "source: send the last dirty memory",
    "device_state": "source: send the device state",
    "digests": "source: hash the chunks the last send touched",
    "in_flight": "link: memory still in flight, and the PREPARE round trip",
    "check": "destination: hash what it still must and compare every chunk digest",
    "build": "destination: apply the device state to its paused machine",
    "handover": "source: record the handover durably",
    "commit_link": "link: the COMMIT round trip",
    "commit": "destination: publish the VM (rename, sync) and start its vCPUs",
}


def handshake(channel: Channel, token: bytes) -> dict:
    """HELLO and mutual HMAC proof of the one-time token; returns the destination's HELLO."""
    channel.send(Kind.HELLO, {"versions": [protocol.MIN_VERSION, protocol.VERSION],
                              "engine": __version__, "caps": list(protocol.CAPABILITIES)})
    _, hello = channel.expect(Kind.HELLO)
    if not protocol.MIN_VERSION <= hello["version"] <= protocol.VERSION:
        # A destination answering with a version this engine does not speak is not to be trusted with the VM.
        raise ProtocolError(f"no common protocol version: the destination chose {hello['version']}, "
                            f"this engine speaks {protocol.MIN_VERSION}-{protocol.VERSION}")
    mine = secrets.token_hex(16)
    channel.send(Kind.AUTH, {"nonce": mine, "proof": protocol.proof(token, "source", hello["nonce"], mine)})
    _, answer = channel.expect(Kind.AUTH_OK)
    if not protocol.proof_ok(protocol.proof(token, "destination", mine, hello["nonce"]), answer["proof"]):
        raise ProtocolError("the destination could not prove the token: refusing to send the VM")
    channel.authenticated()
    return hello


class Sender:
    def __init__(self, source: Source | LiveSource, connect: Callable[[], Channel], options: Options,
                 on_progress: Callable[[dict], None] = lambda progress: None):
        self.source = source
        self.connect = connect
        self.options = options
        self.on_progress = on_progress
        self.report = Report(options.mode)
        self.prepare_sent = False
        self.downtime: Laps | None = None  # from the pause on
        self.steps = Laps()                # the current round's, for Round.parts
        self.started = time.monotonic()
        self.progress = {"phase": "connecting", "bytes_sent": 0, "bytes_total": 0, "rate": 0.0,
                         "dirty_rate": 0.0, "round": 0, "throttle": 0.0, "eta_s": None}

    # --- the whole migration ---

    def run(self, definition: dict) -> Report:
        self.setup = Laps()
        channel = self.connect()
        try:
            self.setup.lap("connect")
            handshake(channel, self.options.token)
            self.setup.lap("handshake")
            self.source.begin(self.options.mode == "live")
            self.digests = ChunkDigests(self.source.memory.size, self.source.memory.read)
            self.setup.lap("begin")
            channel.send(Kind.OFFER, {"definition": definition, "memory": self.source.memory.size,
                                      "mode": self.options.mode})
            # While the destination makes room: a live migration's first pass is known already.
            self.used = self.source.memory.used_ranges() if self.options.mode == "live" else []
            self.setup.lap("scan")
            channel.expect(Kind.ACCEPT)
            if self.used:
                channel.send(Kind.PLAN, {"chunks": chunk_runs(self.used)})
            self.setup.lap("accept")
            self._transfer(channel)
            # Refused when the VM was powered off meanwhile (a cancel): then no COMMIT may go.
            self.source.handover()
            self.downtime.lap("handover")
        except BaseException:
            channel.close()
            if self.prepare_sent:
                self._tell_abort()
            self.source.resume()
            raise
        self._set(phase="handover")
        outcome = self._commit(channel)
        self.report.outcome = outcome
        self.report.total_ms = self._elapsed_ms()
        self.report.bytes_on_wire = channel.sent
        channel.close()
        self.source.finish(outcome, self._report_dict())
        if outcome != "committed":
            raise FerryError("the destination aborted the migration; the VM runs on here")
        return self.report

    def _transfer(self, channel: Channel) -> None:
        live = self.options.mode == "live"
        leftover = self._precopy(channel) if live else []
        if not live:
            self._setup_done()
        self._set(phase="stop-and-copy")
        self.downtime = Laps()
        self.paused_at = self.downtime.last
        final = self.source.pause()
        if not live:
            final = self.source.memory.used_ranges()
        self._peer_laps(self.downtime.lap("control"), "control", self.source.pause_parts)
        self.report.final_bytes = self._send_ranges(channel, merge(leftover + final))
        self.downtime.lap("last_send")
        for section in self.source.sections():
            channel.send_section(section.name, section.version, chunks.digest(section.data), section.data)
        self.downtime.lap("device_state")
        self.prepare_sent = True
        digests = self.digests.refresh()
        self.downtime.lap("digests")
        self.report.stop_copy_ms = sum(self.downtime.parts.values())
        channel.send(Kind.PREPARE, {"chunks": digests})
        _, prepared = channel.expect(Kind.PREPARED)
        self.report.prepare_ms = self._peer_laps(self.downtime.lap("in_flight"), "in_flight", prepared["parts"])

    # --- pre-copy ---

    def _precopy(self, channel: Channel) -> list[tuple[int, int]]:
        """Send while the guest runs; return what is still dirty when the rest fits the downtime."""
        self._set(phase="first-pass")
        self._setup_done()
        self.progress["bytes_total"] = sum(end - start for start, end in self.used)
        self._round(channel, self.used, dirty_bytes=0)
        while True:
            dirty = self.source.dirty()
            dirty_bytes = sum(end - start for start, end in dirty)
            rate = max(self.progress["rate"], 1.0)
            self._set(phase="pre-copy", dirty_rate=dirty_bytes / max(time.monotonic() - self._last_dirty, 1e-3),
                      eta_s=dirty_bytes / rate)
            copy_ms = dirty_bytes / rate * 1000
            if copy_ms <= self.options.max_downtime_ms:
                if self._last_round(copy_ms, dirty_bytes):
                    return dirty
            else:
                self._check_timeout(dirty_bytes)
                self._converge()
            self._round(channel, dirty, dirty_bytes)

    def _last_round(self, copy_ms: float, dirty_bytes: int) -> bool:
        """The rest fits the downtime target: pause now, or is one more round worth it?"""
        shrinking = dirty_bytes * 2 <= self.report.rounds[-1].bytes
        return copy_ms <= SHORT_COPY_MS or len(self.report.rounds) >= MAX_ROUNDS or not shrinking

    def _round(self, channel: Channel, ranges, dirty_bytes: int) -> None:
        """One pass over ``ranges``, over once the destination holds all of it: so the pause
        never waits for memory still in the socket buffers, and the rate is the link's."""
        self.steps = Laps()
        began = self.steps.last
        sent = self._send_ranges(channel, ranges)
        channel.send(Kind.ROUND, {"round": len(self.report.rounds), "dirty": dirty_bytes,
                                  "waited_ms": (time.monotonic() - began) * 1000})
        _, done = channel.expect(Kind.ROUND_OK)
        self.steps.lap("sync")
        took = max(time.monotonic() - began, 1e-6)
        self._last_dirty = began
        self.report.rounds.append(Round(len(self.report.rounds), sent, took * 1000, dirty_bytes,
                                        self.progress["throttle"],
                                        {"source": dict(self.steps.parts), "destination": done["parts"]}))
        self.digests.refresh()
        self._set(round=len(self.report.rounds), rate=sent / took if sent > 1 << 20 else self.progress["rate"])

    def _converge(self) -> None:
        """Auto-converge: the guest dirties faster than half the link drains, so slow its vCPUs."""
        if self.progress["dirty_rate"] <= 0.5 * max(self.progress["rate"], 1.0):
            return
        share = self.progress["throttle"]
        share = THROTTLE_START if share == 0 else min(share + THROTTLE_STEP, THROTTLE_MAX)
        self.source.throttle(share)
        self.report.throttle = share
        self._set(throttle=share)

    def _check_timeout(self, dirty_bytes: int) -> None:
        if time.monotonic() - self.started > self.options.timeout_s:
            raise MigrationTimeout(
                f"did not converge within {self.options.timeout_s:.0f} s: {dirty_bytes >> 20} MiB still dirty, "
                f"guest dirties {self.progress['dirty_rate'] / 2**20:.0f} MiB/s, link {self.progress['rate'] / 2**20:.0f} MiB/s, "
                f"throttle {self.progress['throttle']:.0%}")

    def _send_ranges(self, channel: Channel, ranges) -> int:
        memory, sent = self.source.memory, 0
        for start, end in ranges:
            for piece, length in chunks.pieces(start, end):
                sent += self._send_piece(channel, memory, piece, length)
                self._pace(channel)
        self.progress["bytes_sent"] = channel.sent
        return sent

    def _send_piece(self, channel: Channel, memory, start: int, length: int) -> int:
        """Send one piece within a chunk; a whole chunk is hashed, and sent as a range if zero."""
        if length == chunks.CHUNK_SIZE:
            data = memory.read(start, length)
            self.steps.lap("read")
            digest = chunks.digest(data)
            self.steps.lap("digest")
            self.digests.known(start, digest)
            if digest == chunks.ZERO_CHUNK_DIGEST:
                channel.send_zero(start, length)
                return 0
        else:
            self.digests.moved(start, start + length)
        channel.send_memory(start, length, memory)
        self.steps.lap("send")
        return length

    def _pace(self, channel: Channel) -> None:
        channel.pace(self.options.bandwidth, self.started)
        self.progress["bytes_sent"] = channel.sent

    # --- handover ---

    def _commit(self, channel: Channel) -> str:
        try:
            channel.send(Kind.COMMIT)
            _, done = channel.expect(Kind.DONE)
            self.report.commit_ms = self._peer_laps(self.downtime.lap("commit_link"), "commit_link", done["parts"])
            self._downtime()
            return "committed"
        except (LinkError, ProtocolError):
            return self.resolve()

    def resolve(self) -> str:
        """In doubt: ask the destination what happened, as long as it takes to reach it."""
        self._set(phase="in-doubt")
        deadline = time.monotonic() + RESOLVE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                channel = self.connect()
                try:
                    handshake(channel, self.options.token)
                    channel.send(Kind.QUERY)
                    _, outcome = channel.expect(Kind.OUTCOME)
                    if outcome["state"] == "prepared":
                        channel.send(Kind.COMMIT)
                        channel.expect(Kind.DONE)
                        outcome["state"] = "committed"
                    self._downtime()
                    return outcome["state"]
                finally:
                    channel.close()
            except PeerFailed as err:
                # A wrong token or no common version: asking again cannot change the answer.
                raise InDoubt(f"{err}; the VM stays paused here. Resolve with "
                              "`ferry migrate NAME --resolve ...` and the right token") from None
            except (LinkError, ProtocolError):
                time.sleep(1.0)
        raise InDoubt("could not learn whether the destination took over; the VM stays paused here. "
                      "Check the destination, then resolve with `ferry migrate NAME --resolve ...`")

    def _tell_abort(self) -> None:
        """The destination may hold a prepared copy: tell it to drop it now rather than at its timeout.
        Best effort: without COMMIT it never runs that copy anyway."""
        try:
            channel = self.connect()
            try:
                handshake(channel, self.options.token)
                channel.send(Kind.ABORT)
            finally:
                channel.close()
        except (LinkError, ProtocolError, OSError):
            pass

    def _downtime(self) -> None:
        self.report.downtime_ms = (time.monotonic() - self.paused_at) * 1000
        if self.downtime:  # a migration resolved by a later `ferry migrate --resolve` has none
            parts = self.downtime.parts
            self.report.downtime_parts = {name: parts[name] for name in DOWNTIME_PARTS if name in parts}

    def _peer_laps(self, took: float, name: str, theirs: dict) -> float:
        """Split a round trip's ``took`` ms into the other end's own steps and the rest (``name``)."""
        ours = self.downtime.parts
        ours[name] = round(max(took - sum(theirs.values()), 0.0), 3)
        ours.update(theirs)
        return took

    def _setup_done(self) -> None:
        self.report.setup_parts = dict(self.setup.parts)
        self.report.setup_ms = sum(self.setup.parts.values())

    # --- progress ---

    def _set(self, **fields) -> None:
        self.progress.update(fields)
        self.progress["elapsed_s"] = time.monotonic() - self.started
        self.on_progress(dict(self.progress))

    def _elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def _report_dict(self) -> dict:
        return asdict(self.report)


def merge(ranges) -> list[tuple[int, int]]:
    """Sorted ranges with overlaps joined, so no page travels twice in one go."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
