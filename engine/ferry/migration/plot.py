"""A migration report's rounds as a picture: what each pre-copy round sent, what was
left dirty, and the throttle, with the downtime in the title."""

from __future__ import annotations

from pathlib import Path

from ..errors import FerryError


def plot_report(report: dict, path: Path) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FerryError("plot: needs matplotlib (pip install 'ferry-engine[plot]')") from None
    rounds = report["rounds"]
    index = [r["index"] for r in rounds]
    figure, sent_axis = plt.subplots(figsize=(8, 4.5))
    sent_axis.bar([i - 0.2 for i in index], [r["bytes"] / 2**20 for r in rounds], width=0.4, label="sent (MiB)")
    sent_axis.bar([i + 0.2 for i in index], [r["dirty_bytes"] / 2**20 for r in rounds], width=0.4,
                  label="dirty at start (MiB)")
    sent_axis.set_xticks(index)
    sent_axis.set_xlabel("round (0 = first pass over used memory)")
    sent_axis.set_ylabel("MiB")
    throttle_axis = sent_axis.twinx()
    throttle_axis.plot(index, [r["throttle"] * 100 for r in rounds], color="black", marker="o", label="throttle")
    throttle_axis.set_ylabel("vCPU throttle (%)")
    throttle_axis.set_ylim(0, 100)
    sent_axis.legend(loc="upper right")
    sent_axis.set_title(f"{report.get('name', '')} {report['mode']} migration: {report['total_ms']:.0f} ms total, "
                        f"{report['downtime_ms']:.1f} ms downtime, {report['bytes_on_wire'] / 2**20:.0f} MiB sent")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
