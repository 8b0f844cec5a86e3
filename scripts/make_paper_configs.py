#!/usr/bin/env python3
"""Writes configs/<dataset>/<backbone>_<method>.yaml: the paper grid of Choe et al. 2020
(wsolevaluation) -- CUB, ILSVRC, OpenImages x VGG16, ResNet-50, Inception-v3 x CAM,
HaS, ACoL, SPG, ADL, CutMix -- from one table, so the 54 files stay consistent; and BAS
(Wu et al., CVPR 2022) on CUB and ILSVRC x VGG16, ResNet-50 with its authors' recipe
(github.com/wpy1999/BAS; no Inception-v3: wsol has no layout of their Inception yet);
and SCM (Bai et al., ECCV 2022) on CUB and ILSVRC x DeiT-S with its authors' recipe
(github.com/164140757/SCM). (The TS-CAM configs, configs/*/deit_small_tscam.yaml, are
written by hand.)

    python3 scripts/make_paper_configs.py            # rewrites configs/{cub,ilsvrc,openimages}/

Every value's source is written into the file it goes to.
"""
import os

DATASETS = {
    # key: (folder, title, classes, epochs, decay every, weight decay, select_by, schedule source)
    "cub": ("CUB", "CUB-200-2011", 200, 50, 15, 1.0e-4, "maxboxacc_v2",
            "the CUB schedule of Choe et al. 2020 as we read it"),
    "ilsvrc": ("ILSVRC", "ImageNet (ILSVRC 2012)", 1000, 10, 3, 1.0e-4, "maxboxacc_v2",
               "the ImageNet schedule of Choe et al. 2020 as we read it"),
    "openimages": ("OpenImages", "OpenImages30k", 100, 10, 3, 5.0e-4, "pxap",
                   "their README's example command for OpenImages"),
}
# Shipped names files (line k = class k) for pictures and printed lines; the other
# datasets' names come from a class_names.txt in their metadata folder, when there is one.
CLASS_NAMES = {"ilsvrc": "  class_names: configs/imagenet_class_names.txt   # scripts/make_imagenet_class_names.py\n"}
BACKBONES = {
    # key: (title, torchvision ImageNet file named in wsolevaluation's model_urls, their file)
    "vgg16": ("VGG16", "vgg16-397923af.pth", "vgg"),
    "resnet50": ("ResNet-50", "resnet50-19c8e357.pth", "resnet"),
    "inception_v3": ("Inception-v3", "inception_v3_google-1a9a5a14.pth", "inception"),
}
METHODS = {
    "cam": ("CAM (Zhou et al., CVPR 2016)", ""),
    "has": ("HaS, Hide-and-Seek (Singh & Lee, ICCV 2017)", "  has: {grid_size: 4, drop_rate: 0.5}   # wsolevaluation config.py defaults\n"),
    "acol": ("ACoL (Zhang et al., CVPR 2018)", "  acol: {erase_threshold: 0.7, width: 1024}   # wsolevaluation --acol_threshold 0.7\n"),
    "spg": ("SPG, Self-produced Guidance (Zhang et al., ECCV 2018)",
            "  spg:   # wsolevaluation config.py defaults\n"
            "    {threshold_1h: 0.7, threshold_1l: 0.01, threshold_2h: 0.5, threshold_2l: 0.05, threshold_3h: 0.7, threshold_3l: 0.1}\n"),
    "adl": ("ADL, Attention-based Dropout Layer (Choe & Shim, CVPR 2019)",
            "  adl: {drop_rate: 0.75, drop_threshold: 0.9}   # wsolevaluation --adl_drop_rate 0.75 --adl_threshold 0.9\n"),
    "cutmix": ("CutMix (Yun et al., ICCV 2019)", "  cutmix: {beta: 1.0, prob: 1.0}   # wsolevaluation --cutmix_beta 1 --cutmix_prob 1\n"),
}

