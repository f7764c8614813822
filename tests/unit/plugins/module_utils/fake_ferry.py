"""A fake ``ferry --json`` for the module tests: ``module.run_command`` answering as the engine
does, over VMs and snapshots held in memory. The names are checked by the engine's own input
checks and errors are the engine's own classes, so messages and kinds are the real ones; the
contract tests (``test_the_fake_ferry_answers_as_the_real_one`` and the snapshot one) run the
same calls against the real command and the fake and compare what a module would see."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import json

from ferry import inputs
from ferry.cli import error_kind
from ferry.control.operations import Busy
from ferry.errors import Conflict, FerryError, NotFound
from ferry.store.definition import validate

NAME = "vm1"
STATE_DIR = "/var/lib/ferry"
ACTIVE = ("running", "paused")
# What the fake host offers a VM (host-info cpu.features) and a running VM sees.
HOST_FEATURES = ["avx2", "fpu", "hypervisor", "sse2"]


def _option(options, flag, default=None):
    return options[options.index(flag) + 1] if flag in options else default


def _repeated(options, flag):
    return [options[index + 1] for index, option in enumerate(options) if option == flag]


class FakeFerry:
    """(rc, stdout, stderr) as ``module.run_command`` returns them, errors as the engine's JSON
    line. ``calls`` records each command that changes something, ``commands`` every argv."""

    CHANGING = ("define", "start", "stop", "poweroff", "pause", "resume", "undefine", "snapshot create",
                "snapshot delete", "restore")

    def __init__(self, vm=None, busy=False, snapshots=None):
        self.vms = {vm["name"]: vm} if vm else {}
        self.main = vm["name"] if vm else NAME
        self.snapshots = {self.main: list(snapshots or [])}
        self.busy = busy  # as during a migration: the engine refuses every change
        self.calls = []
        self.commands = []
        self.clock = 0

    @property
    def vm(self):
        """The VM the fake was made with (the one the vm module tests look at)."""
        return self.vms.get(self.main)

    def run_command(self, argv, data=None):
        self.commands.append((argv, data))
        assert isinstance(argv, list) and argv[1] == "--json", argv
        # The real run_command cannot pass a NUL in an argument at all.
        assert not any("\0" in arg for arg in argv), argv
        command, rest = argv[2], argv[3:]
        positional = rest[rest.index("--") + 1:] if "--" in rest else []
        options = rest[:rest.index("--")] if "--" in rest else rest
        if command == "snapshot":
            command, options = f"snapshot {options[0]}", options[1:]
        try:
            result = self.answer(command, positional, options, data)
        except FerryError as err:
            return 1, "", json.dumps({"error": str(err), "kind": error_kind(err)}, sort_keys=True) + "\n"
        return 0, json.dumps(result, sort_keys=True) + "\n", ""

    def answer(self, command, positional, options, data):
        state_dir = _option(options, "--state-dir", STATE_DIR)
        if command == "define":
            new = validate(json.loads(data)).to_dict()
            if "--check" in options:
                return new
            positional = [new["name"]]
        if command == "host-info":
            return self._host_info(state_dir)
        if command == "list":
            return [copy.deepcopy(self.vms[name]) for name in sorted(self.vms)]
        name = inputs.vm_name(positional[0])  # as the engine: every name passes its one check first
        if command == "status":
            return self._existing(name, state_dir)
        if command == "snapshot list":
            self._existing(name, state_dir)
            return copy.deepcopy(self.snapshots.get(name, []))
        if self.busy and command in self.CHANGING:
            raise Busy(f"{name}: busy migrating to 10.0.0.2:7400; {command.split()[-1]} is refused until it ends")
        self.calls.append(command)
        if command == "define":
            return self._define(new, state_dir)
        if command in ("stop", "poweroff"):
            inputs.seconds(float(_option(options, "--timeout", "30")), zero=command == "stop")
        vm = self._existing(name, state_dir)
        if command == "snapshot create":
            return self._create(vm, _option(options, "--snapshot"), _repeated(options, "--tag"), options, state_dir)
        if command == "snapshot delete":
            return self._delete(vm, positional[1])
        if command == "restore":
            return self._restore(vm, positional[1], _option(options, "--as"), "--replace" in options, state_dir)
        return getattr(self, "_" + command)(vm)

    def _existing(self, name, state_dir):
        if name not in self.vms:
            raise NotFound(f"no VM named {name!r} in {state_dir}")
        return copy.deepcopy(self.vms[name])

    def _set_state(self, name, state):
        vm = self.vms[name]
        active = state in ACTIVE
        vm.update(state=state, pid=4242 if active else None, error=None,
                  started_at=(vm.get("started_at") or 1.0e9) if active else None,
                  cpu_features=HOST_FEATURES if active else None)
        return copy.deepcopy(vm)

    def _define(self, new, state_dir):
        vm = self.vms.get(new["name"])
        if vm is None:
            folder = f"{state_dir}/vms/{new['name']}"
            self.vms[new["name"]] = dict(new, state="stopped", error=None, pid=None, started_at=None, boot_count=0,
                                         path=folder, console_log=f"{folder}/console.log", restored_from=None,
                                         cpu_features=None)
            self.snapshots.setdefault(new["name"], [])
        else:
            if vm["state"] in ACTIVE and (vm["vcpus"], vm["memory"]) != (new["vcpus"], new["memory"]):
                raise Conflict(f"{new['name']}: vcpus and memory of a running VM cannot change; "
                               "stop it first, then define and start it again")
            vm.update(new)
        return copy.deepcopy(self.vms[new["name"]])

    def _start(self, vm):
        if vm["state"] not in ACTIVE:
            self.vms[vm["name"]]["restored_from"] = None  # a fresh boot
        return self._set_state(vm["name"], "paused" if vm["state"] == "paused" else "running")

    def _stop(self, vm):
        return self._set_state(vm["name"], "stopped")

    def _poweroff(self, vm):
        return self._set_state(vm["name"], "stopped")

    def _running(self, vm):
        if vm["state"] not in ACTIVE:
            raise Conflict(f"{vm['name']}: the VM is not running")

    def _pause(self, vm):
        self._running(vm)
        return self._set_state(vm["name"], "paused")

    def _resume(self, vm):
        self._running(vm)
        return self._set_state(vm["name"], "running")

    def _undefine(self, vm):
        if vm["state"] in ACTIVE:
            raise Conflict(f"{vm['name']}: the VM is running; stop it before undefining it")
        del self.vms[vm["name"]]
        self.snapshots.pop(vm["name"], None)
        return {"name": vm["name"], "state": "absent"}

    # --- snapshots ---

    def _find(self, vm, snapshot_id):
        inputs.snapshot_id(snapshot_id, "id")
        for snapshot in self.snapshots.get(vm["name"], []):
            if snapshot["id"] == snapshot_id:
                return snapshot
        raise NotFound(f"{vm['name']}: no snapshot {snapshot_id!r}")

    def _create(self, vm, snapshot_id, tags, options, state_dir):
        if snapshot_id is not None:
            inputs.snapshot_id(snapshot_id)
        if vm["state"] not in ACTIVE:
            raise Conflict(f"{vm['name']}: the VM is not running; a snapshot saves a running VM")
        self.clock += 1
        snapshot_id = snapshot_id or f"2026-12-03T00:00:{self.clock:02d}Z"
        kept = self.snapshots.setdefault(vm["name"], [])
        if any(snapshot["id"] == snapshot_id for snapshot in kept):
            raise Conflict(f"snapshot: {vm['name']} already has a snapshot {snapshot_id!r}")
        compressed = "--compress" in options
        # As the engine: a snapshot shares the unchanged chunks of the newest uncompressed one.
        parents = [] if compressed or "--full" in options else [s for s in kept if not s["compression"]]
        snapshot = {"id": snapshot_id, "vm": vm["name"], "created": f"2026-12-03T00:00:{self.clock:02d}.000000Z",
                    "mode": "stop-the-world" if "--stop-the-world" in options else "live", "tags": tags,
                    "origin": {"kind": "manual"}, "pause_ms": 3.0, "total_ms": 120.0, "disk_bytes": 4096,
                    "memory_bytes": vm["memory"] << 20, "compression": "zstd" if compressed else None,
                    "compress_ms": 10.0 if compressed else None, "protected": False,
                    "parent": parents[-1]["id"] if parents else None, "shared_bytes": 4096 if parents else 0,
                    "path": f"{state_dir}/vms/{vm['name']}/snapshots/{snapshot_id}"}
        kept.append(snapshot)
        return copy.deepcopy(snapshot)

    def _delete(self, vm, snapshot_id):
        snapshot = self._find(vm, snapshot_id)
        self.snapshots[vm["name"]].remove(snapshot)
        return {"deleted": True, "id": snapshot_id, "vm": vm["name"]}

    def _restore(self, vm, snapshot_id, as_name, replace, state_dir):
        self._find(vm, snapshot_id)
        origin = {"vm": vm["name"], "snapshot": snapshot_id}
        if as_name is not None:
            inputs.vm_name(as_name, "as")
            if as_name in self.vms:
                raise Conflict(f"as: a VM named {as_name!r} is already defined")
            self._define(dict(self._definition(vm), name=as_name), state_dir)
            vm = self.vms[as_name]
        elif vm["state"] in ACTIVE and not replace:
            raise Conflict(f"{vm['name']}: the VM is running; use --replace to restore over it, "
                           "or --as NEWNAME to restore a clone beside it")
        self.vms[vm["name"]]["restored_from"] = origin
        return self._set_state(vm["name"], "running")

    @staticmethod
    def _definition(vm):
        return dict((key, vm.get(key, [])) for key in ("name", "vcpus", "memory", "kernel", "initrd", "cmdline", "cpu",
                                                       "tags"))

    def _host_info(self, state_dir):
        vms = [dict((key, vm.get(key, [])) for key in ("name", "state", "vcpus", "memory", "tags"))
               for vm in (self.vms[name] for name in sorted(self.vms))]
        active = [vm for vm in vms if vm["state"] in ACTIVE]
        return {"hostname": "fake", "cpus": 2, "engine": {"version": "0.1.0", "protocol": 2},
                "cpu": {"vendor": "GenuineIntel", "model": "Fake CPU", "flags": ["avx2", "fpu", "sse2"],
                        "features": HOST_FEATURES, "hidden": [], "baseline": False},
                "memory_total_mib": 8192, "memory_free_mib": 4096,
                "committed_memory_mib": sum(vm["memory"] for vm in active),
                "committed_vcpus": sum(vm["vcpus"] for vm in active),
                "kvm": {"available": True, "flavour": "vmx", "hardware_virtualization": True, "max_vcpus": 1024},
                "state_dir": state_dir, "vms": vms, "drained": None}


# --- the contract: what a module sees of an engine call, the same from the fake and the real one ---

# Counters and progress of a live VM only the real one has, and whether its guest needed
# forcing off: the guest's doing, not the engine's interface (the modules read neither).
VOLATILE = {"exits", "migration", "forced"}
# Values the modules decide on, compared besides the keys (the rest are measurements).
COMPARED = ("state", "restored_from", "id", "vm", "tags", "mode", "compression", "origin", "deleted")


def _seen(result):
    if isinstance(result, list):
        return ["list"] + [_seen(item) for item in result]
    if not isinstance(result, dict):
        return (type(result).__name__,)
    return (sorted(set(result) - VOLATILE), [(key, result.get(key)) for key in COMPARED if key in result])


def outcome(engine, call, args, state_dir):
    """What the module sees: the keys and deciding values of the answer, or the refusal."""
    from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError
    try:
        result = getattr(engine, call)(*args)
    except EngineError as err:
        return ("refused", err.kind, str(err).replace(state_dir, "STATE"))
    if result is None:
        return ("none",)
    return _seen(result)


def real_ferry_module(tmp_path):
    """A real AnsibleModule whose engine venv runs this checkout's ``ferry``."""
    import sys

    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.testing import patch_module_args

    command = tmp_path / "real-venv" / "bin" / "ferry"
    command.parent.mkdir(parents=True)
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ferry.cli "$@"\n')
    command.chmod(0o755)
    with patch_module_args({}):
        return AnsibleModule(argument_spec={}), str(tmp_path / "real-venv")
