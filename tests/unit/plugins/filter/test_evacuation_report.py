"""The evacuation_report filter: one line per move with its outcome and figures, bad input refused."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.hypervisor.plugins.filter.evacuation_report import evacuation_report


def test_each_move_is_a_line_with_its_outcome_and_figures():
    lines = evacuation_report([
        {"vm": "web1", "from": "h1", "to": "h2", "ok": True, "skipped": False,
         "report": {"total_ms": 1234.0, "downtime_ms": 12.5, "bytes_on_wire": 64 * 2**20}},
        {"vm": "db1", "from": "h1", "to": "h3", "ok": False, "skipped": False, "report": {}},
        {"vm": "db2", "from": "h1", "to": "h3", "ok": False, "skipped": True, "report": {}},
    ])
    assert lines[0].split() == ["VM", "FROM", "TO", "OUTCOME", "TOTAL", "DOWNTIME", "MOVED"]
    assert lines[1].split() == ["web1", "h1", "h2", "moved", "1.2", "s", "12.5", "ms", "64.0", "MiB"]
    assert lines[2].split()[3] == "FAILED" and lines[3].split()[3:5] == ["not", "started"]


@pytest.mark.parametrize("moves", [None, "web1", [{"from": "h1"}], [3]])
def test_anything_else_is_refused_in_one_line(moves):
    with pytest.raises(AnsibleFilterError, match="evacuation_report: expected the list of moves"):
        evacuation_report(moves)
