"""Plots the lag distributions in results.json (from examples/bench_ready.rs)
as one strip-and-box row per tool, log time axis: plot.py RESULTS PNG."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    results, png = sys.argv[1], sys.argv[2]
    with open(results) as f:
        r = json.load(f)
    panels = [
        ("Port target (refuses until it listens)", dict(r["port_lags_ms"])),
        ("SSH target (sshd starts; ready = logged in)", dict(r["ssh_lags_ms"])),
    ]
    if "concurrent" in r:
        c = r["concurrent"]
        panels[0][1][f"reimage (port), {c['n']} at once"] = c["lags_ms"]
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5))
    for ax, (title, rows) in zip(axes, panels):
        names = sorted(rows, key=lambda n: sorted(rows[n])[len(rows[n]) // 2])
        data = [rows[n] for n in names]
        ax.boxplot(data, orientation="horizontal", widths=0.5, showfliers=False)
        for i, v in enumerate(data, start=1):
            jitter = [i + ((k * 37) % 11 - 5) / 40 for k in range(len(v))]
            color = "tab:blue" if n_is_reimage(names[i - 1]) else "tab:gray"
            ax.scatter(v, jitter, s=10, alpha=0.6, color=color)
        ax.set_yticks(range(1, len(names) + 1))
        ax.set_yticklabels(names)
        ax.set_xscale("log")
        ax.set_xlabel("lag from ready to noticed (ms, log scale)")
        ax.set_title(title)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle(f"reimage vs other waiters, {r['trials']} interleaved trials each")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def n_is_reimage(name):
    return name.startswith("reimage")


if __name__ == "__main__":
    main()
