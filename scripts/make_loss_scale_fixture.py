#!/usr/bin/env python3
"""Writes tests/fixtures/loss_scale/grad_scaler.json: torch.amp.GradScaler driven through
chosen steps, so tests/cli/loss_scale.rs can replay them through wsol's `LossScaler` and
match every number bit for bit.

Each step makes the gradient of `sum(p * g)` for a chosen g (finite, inf, -inf, NaN, or
so large that the *scaled* gradient overflows f32, as a 65536-scaled fp16 gradient does)
through `scaler.scale(loss).backward()`, then `scaler.unscale_`, `scaler.step` (SGD, lr 1)
and `scaler.update()`. Recorded per step: the scaled gradient backward made, the unscaled
gradient, whether the optimizer step was skipped, the scale and growth tracker after the
update, the parameter after the step. Three scalers: PyTorch's defaults with a short
growth_interval (long clean runs grow the scale twice); a scale that is not a power of
two with growth and backoff factors that round (products in f64, rounded to f32); a
scale at 2^126 that must stop growing at 2^127 rather than reach inf.

    /work/torchenv/bin/python scripts/make_loss_scale_fixture.py [OUT_DIR]   # torch 2.5.1, CPU

Floats are written as numbers when finite (each is exactly an f32), else as the strings
"inf", "-inf", "nan".
"""
import json
import math
import os
import sys

import torch

INF, NAN = float("inf"), float("nan")


def enc(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def run(name, kwargs, grads):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(len(grads[0]), dtype=torch.float32))
    param0 = [enc(v) for v in p.detach().tolist()]
    opt = torch.optim.SGD([p], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", **kwargs)
    steps = []
    for g in grads:
        opt.zero_grad(set_to_none=True)
        loss = (p * torch.tensor(g, dtype=torch.float32)).sum()
        scaler.scale(loss).backward()
        scaled = p.grad.detach().clone()
        scaler.unscale_(opt)
        unscaled = p.grad.detach().clone()
        before = p.detach().clone()
        scaler.step(opt)
        skipped = bool(torch.equal(before, p.detach()))
        found_inf = sum(v.item() for v in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values()) > 0
        assert skipped == found_inf, (name, g)
        scaler.update()
        steps.append(
            {
                "scaled_grad": [enc(v) for v in scaled.tolist()],
                "unscaled_grad": [enc(v) for v in unscaled.tolist()],
                "skipped": skipped,
                "scale": enc(scaler.get_scale()),
                "growth_tracker": int(scaler._growth_tracker.item()),
                "param": [enc(v) for v in p.detach().tolist()],
            }
        )
    return {
        "name": name,
        "init_scale": kwargs.get("init_scale", 65536.0),
        "growth_factor": kwargs.get("growth_factor", 2.0),
        "backoff_factor": kwargs.get("backoff_factor", 0.5),
        "growth_interval": kwargs["growth_interval"],
        "param0": param0,
        "grads": [[enc(v) for v in g] for g in grads],
        "steps": steps,
    }


def clean(k, n=3):
    gen = torch.Generator().manual_seed(k)
    return (torch.randn(n, generator=gen) * 10 ** (k % 5 - 2)).tolist()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/loss_scale"
    os.makedirs(out, exist_ok=True)
    default_like = (
        [clean(1), clean(2), [1.0, INF, 2.0]]
        + [clean(k) for k in range(3, 6)]  # three clean steps: grows
        + [[NAN, 0.5, -0.5]]
        + [clean(k) for k in range(6, 13)]  # seven: grows twice
        + [[-INF, 1.0, 1.0], [1e34, 1.0, -1.0]]  # the second: finite, but 1e34 x scale overflows f32
        + [clean(k) for k in range(13, 16)]
        + [[1e-30, -3e-38, 7.0]]  # tiny values survive unscaling
    )
    rounding = [clean(20), [INF, 1.0, 1.0], clean(21), clean(22), [1.0, NAN, 1.0], clean(23), clean(24), clean(25)]
    near_max = [[1e-3, -2e-3, 5e-4], [0.25, 0.125, -0.5], [1e-2, 3e-3, -1e-3]]
    cases = [
        run("defaults_interval_3", {"growth_interval": 3}, default_like),
        run(
            "rounding_factors",
            {"init_scale": 1000.0, "growth_factor": 1.7, "backoff_factor": 0.3, "growth_interval": 2},
            rounding,
        ),
        run("stops_below_inf", {"init_scale": 2.0**126, "growth_interval": 1}, near_max),
    ]
    path = os.path.join(out, "grad_scaler.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1, allow_nan=False)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
