# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The ferry.hypervisor.evacuation_report filter (documented in evacuation_report.yml)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.errors import AnsibleFilterError

TITLES = ('VM', 'FROM', 'TO', 'OUTCOME', 'TOTAL', 'DOWNTIME', 'MOVED')


def _row(move):
    report = move.get('report') or {}
    outcome = 'moved' if move.get('ok') else 'not started' if move.get('skipped') else 'FAILED'
    total, downtime = report.get('total_ms'), report.get('downtime_ms')
    moved = report.get('bytes_on_wire')
    return [move['vm'], move['from'], move['to'], outcome,
            '-' if total is None else '%.1f s' % (total / 1000.0),
            '-' if downtime is None else '%.1f ms' % downtime,
            '-' if moved is None else '%.1f MiB' % (moved / 1048576.0)]


def evacuation_report(moves):
    """Lines of a table: each move with its outcome, time, downtime and bytes moved."""
    if not isinstance(moves, list) or not all(isinstance(m, dict) and 'vm' in m for m in moves):
        raise AnsibleFilterError('evacuation_report: expected the list of moves the evacuate role records')
    rows = [list(TITLES)] + [_row(move) for move in moves]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TITLES))]
    return ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


class FilterModule(object):
    def filters(self):
        return {'evacuation_report': evacuation_report}