# The data script of each dataset key (ILSVRC's is named after ImageNet).
PREPARE = {"cub": "cub", "ilsvrc": "imagenet", "openimages": "openimages"}


def learning_rate(key, bb, method):
    """config.py's default, except where wsolevaluation's README gives a run's value."""
    if (key, bb, method) == ("openimages", "vgg16", "cam"):
        return {"lr": 0.00227913316, "lr_note": "\n#     Here lr is the value of their README's example command for this run."}
    return {"lr": 0.01, "lr_note": ""}


TEMPLATE = """\
# {title} x {bb_title} x {m_title}
# The protocol of Choe et al., "Evaluating WSOL Right" (CVPR 2020) and its code,
# clovaai/wsolevaluation:
#   - network and method layout: wsol/{bb_file}.py and wsol/method/ (weight names stay
#     torchvision's, so the ImageNet file loads as it is);
#   - SGD, momentum 0.9, Nesterov, new layers at 10x the rate (--lr_classifier_ratio;
#     ResNet: layer4 and fc, as their main.py groups), batch 32, resize 256 -> random
#     crop 224 -> flip, evaluation at 224, last checkpoint, IoU 30/50/70, all contours,
#     cam_curve_interval 0.001: main.py / config.py defaults and their README's example;
#   - {epochs} epochs, lr x0.1 every {decay} epochs, weight decay {wd}: {schedule};
#     counted as main.py does (adjust_learning_rate(epoch + 1) decays at multiples of
#     lr_decay_frequency), so the first decay comes after {decay} - 1 epochs: step_offset 1;
#     (the per-run values are in the spreadsheet below: check them there);
#   - lr 0.01 is config.py's default, not a tuned value: the learning rates their search
#     found per method and backbone are in the authors' spreadsheet linked from their
#     README (not reachable from the machine these files were written on). Set
#     train.optimizer.lr from it, or search on val with
#     `wsol sweep --config THIS --trials 30` (their protocol).{lr_note}
# Data: scripts/prepare_{prep}.sh (see data/README.md). Weights: scripts/get_torchvision_weights.sh.
# Run:  wsol train --config configs/{key}/{bb}_{method}.yaml
name: {key}_{bb}_{method}
seed: 0
device: cuda:0
data:
  format: wsol
  metadata_root: data/metadata/{ddir}
  image_root: data/{ddir}
  num_classes: {classes}
{class_names}  image_size: 224
  resize_size: 256
  hflip: true
  batch_size: 32
  workers: 8
model:
  backbone: {bb}
  head: {method}
  pretrained: data/weights/{weights}
  large_feature_map: false
{method_block}train:
  epochs: {epochs}
  optimizer: {{name: sgd, lr: {lr}, momentum: 0.9, weight_decay: {wd}, nesterov: true, new_layer_lr_mult: 10}}
  schedule: {{name: step, step_epochs: {decay}, step_offset: 1, gamma: 0.1, warmup_epochs: 0}}
  select_by: {select_by}
eval:
  cam: cam
  cam_curve_interval: 0.001
  iou_thresholds: [30, 50, 70]
  multi_contour: true
  checkpoint: last
log: {{dir: experiments/runs, tensorboard: true, every_steps: 50, cam_images: 8}}
"""


# BAS, from wpy1999/BAS (files under CUB/ and ILSVRC/ of their repo):
# key: (epochs, decay at multiples of, batch, {backbone: (area_weight, fg_weight, top_k,
# inference threshold)})
BAS = {
    "cub": (100, 80, 32, {
        "vgg16": (0.7, 0.0, 80, 0.15),
        "resnet50": (1.2, 0.5, 200, 0.15),
        "inception_v3": (1.0, 0.5, 200, 0.1),
    }),
    "ilsvrc": (9, 3, 128, {
        "vgg16": (1.0, 0.05, None, 0.5),
        "resnet50": (2.0, 1.0, None, 0.45),
    }),
}

