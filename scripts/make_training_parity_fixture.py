#!/usr/bin/env python3
"""Writes tests/fixtures/training_parity/: training steps run by clovaai/wsolevaluation's
own code, for tests/cli/training_parity.rs to replay through wsol's training step.

    git clone https://github.com/clovaai/wsolevaluation /tmp/wsolevaluation
    git -C /tmp/wsolevaluation checkout 96f4b88679af41f005824661f47e6fe3628af2aa
    pip install torch==2.5.1 torchvision==0.20.1 numpy munch opencv-python-headless
    WSOLEVALUATION=/tmp/wsolevaluation \
        python3 scripts/make_training_parity_fixture.py tests/fixtures/training_parity

What runs is theirs: `config.get_configs()` parses the run's flags; `main.Trainer`'s
`_set_model`, `_set_optimizer` (parameter groups, lr_classifier_ratio, momentum, weight
decay, Nesterov), `adjust_learning_rate` and `train` (which calls `_wsol_training`: the
method's batch transform, forward, loss; then zero_grad, backward, step) run as
`main()` calls them, epoch by epoch, on a loader of formula batches. Only evaluation
is left out. Each run goes twice: in float32 (the peer) and in float64 (the trajectory
both float32 runs approximate; with train-mode batch norm they leave it by percents).

Stubs, each the least that lets their code run here:
- `torch.Tensor.cuda` and `nn.Module.cuda` return self (their code targets CUDA);
- `np.int = int` (cutmix.rand_bbox uses it; NumPy 1.24 removed it);
- wsol/method/spg.py is loaded with its hard-wired `(224, 224)` map size replaced by the
  input size (their SPG assumes 224 crops; wsol's maps follow the input, equal at 224);
- Inception's F.dropout(x, p) runs as x * F.dropout(ones_like(x), p): PyTorch's CPU
  dropout is input * (bernoulli(1 - p) / (1 - p)), so the draws and the arithmetic are the
  same, and the mask can be recorded (`Dropout`);
- freeze_bn, which their code lacks, puts every BatchNorm in eval mode after `train()`'s
  `model.train()` (running statistics used and kept; gamma and beta still train), as
  wsol's `model.freeze_bn` does.

Their randomness (HaS's random.random, CutMix's np.random.rand/beta/randint and
torch.randperm, ADL's torch.rand, Inception's dropout masks) is drawn by their code from
seeded generators; the values are recorded in the order drawn, and the test hands them to
wsol's step in that order. The float64 run replays the float32 run's dropout masks.

Weights: wsol's parameter names sorted, t = 0, 1, ... (their names mapped to wsol's, see
`wsol_name`), u_i = hash32(i, t) / 2^31 - 1 in float64 then float32, scaled by kind:
conv/linear weights sqrt(6 / fan_in) * u, biases and running means 0.1 * u, running
variances 1 + 0.25 * (u + 1), batch-norm weights 0.5 + 0.1 * u (at 1 + 0.2 * u frozen
batch norm lets ResNet-50's residual stream grow to losses in the hundreds, where
float32 rounding of the logits decides the gradients). The sawtooth formula of
make_backbone_parity_fixture.py gave degenerate channels whose gradients no float32 run
follows. Batches: uint8 pixels from hash32(index, step), normalized as torchvision's
ToTensor + Normalize with ImageNet's mean and std. Nothing but these JSON files is
written, and they are byte-identical across reruns on one machine (one thread).
"""
import base64
import json
import os
import random
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

