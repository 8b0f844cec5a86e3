#!/usr/bin/env python3
"""wsol against PyTorch on one machine: `wsol bench train` (or `bench eval`) and
`scripts/bench_pytorch.py` on the same model, batch, size and threads, each wsol run
followed by its PyTorch run (pairs alternate, so a slow phase of the machine hits both),
then one markdown row per cell: images/s of each run, the ratio of the medians, and peak
RSS. Every run's JSON is appended to --out. Needs torch and torchvision; not part of CI.

    python3 scripts/bench_side_by_side.py --backbones resnet18,vgg16 --batches 8,32 --threads 2
    python3 scripts/bench_side_by_side.py --cam gradcam --backbones resnet50 --pairs 2
"""
import argparse
import json
import os
import subprocess
import sys
import time
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--wsol", default=os.path.join(HERE, "..", "target", "release", "wsol"))
    p.add_argument("--python", default=sys.executable, help="the interpreter that has torch")
    p.add_argument("--backbones", default="resnet18,vgg16")
    p.add_argument("--heads", default="cam")
    p.add_argument("--batches", default="8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=4, help="timed steps per run (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--pairs", type=int, default=1, help="wsol/PyTorch pairs per cell")
    p.add_argument("--cam", choices=["cam", "gradcam"], help="time evaluation with these maps instead")
    p.add_argument("--out", default="bench_side_by_side.jsonl")
    a = p.parse_args()
    common = ["--size", str(a.size), "--steps", str(a.steps), "--threads", str(a.threads)]
    print(f"<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {a.threads} threads, "
          f"--steps {a.steps}, {a.pairs} pair(s) per cell -->")
    print("| backbone, head, batch | wsol images/s | PyTorch images/s | ratio | peak RSS wsol / PyTorch |")
    print("|---|---|---|---|---|")
    for backbone in a.backbones.split(","):
        for head in a.heads.split(","):
            for batch in a.batches.split(","):
                model = ["--backbone", backbone, "--head", head, "--batch", batch] + common
                ours = [a.wsol, "bench", "eval", "--method", a.cam] if a.cam else [a.wsol, "bench", "train"]
                theirs = [a.python, os.path.join(HERE, "bench_pytorch.py")] + (["--cam", a.cam] if a.cam else [])
                runs = {"wsol": [], "torch": []}
                for _ in range(a.pairs):
                    runs["wsol"].append(run(ours + model + ["--json"]))
                    runs["torch"].append(run(theirs + model))
                    with open(a.out, "a") as f:
                        for r in (runs["wsol"][-1], runs["torch"][-1]):
                            f.write(json.dumps(r) + "\n")
                if runs["wsol"][0]["parameters"] != runs["torch"][0]["parameters"]:
                    sys.exit(f"{backbone} + {head}: {runs['wsol'][0]['parameters']} parameters in wsol, "
                             f"{runs['torch'][0]['parameters']} in PyTorch: not the same model")
                speed = {k: [r["images_per_s"] for r in v] for k, v in runs.items()}
                rss = {k: [r["peak_rss_mb"] for r in v] for k, v in runs.items()}
                show = lambda xs, f: ", ".join(f.format(x) for x in xs)
                mem = lambda xs: f"{min(xs):.0f}" if max(xs) - min(xs) < 1 else f"{min(xs):.0f}-{max(xs):.0f}"
                print(f"| `{backbone}`, {head}, {batch} | {show(speed['wsol'], '{:.2f}')} | "
                      f"{show(speed['torch'], '{:.2f}')} | {median(speed['wsol']) / median(speed['torch']):.2f}x | "
                      f"{mem(rss['wsol'])} / {mem(rss['torch'])} MB |", flush=True)


if __name__ == "__main__":
    main()