BAS_TEMPLATE = """\
# {title} x {bb_title} x BAS, Background Activation Suppression (Wu et al., CVPR 2022)
# The recipe of the authors' code, github.com/wpy1999/BAS ({ddir}/ of their repo):
#   - network: Model/{bb_file}.py (the generator reads {tap}; classifier
#     conv3x3 -> 1024 -> conv3x3 -> 1024 -> conv1x1 -> classes, ReLU after each);
#   - loss: CE + {fg} x CE of the foreground scores ({fg_src}) + background activation
#     + {area} x area ({area_src});
#   - SGD lr 0.001, momentum 0.9, Nesterov, weight decay 5e-4, layers named `classifier`
#     at 10x: train.py and utils/optimizer.py (their biases also train at 2x / 20x the
#     rate, which wsol's optimizer does not model); batch {batch}, {epochs} epochs, lr x0.1
#     at multiples of {decay} epochs (utils/lr.py, called with decay_epoch={decay});
#     resize 256x256 -> random crop 224 -> flip: DataLoader.py;
#   - localization map: {map_src}; their inference threshold {thr} is
#     eval.fixed_threshold (the `*_fixed` numbers; they resize 256 -> centre crop 224 and
#     keep the largest connected region, wsol scores the protocol of Choe et al. 2020).
# Published (their README's table, their protocol): top-1 loc {pub_top1}, GT-known {pub_gt}.
# Data: scripts/prepare_{prep}.sh (see data/README.md). Weights: scripts/get_torchvision_weights.sh.
# Run:  wsol train --config configs/{key}/{bb}_bas.yaml
name: {key}_{bb}_bas
seed: 0
device: cuda:0
data:
  format: wsol
  metadata_root: data/metadata/{mdir}
  image_root: data/{mdir}
  num_classes: {classes}
{class_names}  image_size: 224
  resize_size: 256
  hflip: true
  batch_size: {batch}
  workers: 8
model:
  backbone: {bb}
  method: bas
  pretrained: data/weights/{weights}
  bas: {{area_weight: {area}, fg_weight: {fg}, top_k: {top_k}}}
train:
  epochs: {epochs}
  optimizer: {{name: sgd, lr: 0.001, momentum: 0.9, weight_decay: 0.0005, nesterov: true, new_layer_lr_mult: 10}}
  schedule: {{name: step, step_epochs: {decay}, step_offset: 0, gamma: 0.1, warmup_epochs: 0}}
  select_by: maxboxacc_v2
eval:
  cam: cam
  cam_curve_interval: 0.001
  iou_thresholds: [30, 50, 70]
  multi_contour: true
  fixed_threshold: {thr}
  checkpoint: last
log: {{dir: experiments/runs, tensorboard: true, every_steps: 50, cam_images: 8}}
"""
BAS_PUBLISHED = {
    ("cub", "vgg16"): ("71.33", "91.07"), ("cub", "resnet50"): ("77.25", "95.13"),
    ("ilsvrc", "vgg16"): ("52.96", "69.64"), ("ilsvrc", "resnet50"): ("57.18", "71.77"),
    ("cub", "inception_v3"): ("73.29", "92.24"),  # their README's Img/accuracy.png
}


