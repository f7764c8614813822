"""The evacuate role's timeline picture, drawn from a record of moves as the role writes it."""

import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "roles", "evacuate", "files", "timeline.py")
MOVES = [{"vm": "web1", "from": "h1", "to": "h2", "ok": True, "skipped": False, "started": 100.0, "ended": 104.5},
         {"vm": "db1", "from": "h1", "to": "h3", "ok": False, "skipped": False, "started": 100.2, "ended": 131.0},
         {"vm": "db2", "from": "h1", "to": "h3", "ok": False, "skipped": True, "started": 131.1, "ended": 131.1}]


def draw(tmp_path, moves):
    record, picture = tmp_path / "moves.json", tmp_path / "timeline.png"
    record.write_text(json.dumps(moves))
    done = subprocess.run([sys.executable, SCRIPT, str(record), str(picture)], capture_output=True, text=True,
                          timeout=120, check=False)
    return done, picture


def test_the_moves_become_a_png_with_a_row_per_link(tmp_path):
    done, picture = draw(tmp_path, MOVES)
    assert done.returncode == 0 and done.stdout.strip() == f"timeline: {picture}", done
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_moves_still_draws_and_a_bad_call_says_how(tmp_path):
    done, picture = draw(tmp_path, [])
    assert done.returncode == 0 and picture.exists()
    usage = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: timeline.py")
