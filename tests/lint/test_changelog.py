"""The changelog: antsibull-changelog lint passes over changelogs/ (changelogs/config.yaml), fragment
lines stay under 400 characters, and the committed CHANGELOG.rst is what antsibull-changelog
makes of changelogs/ today, a released fragment edited since included.

antsibull-changelog is pinned in requirements.txt; it runs from the venv that runs pytest."""

import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FRAGMENTS = os.path.join(ROOT, "changelogs", "fragments")
LONGEST_LINE = 399


def antsibull_changelog(project, *args):
    command = os.path.join(os.path.dirname(sys.executable), "antsibull-changelog")
    if not os.path.exists(command):
        pytest.fail(f"{command} is missing: scripts/setup.sh installs it from requirements.txt", pytrace=False)
    return subprocess.run([command, *args], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False)


def copy_of_the_changelog(into):
    """What antsibull-changelog reads and writes: changelogs/ (with its plugin cache), galaxy.yml, CHANGELOG.rst."""
    shutil.copytree(os.path.join(ROOT, "changelogs"), into / "changelogs")
    for name in ("galaxy.yml", "CHANGELOG.rst"):
        shutil.copy(os.path.join(ROOT, name), into)
    return into


def test_antsibull_changelog_lint_passes():
    run = antsibull_changelog(ROOT, "lint")
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout


def test_a_bad_fragment_is_a_lint_finding_naming_it(tmp_path):
    project = copy_of_the_changelog(tmp_path)
    (project / "changelogs" / "fragments" / "bad.yml").write_text("---\nminor_changes: one line, not a list\n")

    run = antsibull_changelog(project, "lint")

    assert run.returncode != 0
    assert run.stdout.splitlines() == ['changelogs/fragments/bad.yml:0:0: section "minor_changes" must be type list '
                                       'not str'], run.stdout


def test_fragment_lines_stay_under_400_characters():
    long_lines = [f"{os.path.relpath(path, ROOT)}:{number}: {len(line)} characters"
                  for path in sorted(glob.glob(os.path.join(FRAGMENTS, "*.y*ml")))
                  for number, line in enumerate(open(path).read().splitlines(), 1) if len(line) > LONGEST_LINE]
    assert not long_lines, "wrap these lines (a YAML scalar may go on over several lines):\n" + "\n".join(long_lines)


def test_changelog_rst_is_generated_from_the_fragments(tmp_path):
    project = copy_of_the_changelog(tmp_path)

    run = antsibull_changelog(project, "generate", "--refresh-fragments", "without-archives")

    assert run.returncode == 0, run.stdout
    generated = (project / "CHANGELOG.rst").read_text()
    committed = open(os.path.join(ROOT, "CHANGELOG.rst")).read()
    assert generated == committed, ("CHANGELOG.rst is not what changelogs/ makes: run "
                                    "`antsibull-changelog generate --refresh-fragments without-archives` and commit "
                                    "CHANGELOG.rst and changelogs/changelog.yaml")
