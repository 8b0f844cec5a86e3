#!/usr/bin/env python3
"""Writes tests/fixtures/scm_parity/: the SCM authors' model (164140757/SCM,
lib/models/{deit,graphFusion,vision_transformer}.py, imported unmodified) at deit_tiny
size with 10 classes, on the weights formula of scripts/make_deit_parity_fixture.py
(every float tensor, the calibration layers' `thred` and `fuse._loss_rate` included),
on a 2 x 3 x 224 x 224 input x_i = ((i * 7919) mod 2001) / 1000 - 1 (their Fuse builds a
14 x 14 grid only, so 224 is the one size their model runs at), labels [3, 7]:

* train mode (their training forward): the calibrated semantic maps and attention map out
  of the last calibration layer, the logits, the cross-entropy, and the gradients of the
  loss for the calibration scalars, the conv head's bias and the class token (which the
  loss reaches only through the attention map);
* eval mode (their test forward): the logits and the maps `predict` (min-max normalized
  attention map x semantic maps) and `pred_cam`;
* the training quantities again from their model in float64 (`*_f64.npy`, stored as
  float32), the values both float32 runs approximate.

    pip install torch timm==1.0.31 einops scipy numpy
    git clone https://github.com/164140757/SCM /tmp/SCM
    python3 scripts/make_scm_parity_fixture.py tests/fixtures/scm_parity /tmp/SCM

The one piece of glue: their deit.py imports `timm.models.layers.classifier`, which timm
1.x moved to `timm.layers.classifier`; that module is aliased under the old name.
"""
import os
import sys
import types
import importlib

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = 10
LABELS = [3, 7]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_deit_parity_fixture import set_formula_weights  # noqa: E402


def load_model(repo):
    import timm.layers.classifier
    sys.modules["timm.models.layers.classifier"] = timm.layers.classifier
    pkg = types.ModuleType("scm_models")  # their lib/models, without its __init__ (conformer)
    pkg.__path__ = [os.path.join(repo, "lib", "models")]
    sys.modules["scm_models"] = pkg
    deit = importlib.import_module("scm_models.deit")
    model = deit.deit_scm_tiny_patch16_224(pretrained=False, num_classes=CLASSES)
    set_formula_weights(model)
    return model


def train_pass(model, x):
    """Their training forward and backward: the arrays the fixture keeps, by file stem."""
    model.train()  # no dropout or drop-path at their model's defaults: deterministic
    model.zero_grad()
    last = {}
    hook = model.layers[-1].register_forward_hook(lambda m, i, o: last.update(maps=o[0], cam=o[1]))
    logits = model(x)
    hook.remove()
    loss = F.cross_entropy(logits, torch.tensor(LABELS))
    loss.backward()
    params = dict(model.named_parameters())
    scalars = [params[f"layers.{k}.{n}"].grad for k in range(len(model.layers)) for n in ("thred", "fuse._loss_rate")]
    return {
        "train_logits": logits, "train_maps": last["maps"], "train_cam": last["cam"], "train_loss": loss.reshape(1),
        "grad_layers": torch.cat(scalars), "grad_head_bias": params["head.bias"].grad,
        "grad_cls_token": params["cls_token"].grad,
    }


def main():
    out, repo = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    model = load_model(repo)
    i = np.arange(2 * 3 * 224 * 224, dtype=np.int64)
    x = torch.from_numpy((((i * 7919) % 2001) / 1000.0 - 1.0).astype(np.float32)).reshape(2, 3, 224, 224)
    save = lambda name, t: np.save(os.path.join(out, name), t.detach().numpy().astype(np.float32))

    model.eval()
    with torch.no_grad():
        logits, predict, pred_cam, _ = model(x)
    save("eval_logits.npy", logits)
    save("eval_maps.npy", predict)
    save("eval_pred_cam.npy", pred_cam)

    # The calibration is ill-conditioned (Newton-Schulz steps on a matrix near singular):
    # their own float32 run is ~1e-2 (relative) from the float64 one. Both are kept, so a
    # test can hold wsol's float32 to the float64 values within their float32's error.
    f32 = train_pass(model, x)
    f64 = train_pass(model.double(), x.double())
    for name in f32:
        save(f"{name}.npy", f32[name])
        save(f"{name}_f64.npy", f64[name])
    print(f"loss {f32['train_loss'].item():.6f} (float64 {f64['train_loss'].item():.6f}); wrote {out}")


if __name__ == "__main__":
    main()
