"""Options more than one group of commands takes, defined once: positive numbers, and the
ssh flags of ``migrate --transport ssh`` and ``checkpoint send``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import inputs


def positive(unit: str):
    """An argparse type: a finite number above zero, in ``unit``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if not inputs.is_positive(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit} above zero")
        return value
    return parse


def ssh_options(parser, when: str = "") -> None:
    """What is not given here is left to ssh and its config; ``when`` starts each help text."""
    parser.add_argument("--ssh-user", help=f"{when}the user (ssh -l)")
    parser.add_argument("--ssh-key", type=Path, help=f"{when}the private key (ssh -i)")
    parser.add_argument("--ssh-known-hosts", type=Path,
                        help=f"{when}known_hosts to check the destination's key against")
    parser.add_argument("--ssh-port", type=int, help=f"{when}the port of the destination's sshd (ssh -p)")
    parser.add_argument("--ssh-config", type=Path, metavar="FILE",
                        help=f"{when}this ssh config file instead of ~/.ssh/config (ssh -F)")
    parser.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{when}an ssh_config option (ssh -o), repeatable")


def ssh_of(args):
    """The ssh settings the flags of ``ssh_options`` gave."""
    from ..migration.transport import SshOptions  # here: only commands that use ssh import it
    return SshOptions(args.ssh_user, args.ssh_key, args.ssh_known_hosts, args.ssh_port, args.ssh_config,
                      tuple(args.ssh_option))
