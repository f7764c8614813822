"""The one table renderer of ``ferry``'s listings (``list``, ``snapshot list``): a header,
then one row per item, columns aligned as ``virsh list`` aligns them."""

from __future__ import annotations


def print_table(titles: tuple[str, ...], rows: list[list[str]]) -> None:
    """Print ``rows`` (cells in the order of ``titles``) under ``titles``; no rows: the header alone.
    A cell's line breaks become spaces, so one item stays one line."""
    lines = [list(titles)] + [[" ".join(str(cell).split()) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(titles))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
