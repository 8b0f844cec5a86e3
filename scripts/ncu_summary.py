#!/usr/bin/env python3
"""GPU time per kernel name from an Nsight Compute CSV, to see where a `wsol bench train
--device cuda:0` step spends its GPU time. On the GPU machine:

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file ncu.log \\
        wsol bench train --backbone resnet18 --batch 32 --steps 1 --device cuda:0 > ncu.csv
    python3 scripts/ncu_summary.py ncu.csv --steps 3   # 2 warm-up steps + 1 timed

`--steps` divides the totals (kernels before the first step, such as weight init, are
few and small). Prints the total, then the kernels by time.
"""
import argparse
import csv
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    with open(a.csv, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    by_name = {}
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = row.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}.get(unit, 1e-3)
        us = float(row["Metric Value"].replace(",", "")) * scale
        name = row["Kernel Name"]
        n, t = by_name.get(name, (0, 0.0))
        by_name[name] = (n + 1, t + us)
    if not by_name:
        sys.exit(f"{a.csv}: no gpu__time_duration.sum rows")
    launches = sum(n for n, _ in by_name.values())
    total = sum(t for _, t in by_name.values())
    print(f"ncu: {launches / a.steps:.0f} launches, {total / a.steps / 1e3:.2f} ms of kernels per step")
    for name, (n, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"{t / a.steps / 1e3:9.3f} ms {n / a.steps:7.1f}x  {name[:110]}")


if __name__ == "__main__":
    main()
