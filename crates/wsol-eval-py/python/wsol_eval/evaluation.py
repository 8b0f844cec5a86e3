"""wsolevaluation's ``evaluation.py`` on wsol's engine: the same names, arguments and
attributes, the same numbers, faster; float32 maps accepted as well as float64.

    from wsol_eval.evaluation import BoxEvaluator   # instead of: from evaluation import ...

Beyond the official interface: ``accumulate_batch`` (many maps on all cores, optionally
prepared from raw CAMs as ``inference.py`` does) and ``metrics()`` (wsol's named
numbers: MaxBoxAcc, MaxBoxAccV2, per-IoU maxima, best thresholds).
"""
import json
import os

import numpy as np

from . import _native
from .data_loaders import (
    configure_metadata,
    get_bounding_boxes,
    get_image_ids,
    get_image_sizes,
    get_mask_paths,
    split_dir,
)

__all__ = [
    "BoxEvaluator",
    "MaskEvaluator",
    "LocalizationEvaluator",
    "calculate_multiple_iou",
    "check_box_convention",
    "check_scoremap_validity",
    "compute_bboxes_from_scoremaps",
    "evaluate_wsol",
    "get_mask",
    "normalize_scoremap",
    "prepare_scoremap",
    "resize_bbox",
]

_RESIZE_LENGTH = 224


def _as_map(scoremap, what="Scoremap"):
    """The array as the native side takes it: numpy, C order (no copy when it already is)."""
    if not isinstance(scoremap, np.ndarray):
        raise TypeError(f"{what} must be a numpy array; it is {type(scoremap)}.")
    return scoremap if scoremap.flags.c_contiguous else np.ascontiguousarray(scoremap)


def check_scoremap_validity(scoremap):
    """The official checks: a 2-D float array without NaN, in [0, 1] (float32 allowed)."""
    scoremap = _as_map(scoremap)
    if scoremap.dtype not in (np.float32, np.float64):
        raise TypeError(f"Scoremap must be of float32 or float64 type; it is of {scoremap.dtype} type.")
    if scoremap.ndim != 2:
        raise ValueError(f"Scoremap must be a 2D array; it is {scoremap.ndim}D.")
    if np.isnan(scoremap).any():
        raise ValueError("Scoremap must not contain nans.")
    if (scoremap > 1).any() or (scoremap < 0).any():
        raise ValueError(
            f"Scoremap must be in range [0, 1]. scoremap.min()={scoremap.min()}, scoremap.max()={scoremap.max()}."
        )


def check_box_convention(boxes, convention):
    """RuntimeError unless ``boxes`` ([4] or [N, 4]) are non-negative boxes of the convention."""
    boxes = np.asarray(boxes)
    if (boxes < 0).any():
        raise RuntimeError("Box coordinates must be non-negative.")
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise RuntimeError(f"Box array must have dimension (4) or (num_boxes, 4); got {boxes.shape}.")
    if convention == "x0y0x1y1":
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    elif convention == "xywh":
        widths, heights = boxes[:, 2], boxes[:, 3]
    else:
        raise ValueError(f"Unknown convention {convention}.")
    if (widths < 0).any() or (heights < 0).any():
        raise RuntimeError(f"Boxes do not follow the {convention} convention.")


def calculate_multiple_iou(box_a, box_b):
    """IoU of every box of ``box_a`` [A, 4] with every box of ``box_b`` [B, 4] (x0y0x1y1,
    corners inclusive: +1 per side); a non-positive union gives 0. Returns [A, B] float."""
    check_box_convention(box_a, "x0y0x1y1")
    check_box_convention(box_b, "x0y0x1y1")
    a = np.asarray(box_a).reshape(-1, 4)[:, None, :]
    b = np.asarray(box_b).reshape(-1, 4)[None, :, :]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    degenerate = union <= 0
    ious = inter / np.where(degenerate, 1, union)
    ious[degenerate] = 0
    return ious


def resize_bbox(box, image_size, resize_size):
    """A box from ``image_size`` (w, h) to ``resize_size`` (w, h), truncated as the
    official evaluator (``int(x * new_w / w)``)."""
    check_box_convention(np.array(box), "x0y0x1y1")
    x0, y0, x1, y1 = map(float, box)
    w, h = map(float, image_size)
    new_w, new_h = map(float, resize_size)
    return int(x0 * new_w / w), int(y0 * new_h / h), int(x1 * new_w / w), int(y1 * new_h / h)


