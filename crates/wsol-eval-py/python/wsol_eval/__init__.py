"""wsol-eval: the WSOL evaluation protocol of Choe et al. 2020 (clovaai/wsolevaluation) on
wsol's Rust engine. ``wsol_eval.evaluation`` and ``wsol_eval.data_loaders`` mirror the
official modules of the same names; the common names are re-exported here.

    import wsol_eval
    ev = wsol_eval.BoxEvaluator(metadata=wsol_eval.configure_metadata("metadata/CUB/test"),
                                dataset_name="CUB", split="test",
                                cam_threshold_list=list(np.arange(0, 1, 0.01)),
                                iou_threshold_list=[30, 50, 70], mask_root=None,
                                multi_contour_eval=True)
    ev.accumulate(scoremap, image_id)        # or ev.accumulate_batch(maps, ids)
    ev.compute()                             # [MaxBoxAcc at IoU 30, 50, 70]
"""
from ._native import __version__
from .data_loaders import (
    configure_metadata,
    get_bounding_boxes,
    get_class_labels,
    get_image_ids,
    get_image_sizes,
    get_mask_paths,
)
from .evaluation import (
    BoxEvaluator,
    LocalizationEvaluator,
    MaskEvaluator,
    calculate_multiple_iou,
    check_scoremap_validity,
    compute_bboxes_from_scoremaps,
    evaluate_wsol,
    get_mask,
    normalize_scoremap,
    prepare_scoremap,
    resize_bbox,
)

__all__ = [
    "__version__",
    "BoxEvaluator",
    "LocalizationEvaluator",
    "MaskEvaluator",
    "calculate_multiple_iou",
    "check_scoremap_validity",
    "compute_bboxes_from_scoremaps",
    "configure_metadata",
    "evaluate_wsol",
    "get_bounding_boxes",
    "get_class_labels",
    "get_image_ids",
    "get_image_sizes",
    "get_mask",
    "get_mask_paths",
    "normalize_scoremap",
    "prepare_scoremap",
    "resize_bbox",
]
