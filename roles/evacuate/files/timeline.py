# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The evacuation's moves as a timeline picture: one row per link (source -> target), a bar per
move from its start to its end, green when it moved, red when it failed; moves never started are
listed in the title. Run on the controller by the evacuate role:

    timeline.py MOVES.json OUT.png

MOVES.json is the role's record: [{vm, from, to, ok, skipped, started, ended}, ...] (times in
seconds). Without matplotlib it says so and writes nothing (exit 0): the picture is a convenience,
the report table is the record.
"""

import json
import sys


def rows(moves):
    """The links in first-use order, and each started move with its row."""
    links, bars = [], []
    for move in moves:
        if move.get('skipped'):
            continue
        link = '%s -> %s' % (move['from'], move['to'])
        if link not in links:
            links.append(link)
        bars.append((links.index(link), move))
    return links, bars


def draw(moves, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    links, bars = rows(moves)
    begin = min([move['started'] for row, move in bars] or [0.0])
    figure, axis = plt.subplots(figsize=(9, 1.2 + 0.5 * max(len(links), 1)))
    for row, move in bars:
        start, length = move['started'] - begin, max(move['ended'] - move['started'], 0.05)
        axis.barh(row, length, left=start, color='tab:green' if move['ok'] else 'tab:red', edgecolor='black')
        axis.text(start + length / 2, row, move['vm'], ha='center', va='center', fontsize=8)
    axis.set_yticks(range(len(links)))
    axis.set_yticklabels(links)
    axis.invert_yaxis()
    axis.set_xlabel('seconds since the first move began')
    waiting = [m['vm'] for m in moves if m.get('skipped')]
    moved = sum(1 for row, move in bars if move['ok'])
    axis.set_title('evacuation: %d of %d moved' % (moved, len(moves))
                   + ('; not started: %s' % ', '.join(waiting) if waiting else ''))
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write('usage: timeline.py MOVES.json OUT.png\n')
        return 2
    with open(argv[1]) as handle:
        moves = json.load(handle)
    try:
        draw(moves, argv[2])
    except ImportError:
        print('no timeline: matplotlib is not installed on the controller')
        return 0
    print('timeline: %s' % argv[2])
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