def compute_bboxes_from_scoremaps(scoremap, scoremap_threshold_list, multi_contour_eval=False):
    """Per threshold, the box of the largest contour (or of every contour) of a map in
    [0, 1]: (list of [k, 4] int64 arrays, list of k)."""
    check_scoremap_validity(scoremap)
    thresholds = [float(t) for t in scoremap_threshold_list]
    boxes, counts = _native.compute_bboxes_from_scoremaps(_as_map(scoremap), thresholds, bool(multi_contour_eval))
    return boxes, counts


def normalize_scoremap(cam):
    """``inference.normalize_scoremap``: min-max to [0, 1] in place; a map holding NaN or a
    constant map becomes zeros."""
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    if cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def prepare_scoremap(cam, size=None):
    """A raw CAM as the official ``inference.py`` prepares it for ``accumulate``: bicubic
    resize to ``size`` x ``size`` (default the evaluation size, 224) as
    ``cv2.resize(cam, (size, size), interpolation=cv2.INTER_CUBIC)`` on float64, then
    ``normalize_scoremap``. Returns a float64 map in [0, 1]."""
    return _native.prepare_scoremap(_as_map(cam, "cam"), int(size or _RESIZE_LENGTH))


def get_mask(mask_root, mask_paths, ignore_path):
    """The 224 x 224 uint8 evaluation mask: 1 foreground, 255 ignored, 0 background."""
    return _native.get_mask(os.fspath(mask_root), list(mask_paths), ignore_path or "", _RESIZE_LENGTH)


class LocalizationEvaluator:
    """Accumulates maps one at a time (``accumulate``), then ``compute()``."""

    def __init__(self, metadata, dataset_name, split, cam_threshold_list, iou_threshold_list, mask_root,
                 multi_contour_eval):
        self.metadata = metadata
        self.cam_threshold_list = cam_threshold_list
        self.iou_threshold_list = iou_threshold_list
        self.dataset_name = dataset_name
        self.split = split
        self.mask_root = mask_root
        self.multi_contour_eval = multi_contour_eval

    def accumulate(self, scoremap, image_id):
        raise NotImplementedError

    def compute(self):
        raise NotImplementedError


class BoxEvaluator(LocalizationEvaluator):
    """MaxBoxAcc (``multi_contour_eval=False``) or MaxBoxAccV2's box accuracy
    (``multi_contour_eval=True``) per IoU threshold, over maps in [0, 1] scored on the
    224 x 224 grid the GT boxes are resized to."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.resize_length = _RESIZE_LENGTH
        # One read of the split, validated line by line.
        split = _native.read_box_split(split_dir(self.metadata))
        self.image_ids = split["image_ids"]
        self.image_sizes = dict(zip(self.image_ids, split["image_sizes"]))
        self.original_bboxes = {
            i: [tuple(int(v) if float(v).is_integer() else v for v in b) for b in boxes]
            for i, boxes in zip(self.image_ids, split["boxes"])
        }
        self.gt_bboxes = self._load_resized_boxes(self.original_bboxes)
        self._acc = _native.BoxAccumulator(
            [float(t) for t in self.cam_threshold_list],
            [int(t) for t in self.iou_threshold_list],
            bool(self.multi_contour_eval),
        )

    def _load_resized_boxes(self, original_bboxes):
        size = (self.resize_length, self.resize_length)
        return {i: [resize_bbox(b, self.image_sizes[i], size) for b in original_bboxes[i]] for i in self.image_ids}

    def _gt(self, image_id):
        try:
            return self.gt_bboxes[image_id]
        except KeyError:
            raise KeyError(
                f"image {image_id!r} is not in the metadata split {split_dir(self.metadata)} "
                f"({len(self.gt_bboxes)} images listed in image_ids.txt)"
            ) from None

    @property
    def cnt(self):
        """Maps accumulated so far."""
        return self._acc.cnt

    @property
    def num_correct(self):
        """``{iou_threshold: correct-map counts per CAM threshold}`` (float64 arrays)."""
        rows = self._acc.num_correct(bool(self.multi_contour_eval))
        return {t: rows[k] for k, t in enumerate(self.iou_threshold_list)}

    def accumulate(self, scoremap, image_id):
        """Scores one map in [0, 1] (float32 or float64, H x W) of image ``image_id``."""
        gt = self._gt(image_id)
        self._acc.accumulate(_as_map(scoremap), gt, str(image_id))

    def accumulate_batch(self, scoremaps, image_ids, normalize=False):
        """Scores many maps at once on all cores: ``scoremaps`` an [N, H, W] array or a
        list of [H, W] arrays. ``normalize``: the maps are raw CAMs, prepared as the
        official ``inference.py`` does (bicubic resize to 224 x 224, then
        ``normalize_scoremap``); otherwise each must already lie in [0, 1]. A bad map
        fails the batch before anything of it is counted."""
        image_ids = [str(i) for i in image_ids]
        gts = [self._gt(i) for i in image_ids]
        if isinstance(scoremaps, np.ndarray):
            maps = _as_map(scoremaps, "scoremaps")
        else:
            maps = [_as_map(m, f"Scoremap of image {i}") for m, i in zip(scoremaps, image_ids)]
        self._acc.accumulate_batch(maps, gts, image_ids, self.resize_length if normalize else None)

    def accumulate_files(self, paths, image_ids, normalize=False):
        """``accumulate_batch`` for maps saved as ``.npy`` files (float32 or float64),
        read by the engine on all cores."""
        image_ids = [str(i) for i in image_ids]
        gts = [self._gt(i) for i in image_ids]
        paths = [os.fspath(p) for p in paths]
        self._acc.accumulate_files(paths, gts, image_ids, self.resize_length if normalize else None)

    def compute(self):
        """Per IoU threshold, the best accuracy (percent) over the CAM thresholds."""
        return [(row * 100.0 / float(self.cnt)).max() for row in self.num_correct.values()]

    def metrics(self):
        """wsol's numbers over the maps so far: ``maxboxacc`` (largest contour, IoU 50),
        ``maxboxacc_v2`` (all contours when ``multi_contour_eval``, mean over the IoU
        thresholds), ``maxboxacc_v1_by_iou``, ``maxboxacc_v2_by_iou``, best thresholds,
        ``gt_known_loc``; the keys of wsol's metrics.json."""
        m = json.loads(self._acc.metrics_json())
        return {k: v for k, v in m.items() if v is not None}


