"""The ``ferry`` command.

Each feature module adds its subcommands through ``register(subparsers, common)``;
only the module of the command being run is imported (``COMMANDS``), so a
command pays for no other's imports. A handler takes the parsed arguments and
returns a JSON-able result (and may set ``args.exit_status``, for a command
whose result is also a verdict: ``checkpoint check``). With
``--json`` the result is printed as one JSON document; otherwise the
handler's ``render`` (if any) prints it for people. A streaming command
(``streams``: ``console``) prints as it goes, JSON lines under ``--json``,
and nothing after. Every failure is one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from ..errors import Conflict, FerryError, NotFound

# The one command table: each command and the feature module that registers it.
COMMANDS = {
    **dict.fromkeys(("define", "start", "stop", "poweroff", "pause", "resume", "status", "list", "undefine",
                     "console", "migrated", "host-info", "drain", "undrain"), "ferry.cli.vms"),
    **dict.fromkeys(("snapshot", "restore"), "ferry.cli.snapshots"),
    **dict.fromkeys(("migrate", "receive"), "ferry.cli.migrate"),
    "checkpoint": "ferry.cli.checkpoint",
    "lab": "ferry.lab.cli",
}


class Parser(argparse.ArgumentParser):
    """A bad command line is one line too, naming the argument, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone, or for every command (``--help``, a typo)."""
    import importlib

    parser = Parser(prog="ferry", description="Ferry hypervisor engine")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (accepted anywhere on the line; errors too, on stderr)")
    parser.add_argument("--version", action="version", version=f"ferry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else sorted(set(COMMANDS.values()))
    for module in modules:
        importlib.import_module(module).register(sub, common_options())
    return parser


def common_options() -> argparse.ArgumentParser:
    """The options every VM command takes, defined once."""
    common = Parser(add_help=False)
    common.add_argument("--state-dir", help="state directory (default $FERRY_STATE_DIR or /var/lib/ferry)")
    # Taken out of the line before parsing (it may stand anywhere); here for --help.
    common.add_argument("--json", action="store_true", help="print one JSON document (errors too, on stderr)")
    return common


def emit(args: argparse.Namespace, result) -> None:
    if getattr(args, "streams", False):
        return  # a streaming command has printed what it had to, as it went
    if args.json:
        print(json.dumps(result, indent=None, sort_keys=True))
    elif getattr(args, "render", None):
        args.render(result)
    elif result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --json is accepted anywhere on the line, as people type it, but not after "--":
    # what follows is a name, refused as one.
    end = argv.index("--") if "--" in argv else len(argv)
    want_json = "--json" in argv[:end]
    argv = [a for a in argv[:end] if a != "--json"] + argv[end:]
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    args.json = want_json
    try:
        emit(args, args.func(args))
    except BrokenPipeError:
        # The reader went away (``ferry list | head``): nothing more to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (FerryError, OSError) as err:  # KVM's errors are OSErrors too
        report_error(err, want_json)
        return 1
    except KeyboardInterrupt:
        return 130
    return getattr(args, "exit_status", 0)


def error_kind(err: Exception) -> str:
    """A stable word for what went wrong, for programs reading ``--json`` errors."""
    from ..control.operations import Busy
    for kind, types in (("busy", Busy), ("not-found", NotFound), ("conflict", Conflict)):
        if isinstance(err, types):
            return kind
    return "error"


def report_error(err: Exception, want_json: bool) -> None:
    message = " ".join(str(err).split())  # one line, whatever the error carried
    if want_json:
        print(json.dumps({"error": message, "kind": error_kind(err)}, sort_keys=True), file=sys.stderr)
    else:
        print(f"ferry: {message}", file=sys.stderr)

