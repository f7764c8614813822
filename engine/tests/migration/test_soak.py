"""Soak: many consecutive live migrations of a guest under write load, back and forth.

The suite runs a bounded number (20); ``FERRY_SOAK_MIGRATIONS=200`` runs the full soak.
After every hop exactly one engine process runs the VM, and the arriving process looks
like every other arrival: the same open files and threads, private memory and mapped
guest RAM (a memfd) that do not grow; and the
guest's heartbeats run on across all hops without a gap or a CORRUPT.
"""

import os

import pytest

from support.labhost import PORT, exactly_one_copy, migrate, receive, start_vm, wait_no_engine

pytestmark = [pytest.mark.kvm, pytest.mark.lab]
HOPS = int(os.environ.get("FERRY_SOAK_MIGRATIONS", "20"))
GROWTH_MIB = 32  # noise allowed in private and shared memory across the whole soak


def process_figures(host) -> dict:
    [pid] = host.vm_processes()
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(status["Threads"]),
            "anon_mib": int(status["RssAnon"].split()[0]) // 1024,
            "shared_mib": int(status["RssShmem"].split()[0]) // 1024}


def test_soak_of_live_migrations_under_write_load(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path, cmdline="fill=50 rate=max hb=100")
    here, there = h1, h2
    arrivals = []
    for hop in range(HOPS):
        receive(there, token)
        report = migrate(here, f"{there.ipv4}:{PORT}", token)
        assert report["outcome"] == "committed", f"hop {hop}: {report}"
        here, there = there, here
        wait_no_engine(there)
        arrivals.append(process_figures(here))
    exactly_one_copy(here, there)
    settled = arrivals[2:] or arrivals
    assert len({a["fds"] for a in settled}) == 1, f"open files drift: {[a['fds'] for a in arrivals]}"
    assert len({a["threads"] for a in settled}) == 1, f"threads drift: {[a['threads'] for a in arrivals]}"
    anon = [a["anon_mib"] for a in settled]
    assert max(anon) - min(anon) <= GROWTH_MIB, f"private memory grows: {anon}"
    shared = [a["shared_mib"] for a in settled]
    assert max(shared) - min(shared) <= GROWTH_MIB, f"guest memory mapped grows: {shared}"
