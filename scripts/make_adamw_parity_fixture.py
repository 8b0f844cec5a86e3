#!/usr/bin/env python3
"""Writes tests/fixtures/optimizer_parity/adamw.json: torch.optim.AdamW's own trajectory on
two parameters in two groups (learning rates lr and lr x MULT, as wsol's new-layer
multiplier makes them), for the gradients recorded here, so tests/cli/optimizer.rs can
replay the same steps through wsol's `Optimizer` and compare every parameter after every
step. A learning-rate change midway (the schedule's decay) and a step on which one
parameter has no gradient (PyTorch then leaves its state and step count alone) are in it.

    python3 scripts/make_adamw_parity_fixture.py [OUT_DIR]   # tested with torch 2.5.1 (CPU)

Also recorded: `noise`, the largest difference between this float32 run and the same in
float64, the scale the comparison is held to.
"""
import json
import os
import sys

import torch

LR, MULT, WD, BETAS, EPS = 1e-3, 10.0, 0.05, (0.9, 0.95), 1e-6
STEPS = 6
DECAY_AT = 4  # steps from here on run at lr x 0.1
SKIP = (3, "b")  # on step 3, `b` gets no gradient


def run(dtype):
    g = torch.Generator().manual_seed(0)
    a0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b0 = torch.randn(5, generator=g, dtype=torch.float64)
    grads = [(torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64))
             for _ in range(STEPS)]
    a = torch.nn.Parameter(a0.to(dtype))
    b = torch.nn.Parameter(b0.to(dtype))
    opt = torch.optim.AdamW([{"params": [a], "lr": LR}, {"params": [b], "lr": LR * MULT}],
                            lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
    traj = []
    for t in range(STEPS):
        if t == DECAY_AT:
            for group, base in zip(opt.param_groups, [LR, LR * MULT]):
                group["lr"] = base * 0.1
        opt.zero_grad(set_to_none=True)
        a.grad = grads[t][0].to(dtype)
        if (t, "b") != SKIP:
            b.grad = grads[t][1].to(dtype)
        opt.step()
        traj.append({"a": a.detach().double().flatten().tolist(), "b": b.detach().double().flatten().tolist()})
    return a0, b0, grads, traj, opt


def main(out_dir):
    a0, b0, grads, traj32, opt = run(torch.float32)
    _, _, _, traj64, _ = run(torch.float64)
    noise = max(abs(x - y) for s32, s64 in zip(traj32, traj64) for k in "ab" for x, y in zip(s32[k], s64[k]))
    steps_b = int(opt.state[opt.param_groups[1]["params"][0]]["step"])
    assert steps_b == STEPS - 1, steps_b
    record = {
        "lr": LR, "mult": MULT, "weight_decay": WD, "betas": list(BETAS), "eps": EPS,
        "decay_at": DECAY_AT, "skip": list(SKIP),
        "a0": [float(v) for v in a0.float().flatten()], "b0": [float(v) for v in b0.float().flatten()],
        "grads": [{"a": [float(v) for v in ga.float().flatten()], "b": [float(v) for v in gb.float().flatten()]}
                  for ga, gb in grads],
        "trajectory": traj32,
        "noise": noise,
        "torch": torch.__version__,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "adamw.json"), "w") as f:
        json.dump(record, f)
    print(f"float32 vs float64: {noise:.2e}; b stepped {steps_b} times")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/optimizer_parity")
