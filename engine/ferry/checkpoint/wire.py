"""The replication protocol, version 1: ``ferry checkpoint send`` to ``ferry checkpoint
receive --stdio``, which the sender runs on the target through ssh.

    sender                                            target (its stdin and stdout)
    ------                                            -----------------------------
    HELLO {versions [lo, hi], engine} ------------->
                    <------------------------------- HELLO {version, engine}
    OFFER {name} ---------------------------------->   takes the VM's replica lock
                    <------------------------------- ACCEPT {replicas: ids held} | FAIL {reason}
    for each checkpoint the target lacks, oldest first:
    PLAN {id, base} ------------------------------->   base: the replica to link unchanged chunks from
    SECTION {manifest.json, checksum} + bytes ----->
    SECTION {state.bin, checksum} + bytes --------->   both checked by the snapshot reader's rules
                    <------------------------------- PLAN {need: chunk indexes}
                                                       (not needed: linked from base, or kept from
                                                       a send that was cut, each verified again)
    MEM (a: chunk index, b: 2 MiB) + bytes -------->   each checked against the manifest's digest
                                                       as it arrives, written into .ID.partial
    PREPARE --------------------------------------->   all there: synced, renamed to ID, then the
                                                       replicas pruned by the target's own policy
                    <------------------------------- DONE {id, received, linked, kept, pruned,
                                                       warnings} | FAIL {reason}
    DONE ------------------------------------------>   nothing more: the target ends

The frames are the migration protocol's (``migration/protocol.py``: the same header, kinds
and ``Channel``); what each may hold in this protocol is the two tables below, checked by
``migration/messages.py`` before any code reads a message. A MEM frame's header is checked
by the target itself before its payload is read: a chunk it asked for, exactly 2 MiB.
"""

from __future__ import annotations

from .. import inputs
from ..migration.messages import (MAX_CHUNKS, U32, Int, List, Optional, Schema, Text)
from ..migration.protocol import Kind, ProtocolError

VERSION = 1
MIN_VERSION = 1
MAX_REPLICAS = 100_000  # ids in one listing
MANIFEST, STATE = "manifest.json", "state.bin"


class Checked:
    """A field checked by one of ``ferry.inputs``' rules (a VM name, a snapshot id): what
    becomes a folder name on the target passes the rule that keeps it inside the state dir."""

    def __init__(self, rule):
        self.rule = rule

    def check(self, value, name: str):
        try:
            return self.rule(value, name)
        except inputs.InvalidName as err:
            raise ProtocolError(str(err)) from None


VM = Checked(inputs.vm_name)
ID = Checked(inputs.snapshot_id)
ENGINE = Optional(Text(64), "")
REASON = Optional(Text(1000), "")
COUNT = Int(0, MAX_CHUNKS)
VERSION_NUMBER = Int(0, U32)

# What the target reads.
TO_TARGET = {
    Kind.HELLO: Schema(versions=List(VERSION_NUMBER, 2, 2), engine=ENGINE),
    Kind.OFFER: Schema(name=VM),
    Kind.PLAN: Schema(id=ID, base=Optional(ID, None)),
    Kind.SECTION: Schema(name=Text(16, (MANIFEST, STATE)), checksum=Text(16, hex_digits=True)),
    Kind.PREPARE: Schema(),
    Kind.DONE: Schema(),
}

# What the sender reads.
TO_SENDER = {
    Kind.HELLO: Schema(version=VERSION_NUMBER, engine=ENGINE),
    Kind.ACCEPT: Schema(replicas=List(ID, MAX_REPLICAS)),
    Kind.FAIL: Schema(reason=REASON),
    Kind.PLAN: Schema(need=List(COUNT, MAX_CHUNKS)),
    Kind.DONE: Schema(id=ID, received=COUNT, linked=COUNT, kept=COUNT, pruned=List(ID, MAX_REPLICAS),
                      warnings=List(Text(1000), 100)),
}

