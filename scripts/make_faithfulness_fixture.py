#!/usr/bin/env python3
"""Writes tests/fixtures/faithfulness/: the faithfulness metrics of torch-cam and
pytorch-grad-cam, computed by their own code on wsol's ResNet-18 (the weights formula of
scripts/make_backbone_parity_fixture.py, the classifier's weights and bias then times
FC_SCALE, so tests can build the same network) for fixed
images and maps and the model's top classes, for tests/cli/faithfulness.rs to compare against.

    python3 scripts/make_faithfulness_fixture.py TORCHCAM_DIR GRADCAM_DIR [OUT_DIR]

TORCHCAM_DIR / GRADCAM_DIR: folders holding the `torchcam` package (frgfm/torch-cam, at
f44afef; its DeletionInsertionMetric is newer than the PyPI release) and the
`pytorch_grad_cam` package (jacobgil/pytorch-grad-cam, at 084273b). Needs torch,
torchvision, numpy, scipy (ROAD's sparse solve), and what pytorch_grad_cam's package
import pulls in (opencv-python, matplotlib, scikit-learn, tqdm, ttach).

What is recorded (per image, float64 JSON):
  - torch-cam ClassificationMetric (logits_fn softmax): Average Drop and Increase in
    Confidence, one update per image (the summary is their mean).
  - pytorch-grad-cam DropInConfidence / IncreaseInConfidence with
    ClassifierOutputSoftmaxTarget (the unnormalized drop).
  - torch-cam DeletionInsertionMetric (softmax) with steps 20 and 7, zero baseline and a
    blur baseline (torchvision gaussian_blur, kernel 11, sigma 5), AUCs per image.
  - pytorch-grad-cam ROAD most- and least-relevant-first with the noisy linear imputer at
    noise 0 (its noise is torch.randn_like, not reproducible across libraries; wsol's
    own noise is seeded), per percentile 10..90: the change of the softmax score; and
    one imputed image (MoRF at 50), to hold the linear solve alone.
The maps are quantized to 1/32 steps, so that ties in the ranking and at the
percentile thresholds are exercised.
"""
import json
import os
import sys
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
import torchvision.transforms.functional as TF

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_backbone_parity_fixture import formula_weights, resnet  # noqa: E402

SIZE = 32
FC_SCALE = 12.0
IMAGES = 3
PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]


def inputs():
    rng = np.random.default_rng(2022)
    n = IMAGES
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    images, maps = [], []
    for k in range(n):
        img = np.stack([np.sin(6 * x * (c + 1) + k) + np.cos(5 * y * (k + 1)) for c in range(3)])
        images.append(img + 0.3 * rng.standard_normal((3, SIZE, SIZE)))
        cx, cy = rng.uniform(0.2, 0.8, 2)
        m = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05) + 0.2 * rng.uniform(0, 1, (SIZE, SIZE))
        m = (m - m.min()) / (m.max() - m.min())
        maps.append(np.floor(m * 32) / 32)
    return np.float32(images), np.float32(maps)


class FixedCams:
    """A stand-in CAM extractor for torch-cam's metrics: the given maps, already at the
    input size (its bilinear resize to the same size is the identity)."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kw):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextmanager
    def _hooks_off(self):
        yield


def blur(x):
    return TF.gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])


def main(torchcam_dir, gradcam_dir, out):
    sys.path[:0] = [torchcam_dir, gradcam_dir]
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    model, _ = resnet(18)
    formula_weights(model)
    with torch.no_grad():
        # A confident classifier (the formula alone gives near-uniform probabilities).
        model.fc.weight.mul_(FC_SCALE)
        model.fc.bias.mul_(FC_SCALE)
    model.eval()
    images, maps = inputs()
    x, cams = torch.from_numpy(images), torch.from_numpy(maps)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    # Each image's top class, and for the last image its second, a less sure one.
    order = probs.argsort(dim=1, descending=True)
    classes = [int(order[i, 0]) for i in range(len(x) - 1)] + [int(order[-1, 1])]
    result = {"size": SIZE, "fc_scale": FC_SCALE, "classes": classes, "percentiles": PERCENTILES,
              "scores": [float(probs[i, c]) for i, c in enumerate(classes)]}
    softmax = partial(torch.softmax, dim=-1)

    per = {k: [] for k in ["avg_drop", "increase"]}
    for i, c in enumerate(classes):
        m = ClassificationMetric(FixedCams(model, cams[i:i + 1]), softmax)
        m.update(x[i:i + 1], class_idx=c)
        s = m.summary()
        per["avg_drop"].append(s["avg_drop"])
        per["increase"].append(s["conf_increase"])
    result["torchcam_classification"] = per

    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    result["gradcam_drop_in_confidence"] = DropInConfidence()(x, maps, targets, model).astype(float).tolist()
    result["gradcam_increase_in_confidence"] = IncreaseInConfidence()(x, maps, targets, model).astype(float).tolist()

    di = {}
    for steps in (20, 7):
        for name, baseline in (("zero", None), ("blur", blur)):
            dels, ins = [], []
            for i, c in enumerate(classes):
                m = DeletionInsertionMetric(FixedCams(model, cams[i:i + 1]), softmax, steps=steps, baseline=baseline)
                m.update(x[i:i + 1], class_idx=c)
                s = m.summary()
                dels.append(s["deletion_auc"])
                ins.append(s["insertion_auc"])
            di[f"{steps}_{name}"] = {"deletion": dels, "insertion": ins}
    result["torchcam_deletion_insertion"] = di
    result["blurred_input"] = blur(x).numpy().astype(float).reshape(-1)[:64].tolist()

    # ROAD without noise: the imputer's default noise of 0.01 set to 0.
    init = road.NoisyLinearImputer.__init__
    road.NoisyLinearImputer.__init__ = lambda self, noise=0.0, weighting=road.neighbors_weights: init(self, 0.0)
    roads = {}
    for name, cls in (("morf", road.ROADMostRelevantFirst), ("lerf", road.ROADLeastRelevantFirst)):
        roads[name] = [cls(percentile=p)(x, maps, targets, model).astype(float).tolist() for p in PERCENTILES]
    result["gradcam_road"] = roads
    imputed = road.RemoveMostRelevantFirst(50, road.NoisyLinearImputer())(x[0], cams[0])
    np.save(os.path.join(out, "imputed_morf50.npy"), imputed.numpy().astype(np.float32))
    np.save(os.path.join(out, "images.npy"), images)
    np.save(os.path.join(out, "maps.npy"), maps)
    result["versions"] = {"torch": torch.__version__, "numpy": np.__version__}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "blurred_input"}, indent=None)[:3000])


if __name__ == "__main__":
    out = sys.argv[3] if len(sys.argv) > 3 else os.path.join(HERE, "..", "tests", "fixtures", "faithfulness")
    os.makedirs(out, exist_ok=True)
    main(sys.argv[1], sys.argv[2], out)
