"""The one table of which operation a VM takes in which migration phase."""

import pytest

from ferry.control import operations as ops
from ferry.control import protocol as control
from ferry.vmprocess.outgoing import Outgoing
from ferry.vmprocess.process import VmProcess


class _Names:
    """Stands for a VM process: every attribute is its own name, the migration steps are real."""

    outgoing = Outgoing(None)

    def __getattr__(self, name):
        return name


def test_the_vm_process_serves_exactly_the_tables_socket_operations():
    served = set(VmProcess.operations(_Names()))
    assert served == ops.ON_SOCKET, sorted(served ^ ops.ON_SOCKET)
    ops.check_served(served)
    with pytest.raises(AssertionError, match="snapshot"):
        ops.check_served(served - {"snapshot"})


def test_a_client_cannot_send_an_operation_the_table_lacks(tmp_path):
    # Refused before any connection: there is no socket at this path at all.
    with pytest.raises(control.ControlError, match="op: 'do_pause' is not a control operation"):
        control.request(tmp_path / "control.sock", "do_pause")
    with pytest.raises(control.ControlError, match="op: 'define' is not a control operation"):
        control.request(tmp_path / "control.sock", "define")  # a folder operation, the host API's


@pytest.mark.parametrize("op", ["resume", "pause", "shutdown", "snapshot", "poweroff", "start", "define",
                                "undefine", "restore", "migration-begin"])
@pytest.mark.parametrize("phase", ops.SETTLING)
def test_nothing_but_the_migration_itself_moves_a_vm_in_the_handover(op, phase):
    with pytest.raises(ops.Busy) as refused:
        ops.check(op, phase, "vm1", "h2:7400")
    assert str(refused.value).startswith(f"busy: vm1 is migrating to h2:7400 ({phase})")
    assert "--resolve" in str(refused.value)


@pytest.mark.parametrize("op", ["pause", "resume", "snapshot", "shutdown", "migration-begin", "define", "start"])
@pytest.mark.parametrize("phase", ops.MOVING)
def test_operations_that_would_break_a_moving_migration_are_busy(op, phase):
    with pytest.raises(ops.Busy, match=rf"^busy: vm1 is migrating to h2 \({phase}\)"):
        ops.check(op, phase, "vm1", "h2")


@pytest.mark.parametrize("phase", ops.MOVING)
def test_poweroff_is_a_cancel_before_the_handover(phase):
    ops.check("poweroff", phase, "vm1")


@pytest.mark.parametrize("op", ["define", "start", "restore", "undefine"])
def test_a_vm_arriving_here_cannot_be_made_here_too(op):
    with pytest.raises(ops.Busy, match=r"arriving here by migration \(receiving\)"):
        ops.check(op, ops.RECEIVING, "vm1")


def test_migration_steps_need_a_migration():
    with pytest.raises(ops.Busy, match="needs a migration under way"):
        ops.check("migration-handover", ops.IDLE, "vm1")


def test_unknown_operations_are_refused():
    with pytest.raises(ops.Conflict, match="unknown operation"):
        ops.check("format-disk", ops.IDLE, "vm1")


@pytest.mark.parametrize("op", sorted(ops.ALLOWED))
def test_status_and_idle_vms_take_every_ordinary_operation(op):
    ops.check("status", ops.COMMITTED, "vm1")
    if not op.startswith("migration-") or op == "migration-begin":
        ops.check(op, ops.IDLE, "vm1")


@pytest.mark.parametrize("record, alive, phase", [
    ({}, False, ops.IDLE),
    ({"role": "source", "phase": ops.PRECOPY}, True, ops.PRECOPY),
    ({"role": "source", "phase": ops.PRECOPY}, False, ops.IDLE),        # died with its process
    ({"role": "source", "phase": ops.STOP_AND_COPY}, False, ops.IDLE),
    ({"role": "source", "phase": ops.HANDOVER}, False, ops.HANDOVER),   # durable: resolve first
    ({"role": "source", "phase": ops.IN_DOUBT}, True, ops.IN_DOUBT),
    ({"role": "source", "phase": "aborted"}, True, ops.IDLE),
    ({"role": "destination", "phase": "committed"}, True, ops.IDLE),    # arrived here: ours now
])
def test_phase_of_a_folder(record, alive, phase):
    assert ops.phase_of(record, alive) == phase