COMMIT = "96f4b88679af41f005824661f47e6fe3628af2aa"
IMAGE_SIZE = 64
BATCH = 4
STEPS_PER_EPOCH = 10  # their train() needs len(loader) >= 10 (it logs every len/10)
SAMPLES = 16  # final values kept per tensor, at evenly spaced flat indices
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# name, architecture, method, epochs, extra flags. Two epochs with lr_decay_frequency 2:
# their adjust_learning_rate(2) decays every group before the second epoch (step 10).
# Train-mode batch norm makes float32 training ill-conditioned (PyTorch's own float32 run
# leaves its float64 one by percents within 20 steps), so the methods are also run with
# frozen batch norm, where float32 follows float64 closely and the test holds wsol to
# 1e-4; VGG16 has no batch norm.
RUNS = [
    ("vgg16_cam", "vgg16", "cam", 2, []),
    ("vgg16_acol", "vgg16", "acol", 2, []),
    ("vgg16_spg", "vgg16", "spg", 2, []),
    ("vgg16_adl", "vgg16", "adl", 1, []),
    ("resnet50_cam", "resnet50", "cam", 2, []),
    ("inception_v3_cam", "inception_v3", "cam", 2, []),
    ("resnet50_cam_freeze_bn", "resnet50", "cam", 2, ["freeze_bn"]),
    ("inception_v3_cam_freeze_bn", "inception_v3", "cam", 2, ["freeze_bn"]),
    ("resnet50_acol_freeze_bn", "resnet50", "acol", 2, ["freeze_bn"]),
    ("resnet50_spg_freeze_bn", "resnet50", "spg", 2, ["freeze_bn"]),
    ("resnet50_has_freeze_bn", "resnet50", "has", 1, ["freeze_bn"]),
    ("resnet50_cutmix_freeze_bn", "resnet50", "cutmix", 1, ["freeze_bn"]),
    ("resnet50_adl_freeze_bn", "resnet50", "adl", 1, ["freeze_bn"]),
    ("resnet50_cam_large_feature_map_freeze_bn", "resnet50", "cam", 1, ["--large_feature_map", "true", "freeze_bn"]),
]
COMMON = ["--dataset_name", "CUB", "--pretrained", "false", "--lr", "0.00001", "--lr_decay_frequency", "2",
          "--lr_classifier_ratio", "10", "--momentum", "0.9", "--weight_decay", "0.0001", "--batch_size", str(BATCH),
          "--crop_size", str(IMAGE_SIZE), "--seed", "0"]