def write_bas(root):
    n = 0
    for key, (epochs, decay, batch, rows) in BAS.items():
        ddir, title, classes = DATASETS[key][:3]
        for bb, (area, fg, top_k, thr) in rows.items():
            bb_title, weights, bb_file = BACKBONES[bb]
            model_file = {"vgg16": "vgg", "resnet50": "resnet", "inception_v3": "inception"}[bb]
            if key == "cub":
                fg_src = "train.py: 0.0 x loss_2 on VGG" if fg == 0 else "train.py: loss_2 * 0.5"
                area_src = f"Model/{model_file}.py bas_loss"
                map_src = f"the mean of the {top_k} top-scored classes' maps (BAS_inference.py --top_k)"
            else:
                fg_src = f"Model/{model_file}.py loss_cls"
                area_src = f"Model/{model_file}.py loss_loc"
                map_src = "the GT class's map (BAS_inference.py calls the model with N=1)"
            text = BAS_TEMPLATE.format(
                title=title, bb_title=bb_title, ddir=key.upper(), bb_file=model_file, key=key, prep=PREPARE[key], bb=bb,
                tap={"resnet50": "layer3 (stride 1), a 2x2 max-pool before layer4", "vgg16": "conv4_3; no conv6",
                     "inception_v3": "Mixed_6e at stride 8; then Mixed_7a/b/c, Mixed_7a padded"}[bb],
                fg=fg, fg_src=fg_src, area=area, area_src=area_src, batch=batch, epochs=epochs, decay=decay,
                map_src=map_src, thr=thr, pub_top1=BAS_PUBLISHED[key, bb][0], pub_gt=BAS_PUBLISHED[key, bb][1],
                mdir=ddir, classes=classes, class_names=CLASS_NAMES.get(key, ""), weights=weights,
                top_k="null" if top_k is None else top_k)
            with open(os.path.join(root, key, f"{bb}_bas.yaml"), "w") as f:
                f.write(text)
            n += 1
    return n


# SCM, from 164140757/SCM (configs/<CUB|ILSVRC>/deit_scm_small_patch16_224.yaml, README):
# key: (epochs, batch, lr, lr source, schedule, decay note, CAM_THR, published top-1 loc, GT-known)
SCM = {
    "cub": (30, 16, "5e-05", "their README's CUB command --lr 5e-5",
            "{name: step, step_epochs: 30, step_offset: 1, gamma: 0.1, warmup_epochs: 0}",
            "LR_STEPS [30]: decays at 30, the last epoch", 0.1, "76.4", "96.6"),
    "ilsvrc": (20, 512, "1e-06", "their README's ILSVRC command --lr 1e-6",
               "{name: multistep, milestones: [9, 11, 19], gamma: 0.1, warmup_epochs: 0}",
               "LR_STEPS [10, 12]: decays at 10, 12 and 20;\n#     multistep with milestones [9, 11, 19], epochs counted from 0",
               0.12, "56.1", "68.8"),
}