class MaskEvaluator(LocalizationEvaluator):
    """PxAP (OpenImages30k): pixel precision-recall over the CAM thresholds."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.dataset_name != "OpenImages":
            raise ValueError("Mask evaluation must be performed on OpenImages.")
        self.mask_paths, self.ignore_paths = get_mask_paths(self.metadata)
        self.num_bins = len(self.cam_threshold_list) + 2
        self.threshold_list_right_edge = np.append(self.cam_threshold_list, [1.0, 2.0, 3.0])
        self._acc = _native.MaskAccumulator([float(t) for t in self.cam_threshold_list])

    @property
    def gt_true_score_hist(self):
        return self._acc.gt_true_score_hist

    @property
    def gt_false_score_hist(self):
        return self._acc.gt_false_score_hist

    def accumulate(self, scoremap, image_id):
        """Adds the pixels of one 224 x 224 map in [0, 1] to the histograms."""
        if image_id not in self.mask_paths:
            raise KeyError(f"image {image_id!r} is not in the metadata split {split_dir(self.metadata)}")
        gt_mask = get_mask(self.mask_root, self.mask_paths[image_id], self.ignore_paths[image_id])
        self._acc.accumulate(_as_map(scoremap), gt_mask, str(image_id))

    def compute(self):
        """PxAP in percent."""
        auc = self._acc.compute()
        print(f"Mask AUC on split {self.split}: {auc}")
        return auc


def evaluate_wsol(scoremap_root, metadata_root, mask_root, dataset_name, split, multi_contour_eval,
                  multi_iou_eval, iou_threshold_list, cam_curve_interval=.001):
    """The official entry point: maps ``<scoremap_root>/<image_id>.npy`` (in [0, 1]) scored
    against ``<metadata_root>/<dataset_name>/<split>``; MaxBoxAcc at IoU 50 (or the mean
    over IoUs with ``multi_iou_eval``) for CUB / ILSVRC, PxAP for OpenImages."""
    print("Loading and evaluating cams.")
    metadata = configure_metadata(os.path.join(metadata_root, dataset_name, split))
    image_ids = get_image_ids(metadata)
    cam_threshold_list = list(np.arange(0, 1, cam_curve_interval))
    evaluator = {"OpenImages": MaskEvaluator, "CUB": BoxEvaluator, "ILSVRC": BoxEvaluator}[dataset_name](
        metadata=metadata,
        dataset_name=dataset_name,
        split=split,
        cam_threshold_list=cam_threshold_list,
        mask_root=os.path.join(mask_root, "OpenImages"),
        multi_contour_eval=multi_contour_eval,
        iou_threshold_list=iou_threshold_list,
    )
    path = lambda i: os.path.join(scoremap_root, i + ".npy")  # noqa: E731
    if isinstance(evaluator, BoxEvaluator):
        evaluator.accumulate_files([path(i) for i in image_ids], image_ids)
    else:
        for i in image_ids:
            evaluator.accumulate(np.load(path(i)), i)
    performance = evaluator.compute()
    if multi_iou_eval or dataset_name == "OpenImages":
        performance = np.average(performance)
    else:
        performance = performance[iou_threshold_list.index(50)]
    print(f"localization: {performance}")
    return performance
