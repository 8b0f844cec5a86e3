#!/usr/bin/env python3
"""CPU seconds of `wsol eval-cams` for two or more wsol binaries on the same maps, run
alternately (A B A B ...) so that a shared or noisy host moves them alike: the way to
tell a few percent of speed apart. Prints each binary's runs and their median.

    python3 scripts/ab_eval_cams.py --bins /tmp/wsol-before,/tmp/wsol-after \\
        --data /tmp/cam [--interval 0.01] [--runs 5]

DATA holds `metadata/test` and `cams/` as `scripts/bench_eval_cams_e2e.py --data` writes
them. CPU seconds are user+sys of the child (`os.wait4`), all its threads. Each binary
writes to its own temporary folder; compare those outputs with `--keep`. Not part of CI.
"""
import argparse
import os
import statistics
import subprocess
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", required=True, help="comma-separated wsol binaries")
    ap.add_argument("--data", required=True)
    ap.add_argument("--interval", default="0.01", help="--cam-curve-interval")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", help="folder for each binary's outputs (out-0, out-1, ...)")
    args = ap.parse_args()
    bins = args.bins.split(",")
    root = args.keep or tempfile.mkdtemp()
    times = {b: [] for b in bins}
    for _ in range(args.runs):
        for i, b in enumerate(bins):
            cmd = [b, "eval-cams", "--metadata", os.path.join(args.data, "metadata", "test"),
                   "--cams", os.path.join(args.data, "cams"), "--out", os.path.join(root, f"out-{i}"),
                   "--quiet", "--cam-curve-interval", args.interval]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(p.pid, 0)
            if status != 0:
                raise SystemExit(f"{b} failed (status {status})")
            times[b].append(usage.ru_utime + usage.ru_stime)
    for b in bins:
        runs = " ".join(f"{t:.3f}" for t in times[b])
        print(f"{b}: median {statistics.median(times[b]):.3f} CPU s ({runs})")


if __name__ == "__main__":
    main()