SCM_TEMPLATE = """\
# {title} x DeiT-Small x SCM, spatial calibration module (Bai et al., ECCV 2022)
# The recipe of the authors' code, github.com/164140757/SCM:
#   - network: lib/models/deit.py SCM, TS-CAM's (timm's DeiT-S, a 3x3 conv `head` on the
#     patch tokens; the class token's attention to the patches, head-mean, summed over
#     the 12 blocks) with 4 calibration layers (deit.py Encoder, graphFusion.py Fuse) that
#     run in training only: the loss is the cross-entropy of the GAP of the calibrated
#     semantic maps (tools_cam/train_cam.py); at inference logits = GAP of the semantic
#     maps, map = min-max(attention map) x the class's semantic map. model.scm holds their
#     defaults (num_layers 4, thred 0.5, loss_rate 1, 16 / 4 Newton-Schulz iterations,
#     alpha 0.002). ImageNet weights deit_small_patch16_224-cd65a155.pth (their deit.py);
#   - {epochs} epochs, batch {batch}, resize 256x256 -> random crop 224 -> flip, evaluation at
#     224: configs/{ddir}/deit_scm_small_patch16_224.yaml and lib/datasets/{data_file}.py;
#   - lr x0.1 when the 1-based epoch is a multiple of a step (lib/core/engine.py
#     adjust_learning_rate_normal, {decay_note});
#   - optimizer: timm's create_optimizer with their argparse defaults (lib/config/default.py):
#     AdamW (betas 0.9/0.999, eps 1e-8), weight decay 0.05 without decay on biases, norms,
#     the calibration scalars, pos_embed and cls_token (timm's filter_bias_and_bn),
#     drop-path 0.1 (--drop-path, drop_path_rate in tools_cam/train_cam.py: timm's
#     linspace rule over the 12 blocks); lr {lr}: {lr_src}.
#     Their yaml's SOLVER.START_LR and WEIGHT_DECAY are read by nothing;
#   - their CAM_THR {thr} is eval.fixed_threshold (the `*_fixed` numbers; their
#     test_cam.py sweeps thresholds 0.01 apart on the largest contour of a bilinear
#     resize, wsol scores the protocol of Choe et al. 2020).
# Published (their README's table, DeiT-S): top-1 loc {pub_top1}, GT-known loc {pub_gt}.
# Data: scripts/prepare_{prep}.sh (see data/README.md). Weights: scripts/get_deit_weights.sh.
# Run:  wsol train --config configs/{key}/deit_small_scm.yaml
name: {key}_deit_small_scm
seed: 26   # BASIC.SEED of their yaml
device: cuda:0
data:
  format: wsol
  metadata_root: data/metadata/{ddir}
  image_root: data/{ddir}
  num_classes: {classes}
{class_names}  image_size: 224
  resize_size: 256
  hflip: true
  batch_size: {batch}
  workers: 8
model:
  backbone: deit_small
  method: scm
  pretrained: data/weights/deit_small_patch16_224-cd65a155.pth
  drop_path_rate: 0.1   # --drop-path of their lib/config/default.py
  scm: {{layers: 4, threshold: 0.5, loss_rate: 1.0, first_iterations: 16, iterations: 4, schulz_alpha: 0.002}}
train:
  epochs: {epochs}
  optimizer: {{name: adamw, lr: {lr}, weight_decay: 0.05, betas: [0.9, 0.999], eps: 1.0e-8, new_layer_lr_mult: 1, filter_bias_and_bn: true}}
  schedule: {schedule}
  select_by: maxboxacc_v2
eval:
  cam: cam
  cam_curve_interval: 0.001
  iou_thresholds: [30, 50, 70]
  multi_contour: true
  fixed_threshold: {thr}
  checkpoint: last
log: {{dir: experiments/runs, tensorboard: true, every_steps: 50, cam_images: 8}}
"""


def write_scm(root):
    for key, (epochs, batch, lr, lr_src, schedule, decay_note, thr, pub_top1, pub_gt) in SCM.items():
        ddir, title, classes = DATASETS[key][:3]
        text = SCM_TEMPLATE.format(
            title=title, ddir=ddir, data_file={"cub": "cub", "ilsvrc": "imagenet"}[key], epochs=epochs, batch=batch,
            lr=lr, lr_src=lr_src, schedule=schedule, decay_note=decay_note, thr=thr, pub_top1=pub_top1, pub_gt=pub_gt,
            prep=PREPARE[key], key=key, classes=classes, class_names=CLASS_NAMES.get(key, ""))
        with open(os.path.join(root, key, "deit_small_scm.yaml"), "w") as f:
            f.write(text)
    return len(SCM)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
    for key, (ddir, title, classes, epochs, decay, wd, select_by, schedule) in DATASETS.items():
        os.makedirs(os.path.join(root, key), exist_ok=True)
        for bb, (bb_title, weights, bb_file) in BACKBONES.items():
            for method, (m_title, block) in METHODS.items():
                text = TEMPLATE.format(
                    title=title, bb_title=bb_title, m_title=m_title, bb_file=bb_file, schedule=schedule,
                    epochs=epochs, decay=decay, wd=wd, key=key, prep=PREPARE[key], bb=bb, method=method, ddir=ddir,
                    classes=classes, weights=weights, method_block=block, select_by=select_by,
                    class_names=CLASS_NAMES.get(key, ""),
                    **learning_rate(key, bb, method))
                with open(os.path.join(root, key, f"{bb}_{method}.yaml"), "w") as f:
                    f.write(text)
    print("wrote", 3 * len(BACKBONES) * len(METHODS) + write_bas(root) + write_scm(root), "configs")


if __name__ == "__main__":
    main()
