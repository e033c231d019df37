"""`lockstep demo --plot FILE`: orders reaching each venue per second over time, with the
malfunction and the halt marked (matplotlib, from the `bench` extra)."""

from __future__ import annotations

from lockstep.errors import LockstepError

__all__ = ["plot_summary"]

BIN_S = 0.05


def plot_summary(summary: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LockstepError("--plot needs matplotlib: pip install 'lockstep[bench]' (or pip install matplotlib)") \
            from None
    import numpy as np

    data = summary["_plot"]
    series = data["arrivals_s"]
    end = max([max(v) for v in series.values() if v] + [data["halt_s"] or 0, data["malfunction_s"]]) + 0.5
    bins = np.arange(0.0, end + BIN_S, BIN_S)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, times in series.items():
        counts, edges = np.histogram(times, bins=bins)
        ax.step(edges[:-1], counts / BIN_S, where="post", label=f"venue {name}")
    ax.axvline(data["malfunction_s"], color="orange", linestyle="--", label="malfunction injected")
    if data["halt_s"] is not None:
        ax.axvline(data["halt_s"], color="red", linestyle="-",
                   label=f"halt (side channel, {summary['halt_latency_us']:,.0f} us)")
        if summary.get("sequenced_halt_delay_us"):
            ax.axvline(data["halt_s"] + summary["sequenced_halt_delay_us"] / 1e6, color="gray", linestyle=":",
                       label=f"same halt via the log ({summary['sequenced_halt_delay_us'] / 1000:,.0f} ms)")
    ax.set_xlabel("seconds since trading started")
    ax.set_ylabel("orders reaching the venue per second")
    ax.set_title("lockstep demo: order rate per venue; nothing reaches a venue after the halt")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_xlim(0, end)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise LockstepError(f"{path}: cannot write the plot: {e.strerror or e}") from None
    finally:
        plt.close(fig)
