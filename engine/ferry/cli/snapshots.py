"""``ferry snapshot create|list|delete|verify`` and ``ferry restore``."""

from __future__ import annotations

from ..host import snapshots
from ..host.api import Host
from .progress import progress_bar
from .table import print_table


def _render_snapshot(snap: dict) -> None:
    if snap.get("error"):
        print(f"{snap['id']}: DAMAGED - {snap['error']}")
        return
    disk = (snap.get("disk_bytes") or 0) / 2**20
    pause = snap.get("pause_ms")
    print(f"{snap['id']}: {snap['created']} {snap['origin'].get('kind')} "
          f"tags={','.join(snap['tags']) or '-'} disk={disk:.1f} MiB"
          + (f" pause={pause:.1f} ms" if pause is not None else "")
          + (f" zstd in {snap['compress_ms']:.0f} ms" if snap.get("compression") else "")
          + (" verified" if snap.get("verified") else ""))


LIST_TITLES = ("ID", "CREATED", "MEMORY", "DISK", "PAUSE", "TAGS", "ORIGIN", "STATUS")


def _render_list(snaps: list) -> None:
    """A table; STATUS "ok" is the structure and sizes checked (the digests are ``snapshot verify``'s)."""
    print_table(LIST_TITLES, [row(snap) for snap in snaps])


def row(snap: dict) -> list[str]:
    if snap.get("error"):
        return [snap["id"], "-", "-", "-", "-", "-", "-", f"DAMAGED - {snap['error']}"]
    pause = snap.get("pause_ms")
    return [snap["id"], snap["created"][:19].replace("T", " "), f"{snap['memory_bytes'] >> 20} MiB",
            f"{(snap.get('disk_bytes') or 0) / 2**20:.1f} MiB" + (" zstd" if snap.get("compression") else ""),
            "-" if pause is None else f"{pause:.1f} ms", ",".join(snap["tags"]) or "-",
            snap["origin"].get("kind") or "-", "ok, protected" if snap.get("protected") else "ok"]


def cmd_create(args):
    with progress_bar(args.name) as progress:
        return snapshots.create(Host(args.state_dir), args.name, args.snapshot, args.tag or (),
                                exit=args.exit, live=not args.stop_the_world, compress=args.compress,
                                full=args.full, progress=progress)


def cmd_list(args):
    return snapshots.list_snapshots(Host(args.state_dir), args.name)


def cmd_delete(args):
    return snapshots.delete(Host(args.state_dir), args.name, args.id)


def cmd_protect(args):
    return snapshots.protect(Host(args.state_dir), args.name, args.id, args.action == "protect")


def cmd_verify(args):
    with progress_bar(f"{args.name} {args.id}") as progress:
        return snapshots.verify(Host(args.state_dir), args.name, args.id, progress=progress)


def cmd_restore(args):
    with progress_bar(f"{args.name} {args.id}") as progress:
        return snapshots.restore_snapshot(Host(args.state_dir), args.name, args.id, as_name=args.as_name,
                                          replace=args.replace, eager=args.eager,
                                          verify_memory=not args.no_verify, overcommit=args.overcommit,
                                          progress=progress)


def register(sub, common) -> None:
    group = sub.add_parser("snapshot", help="save, list, delete and verify snapshots of a VM")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="save a running VM (live by default)")
    create.add_argument("name")
    create.add_argument("--snapshot", help="snapshot id (default: UTC time)")
    create.add_argument("--tag", action="append", help="tag the snapshot (repeatable)")
    create.add_argument("--exit", action="store_true", help="stop the VM after saving")
    create.add_argument("--stop-the-world", action="store_true", help="pause for the whole save")
    create.add_argument("--compress", action="store_true",
                        help="zstd-compress the memory (archives; always full; restores eagerly)")
    create.add_argument("--full", action="store_true",
                        help="store every chunk, sharing none with the VM's newest snapshot")
    create.set_defaults(func=cmd_create, render=_render_snapshot)

    listing = actions.add_parser("list", parents=[common], help="list a VM's snapshots")
    listing.add_argument("name")
    listing.set_defaults(func=cmd_list, render=_render_list)

    for action, func, text in (("delete", cmd_delete, "delete a snapshot"),
                               ("verify", cmd_verify, "check every checksum of a snapshot")):
        parser = actions.add_parser(action, parents=[common], help=text)
        parser.add_argument("name")
        parser.add_argument("id")
        parser.set_defaults(func=func, render=_render_snapshot if action == "verify"
                            else lambda r: print(f"{r['vm']}: snapshot {r['id']} deleted"))

    for action, text in (("protect", "keep a snapshot from any prune and from delete"),
                         ("unprotect", "allow a protected snapshot to be deleted again")):
        parser = actions.add_parser(action, parents=[common], help=text)
        parser.add_argument("name")
        parser.add_argument("id")
        parser.set_defaults(func=cmd_protect, render=lambda r: print(
            f"{r['vm']}: snapshot {r['id']} {'protected' if r['protected'] else 'unprotected'}"))

    restore = sub.add_parser("restore", parents=[common], help="run a VM from one of its snapshots")
    restore.add_argument("name")
    restore.add_argument("id")
    restore.add_argument("--as", dest="as_name", metavar="NEWNAME", help="restore as a new VM (a clone)")
    restore.add_argument("--replace", action="store_true", help="power off the running VM and restore over it")
    restore.add_argument("--eager", action="store_true", help="copy memory in now instead of mapping it")
    restore.add_argument("--overcommit", action="store_true",
                         help="restore even if the VMs' memory exceeds this host's")
    restore.add_argument("--no-verify", action="store_true",
                         help="skip the memory checksums (the manifest and state are always checked)")
    restore.set_defaults(func=cmd_restore, render=lambda vm: print(f"{vm['name']}: {vm['state']} (restored)"))