def hash32(i, key):
    """A 32-bit hash of (flat index i: uint64 array, key): multiply, xor-shift, multiply."""
    m = np.uint64(0xFFFFFFFF)
    h = (i * np.uint64(0x9E3779B1) + np.uint64(key) * np.uint64(0x85EBCA77)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & m
    h ^= h >> np.uint64(12)
    return h


def batch_pixels(step):
    """uint8 [BATCH, 3, S, S]: the top byte of hash32(flat index, step)."""
    i = np.arange(BATCH * 3 * IMAGE_SIZE * IMAGE_SIZE, dtype=np.uint64)
    return (hash32(i, step) >> np.uint64(24)).astype(np.uint8).reshape(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)


def batch(step, num_classes, dtype=torch.float32):
    x = torch.from_numpy(batch_pixels(step)).float().div(255)
    x.sub_(torch.tensor(MEAN).view(3, 1, 1)).div_(torch.tensor(STD).view(3, 1, 1))
    x = x.to(dtype)  # the float64 run starts from the same float32 pixels
    labels = torch.tensor([(step * 7 + b * 13) % num_classes for b in range(BATCH)])
    return x, labels, [f"{step}_{b}" for b in range(BATCH)]


def wsol_name(arch, method, name):
    """Their state-dict name as wsol names the same tensor (wsol keeps torchvision's
    names where wsolevaluation renamed or shifted them)."""
    parts = name.split(".")
    if arch == "inception_v3" and method in ("cam", "adl") and parts[0] == "SPG_A4":
        return "fc." + parts[1]  # their 1x1 conv on the map is wsol's linear on the GAP
    if arch == "resnet50" and method == "adl" and parts[0] in ("layer3", "layer4"):
        k = int(parts[1])  # ADL modules sit at index 1 (and 4 in layer4) of their lists
        return ".".join([parts[0], str(k if k == 0 else k - 1)] + parts[2:])
    if arch == "resnet50" and method == "spg" and parts[0] in ("SPG_A1", "SPG_A2"):
        k = int(parts[1]) + (0 if parts[0] == "SPG_A1" else 1)
        return ".".join(["layer3", str(k)] + parts[2:])
    if arch == "vgg16" and method == "spg":
        if parts[0] in ("SPG_A_1", "SPG_A_2"):
            base = 17 if parts[0] == "SPG_A_1" else 24
            return f"features.{base + int(parts[1])}.{parts[2]}"
        if parts[0] == "SPG_A_4":
            return "SPG_A4." + parts[1]
    if arch == "vgg16" and method == "adl" and parts[0] == "features":
        # Their list has ADL entries; torchvision's conv indices in order.
        theirs = [0, 2, 5, 7, 10, 12, 14, 18, 20, 22, 26, 28, 30]
        ours = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        return f"features.{ours[theirs.index(int(parts[1]))]}.{parts[2]}"
    return name


def formula(name, shape, t):
    n = int(np.prod(shape))
    u = hash32(np.arange(n, dtype=np.uint64), t).astype(np.float64) / 2.0**31 - 1.0
    if name.endswith("running_mean"):
        w = 0.1 * u
    elif name.endswith("running_var"):
        w = 1.0 + 0.25 * (u + 1.0)
    elif name.endswith(".bias"):
        w = 0.1 * u
    elif len(shape) == 1:
        w = 0.5 + 0.1 * u
    else:
        w = np.sqrt(6.0 / (n // shape[0])) * u
    return w.astype(np.float32)


def set_formula_weights(model, arch, method):
    state = model.state_dict()
    floats = {k: v for k, v in state.items() if v.dtype.is_floating_point}
    ours = {wsol_name(arch, method, k): k for k in floats}
    assert len(ours) == len(floats), "name map is not one-to-one"
    new = {}
    for t, name in enumerate(sorted(ours)):
        theirs = ours[name]
        shape = list(floats[theirs].shape)
        wsol_shape = shape[:2] if name.startswith("fc.") and len(shape) == 4 else shape
        new[theirs] = torch.from_numpy(formula(name, wsol_shape, t)).reshape(shape)
    model.load_state_dict(new, strict=False)
    return ours


class Recorder:
    """A module stand-in that records what selected random functions return."""

    def __init__(self, module, log, names):
        self._module, self._log, self._names = module, log, names

    def __getattr__(self, attr):
        value = getattr(self._module, attr)
        if attr in self._names:
            def recorded(*args, **kwargs):
                out = value(*args, **kwargs)
                self._log.extend(np.asarray(out, dtype=np.float64).reshape(-1).tolist())
                return out
            return recorded
        if isinstance(value, types.ModuleType) and attr == "random":
            return Recorder(value, self._log, self._names)
        return value


class Dropout:
    """F.dropout for their Inception: x * F.dropout(ones_like(x)) (see the stubs),
    recording each mask (`log`), or applying given ones (`replay`, for the float64 run)."""

    def __init__(self):
        self.log, self.replay = [], None

    def __call__(self, x, p=0.5, training=True, inplace=False):
        if not training:
            return x
        if self.replay is not None:
            keep = self.replay.pop(0)
            noise = torch.from_numpy(keep.reshape(tuple(x.shape))).to(x.dtype) / (1 - p)
        else:
            noise = F.dropout(torch.ones_like(x), p, True)
            keep = (noise != 0).numpy().reshape(-1)
        self.log.append(keep.copy())
        return x * noise


DROPOUT = Dropout()


def load_their_code(root):
    sys.path.insert(0, root)
    np.int = int
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    import wsol.method.spg as spg
    source = open(os.path.join(root, "wsol", "method", "spg.py")).read()
    assert source.count("224, 224") == 5, "spg.py is not the pinned commit's"
    exec(compile(source.replace("224, 224", f"{IMAGE_SIZE}, {IMAGE_SIZE}"), spg.__file__, "exec"), spg.__dict__)
    import wsol.inception as inception
    inception.F = types.SimpleNamespace(**{**vars(F), "dropout": DROPOUT})
    import main
    return main


def run(main, name, arch, method, epochs, extra, dtype, replay_masks=None):
    """One run of their trainer in `dtype`: what it drew, lost and ended with."""
    stdout = sys.stdout
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    freeze_bn = "freeze_bn" in extra
    flags = [f for f in extra if f != "freeze_bn"]
    argv = ["main.py", "--experiment_name", name, "--override_cache", "true", "--architecture", arch,
            "--wsol_method", method, *COMMON, *flags]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        sys.argv = argv
        try:
            args = main.get_configs()
        finally:
            sys.stdout = stdout
            os.chdir(cwd)
    trainer = main.Trainer.__new__(main.Trainer)
    trainer.args = args
    trainer.performance_meters = trainer._set_performance_meters()
    with open(os.devnull, "w") as quiet:  # it prints the model
        sys.stdout = quiet
        try:
            trainer.model = trainer._set_model()
        finally:
            sys.stdout = stdout
    num_classes = trainer._NUM_CLASSES_MAPPING[args.dataset_name]
    names = set_formula_weights(trainer.model, arch, method)
    trainer.model.to(dtype)
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.cross_entropy_loss = nn.CrossEntropyLoss()
    trainer.optimizer = trainer._set_optimizer()

    batch_draws, layer_draws = [], []
    # The modules themselves: wsol.method's `has` and `cutmix` attributes are the functions.
    adl, cutmix, has = (sys.modules[f"wsol.method.{m}"] for m in ("adl", "cutmix", "has"))
    has.random = Recorder(random, batch_draws, {"random"})
    cutmix.np = Recorder(np, batch_draws, {"beta", "randint"})
    cutmix.torch = Recorder(torch, batch_draws, {"randperm"})
    main.np = Recorder(np, batch_draws, {"rand"})
    adl.torch = Recorder(torch, layer_draws, {"rand"})

    steps = []
    wsol_training = trainer._wsol_training

    def recorded_step(images, target):
        del batch_draws[:], layer_draws[:], DROPOUT.log[:]
        if replay_masks is not None:
            DROPOUT.replay = list(replay_masks[len(steps)])
        lrs = [g["lr"] for g in trainer.optimizer.param_groups]
        logits, loss = wsol_training(images, target)
        steps.append({"loss": loss.item(), "lrs": lrs, "batch_draws": list(batch_draws),
                      "layer_draws": list(layer_draws), "masks": list(DROPOUT.log)})
        DROPOUT.replay = None
        return logits, loss

    trainer._wsol_training = recorded_step
    if freeze_bn:
        train = trainer.model.train

        def train_with_frozen_bn(mode=True):
            train(mode)
            for m in trainer.model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
            return trainer.model

        trainer.model.train = train_with_frozen_bn
    for epoch in range(epochs):
        # The same ten batches every epoch, as a dataset of 40 images without shuffling.
        trainer.loaders = {"train": [batch(s, num_classes, dtype) for s in range(STEPS_PER_EPOCH)]}
        trainer.adjust_learning_rate(epoch + 1)
        with open(os.devnull, "w") as quiet:  # their per-iteration prints
            sys.stdout = quiet
            try:
                trainer.train(split="train")
            finally:
                sys.stdout = stdout
    has.random, cutmix.np, cutmix.torch, main.np, adl.torch = random, np, torch, np, torch

    group_of = {id(p): g for g, group in enumerate(trainer.optimizer.param_groups) for p in group["params"]}
    params = dict(trainer.model.named_parameters())
    final = trainer.model.state_dict()
    weights = {}
    for ours in sorted(names):
        theirs = names[ours]
        f = final[theirs].detach().double().reshape(-1).numpy()
        d = (final[theirs].double() - initial[theirs].double()).reshape(-1)
        n = f.size
        idx = sorted(set((j * n) // SAMPLES for j in range(SAMPLES)))
        group = group_of.get(id(params[theirs])) if theirs in params else None
        weights[ours] = {"lr_group": group, "numel": n, "index": idx, "final": [float(f[j]) for j in idx],
                         "update_l2": float(d.norm()), "final_abs_max": float(np.abs(f).max())}
    return args, num_classes, argv, freeze_bn, steps, weights


def record(main, name, arch, method, epochs, extra):
    """Their run in float32 (the peer wsol is held to) and in float64 (the trajectory both
    approximate): train-mode batch norm makes ResNet's and Inception's float32 gradients
    differ from the exact ones by percents, PyTorch's as much as any, so the test measures
    both float32 runs against the float64 one."""
    args, num_classes, argv, freeze_bn, steps, weights = run(main, name, arch, method, epochs, extra, torch.float32)
    masks = [s["masks"] for s in steps]
    _, _, _, _, steps64, weights64 = run(main, name, arch, method, epochs, extra, torch.float64, masks)
    for s32, s64 in zip(steps, steps64):
        assert s32["batch_draws"] == s64["batch_draws"] and s32["layer_draws"] == s64["layer_draws"], name
        s32["loss_f64"] = s64["loss"]
        # [count, base64 of the bits packed most significant first], one per dropout call
        s32["layer_masks"] = [[int(m.size), base64.b64encode(np.packbits(m).tobytes()).decode()]
                              for m in s32.pop("masks")]
        del s64["masks"]
    for k, w in weights.items():
        w["final_f64"] = weights64[k]["final"]
        w["update_l2_f64"] = weights64[k]["update_l2"]
    return {
        "wsolevaluation_commit": COMMIT,
        "torch": torch.__version__,
        "architecture": arch,
        "method": method,
        "flags": argv[1:],
        "freeze_bn": freeze_bn,
        "large_feature_map": bool(args.large_feature_map),
        "num_classes": num_classes,
        "image_size": IMAGE_SIZE,
        "batch_size": BATCH,
        "steps_per_epoch": STEPS_PER_EPOCH,
        "epochs": epochs,
        "lr": args.lr,
        "lr_decay_frequency": args.lr_decay_frequency,
        "lr_classifier_ratio": args.lr_classifier_ratio,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "acol_threshold": args.acol_threshold,
        "spg_thresholds": [list(t) for t in args.spg_thresholds],
        "adl_drop_rate": args.adl_drop_rate,
        "adl_threshold": args.adl_threshold,
        "has_grid_size": args.has_grid_size,
        "has_drop_rate": args.has_drop_rate,
        "cutmix_beta": args.cutmix_beta,
        "cutmix_prob": args.cutmix_prob,
        "steps": steps,
        "weights": weights,
    }


def main_():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/training_parity"
    only = set(sys.argv[2:])
    root = os.environ.get("WSOLEVALUATION")
    if not root:
        sys.exit("set WSOLEVALUATION to a checkout of clovaai/wsolevaluation at " + COMMIT)
    torch.set_num_threads(1)
    main = load_their_code(os.path.abspath(root))
    os.makedirs(out, exist_ok=True)
    for name, arch, method, epochs, extra in RUNS:
        if only and name not in only:
            continue
        rec = record(main, name, arch, method, epochs, extra)
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(rec, f, separators=(",", ":"))
            f.write("\n")
        losses = [s["loss"] for s in rec["steps"]]
        dev = max(abs(s["loss"] - s["loss_f64"]) / abs(s["loss_f64"]) for s in rec["steps"])
        print(f"{name}: float32 loss off float64 by at most {dev:.1e} (relative)")
        print(f"{name}: {len(losses)} steps, losses " + " ".join(f"{l:.3f}" for l in losses), flush=True)


if __name__ == "__main__":
    main_()
