#!/usr/bin/env python3
"""wsol_eval against numbers the official wsolevaluation code produced
(tests/fixtures/eval_parity/official, from scripts/make_official_parity_fixture.py), and
its answers to bad input. numpy only.

    python -m unittest discover -s crates/wsol-eval-py/tests -p 'test_*.py'
"""
import json
import os
import shutil
import tempfile
import unittest

import numpy as np

import wsol_eval
from wsol_eval import evaluation

HERE = os.path.dirname(os.path.abspath(__file__))
OFFICIAL = os.path.join(HERE, "..", "..", "..", "tests", "fixtures", "eval_parity", "official")
with open(os.path.join(OFFICIAL, "expected.json")) as f:
    EXPECTED = json.load(f)
SIZE = EXPECTED["image_size"]
IOUS = EXPECTED["iou_thresholds"]


class EvalSize:
    """The fixture was scored on a SIZE grid: the official module constant, patched as
    the fixture's script patched theirs."""

    def __enter__(self):
        self.saved = evaluation._RESIZE_LENGTH
        evaluation._RESIZE_LENGTH = SIZE

    def __exit__(self, *exc):
        evaluation._RESIZE_LENGTH = self.saved


def box_evaluator(interval, multi, split_dir=os.path.join(OFFICIAL, "boxes", "metadata", "test")):
    return wsol_eval.BoxEvaluator(
        metadata=wsol_eval.configure_metadata(split_dir),
        dataset_name="CUB",
        split="test",
        cam_threshold_list=list(np.arange(0, 1, float(interval))),
        iou_threshold_list=IOUS,
        mask_root=None,
        multi_contour_eval=multi,
    )


def raw_cam(kind, image_id):
    return np.load(os.path.join(OFFICIAL, kind, "cams", image_id + ".npy"))


class BoxParity(unittest.TestCase):
    def check(self, ev, interval, mode):
        run = EXPECTED["boxes"]["runs"][interval][mode]
        self.assertEqual(ev.cnt, EXPECTED["boxes"]["num_images"])
        for iou in IOUS:
            self.assertEqual(ev.num_correct[iou].tolist(), run["num_correct"][str(iou)], f"{interval} {mode} {iou}")
        self.assertEqual(ev.compute(), [run["maxboxacc_by_iou"][str(i)] for i in IOUS])

    def test_one_map_at_a_time_as_the_official_loop(self):
        with EvalSize():
            for interval in EXPECTED["boxes"]["runs"]:
                for mode, multi in (("largest", False), ("all", True)):
                    ev = box_evaluator(interval, multi)
                    for image_id in ev.image_ids:
                        ev.accumulate(wsol_eval.prepare_scoremap(raw_cam("boxes", image_id)), image_id)
                    self.check(ev, interval, mode)

    def test_batch_of_raw_cams_prepared_by_the_engine(self):
        with EvalSize():
            for interval in EXPECTED["boxes"]["runs"]:
                for mode, multi in (("largest", False), ("all", True)):
                    ev = box_evaluator(interval, multi)
                    ids = ev.image_ids
                    # Two batches, maps of several shapes, float32 as saved.
                    ev.accumulate_batch([raw_cam("boxes", i) for i in ids[:10]], ids[:10], normalize=True)
                    ev.accumulate_batch([raw_cam("boxes", i) for i in ids[10:]], ids[10:], normalize=True)
                    self.check(ev, interval, mode)

    def test_metrics_name_the_same_numbers(self):
        with EvalSize():
            ev = box_evaluator("0.01", True)
            ev.accumulate_batch([raw_cam("boxes", i) for i in ev.image_ids], ev.image_ids, normalize=True)
            m = ev.metrics()
            run = EXPECTED["boxes"]["runs"]["0.01"]
            self.assertEqual(m["maxboxacc_v2"], sum(run["all"]["maxboxacc_by_iou"][str(i)] for i in IOUS) / len(IOUS))
            self.assertEqual(m["maxboxacc"], run["largest"]["maxboxacc_by_iou"]["50"])
            self.assertEqual(m["num_images"], ev.cnt)

    def test_float32_maps_score_as_their_float64_values(self):
        with EvalSize():
            maps = [wsol_eval.prepare_scoremap(raw_cam("boxes", i)).astype(np.float32) for i in box_evaluator("0.01", True).image_ids]
            a, b, c = (box_evaluator("0.001", True) for _ in range(3))
            a.accumulate_batch(np.stack(maps), a.image_ids)
            b.accumulate_batch([m.astype(np.float64) for m in maps], b.image_ids)
            for m, i in zip(maps, c.image_ids):
                c.accumulate(m, i)
            for iou in IOUS:
                self.assertEqual(a.num_correct[iou].tolist(), b.num_correct[iou].tolist())
                self.assertEqual(c.num_correct[iou].tolist(), b.num_correct[iou].tolist())

    def test_strided_maps_equal_contiguous_ones(self):
        with EvalSize():
            ev, ref = box_evaluator("0.01", True), box_evaluator("0.01", True)
            for i in ev.image_ids:
                m = wsol_eval.prepare_scoremap(raw_cam("boxes", i))
                ev.accumulate(np.asfortranarray(m.T).T, i)  # same values, strided
                ref.accumulate(m, i)
            self.assertEqual(ev.compute(), ref.compute())


class EvaluateWsol(unittest.TestCase):
    def test_the_official_entry_point_on_a_folder_of_maps(self):
        tmp = tempfile.mkdtemp()
        try:
            shutil.copytree(os.path.join(OFFICIAL, "boxes", "metadata", "test"), os.path.join(tmp, "meta", "CUB", "test"))
            with EvalSize():
                ids = box_evaluator("0.01", False).image_ids
                for i in ids:
                    path = os.path.join(tmp, "maps", i + ".npy")
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    np.save(path, wsol_eval.prepare_scoremap(raw_cam("boxes", i)))
                got = wsol_eval.evaluate_wsol(
                    scoremap_root=os.path.join(tmp, "maps"), metadata_root=os.path.join(tmp, "meta"), mask_root=tmp,
                    dataset_name="CUB", split="test", multi_contour_eval=True, multi_iou_eval=True,
                    iou_threshold_list=IOUS, cam_curve_interval=0.01)
            by_iou = EXPECTED["boxes"]["runs"]["0.01"]["all"]["maxboxacc_by_iou"]
            self.assertEqual(got, np.average([by_iou[str(i)] for i in IOUS]))
        finally:
            shutil.rmtree(tmp)


class MaskParity(unittest.TestCase):
    def test_pxap_as_the_official_mask_evaluator(self):
        with EvalSize():
            for interval, pxap in EXPECTED["masks"]["pxap"].items():
                ev = wsol_eval.MaskEvaluator(
                    metadata=wsol_eval.configure_metadata(os.path.join(OFFICIAL, "masks", "metadata", "test")),
                    dataset_name="OpenImages",
                    split="test",
                    cam_threshold_list=list(np.arange(0, 1, float(interval))),
                    iou_threshold_list=IOUS,
                    mask_root=os.path.join(OFFICIAL, "masks", "masks"),
                    multi_contour_eval=False,
                )
                for image_id in ev.mask_paths:
                    ev.accumulate(wsol_eval.prepare_scoremap(raw_cam("masks", image_id)), image_id)
                self.assertEqual(ev.compute(), pxap)
                self.assertEqual(len(ev.gt_true_score_hist), ev.num_bins)


class BadInput(unittest.TestCase):
    def setUp(self):
        self.ev = box_evaluator("0.01", False)
        self.id = self.ev.image_ids[0]
        self.good = np.linspace(0, 1, 224 * 224).reshape(224, 224)

    def assert_message(self, exc, *parts):
        for p in parts:
            self.assertIn(p, str(exc.exception))

    def test_wrong_dtype(self):
        with self.assertRaises(TypeError) as e:
            self.ev.accumulate(self.good.astype(np.int32), self.id)
        self.assert_message(e, self.id, "float32 or float64", "int32")

    def test_not_an_array(self):
        with self.assertRaises(TypeError) as e:
            self.ev.accumulate(self.good.tolist(), self.id)
        self.assert_message(e, "numpy array")

    def test_wrong_rank(self):
        with self.assertRaises(ValueError) as e:
            self.ev.accumulate(self.good[None], self.id)
        self.assert_message(e, self.id, "2-D", "(1, 224, 224)")

    def test_nan(self):
        m = self.good.copy()
        m[3, 4] = np.nan
        with self.assertRaises(ValueError) as e:
            self.ev.accumulate(m, self.id)
        self.assert_message(e, self.id, "NaN")
        self.assertEqual(self.ev.cnt, 0)

    def test_out_of_range(self):
        with self.assertRaises(ValueError) as e:
            self.ev.accumulate(self.good * 2, self.id)
        self.assert_message(e, self.id, "[0, 1]", "max 2")

    def test_unknown_image(self):
        with self.assertRaises(KeyError) as e:
            self.ev.accumulate(self.good, "test/nope.jpg")
        self.assert_message(e, "test/nope.jpg", "not in the metadata split")

    def test_a_bad_map_fails_the_whole_batch(self):
        ids = self.ev.image_ids[:4]
        maps = np.stack([self.good] * 4)
        maps[2, 0, 0] = np.nan
        with self.assertRaises(ValueError) as e:
            self.ev.accumulate_batch(maps, ids)
        self.assert_message(e, ids[2], "NaN")
        self.assertEqual(self.ev.cnt, 0)
        self.ev.accumulate_batch(maps[:2], ids[:2])
        self.assertEqual(self.ev.cnt, 2)

    def test_batch_length_mismatch(self):
        with self.assertRaises(ValueError) as e:
            self.ev.accumulate_batch(np.stack([self.good] * 3), self.ev.image_ids[:2])
        self.assert_message(e, "3 maps", "2 image ids")

    def test_bad_thresholds(self):
        with self.assertRaises(ValueError) as e:
            wsol_eval.BoxEvaluator(metadata=self.ev.metadata, dataset_name="CUB", split="test",
                                   cam_threshold_list=[0.5, 1.5], iou_threshold_list=[50], mask_root=None,
                                   multi_contour_eval=False)
        self.assert_message(e, "1.5", "[0, 1)")

    def test_malformed_metadata_line(self):
        tmp = tempfile.mkdtemp()
        try:
            split = os.path.join(tmp, "test")
            shutil.copytree(os.path.join(OFFICIAL, "boxes", "metadata", "test"), split)
            path = os.path.join(split, "localization.txt")
            with open(path) as f:
                lines = f.readlines()
            lines[2] = lines[2].rstrip("\n").rsplit(",", 1)[0] + ",x\n"
            with open(path, "w") as f:
                f.writelines(lines)
            with self.assertRaises(ValueError) as e:
                box_evaluator("0.01", False, split_dir=split)
            self.assert_message(e, "localization.txt:3")
        finally:
            shutil.rmtree(tmp)

    def test_missing_metadata(self):
        with self.assertRaises(ValueError) as e:
            box_evaluator("0.01", False, split_dir="/nonexistent/CUB/test")
        self.assert_message(e, "/nonexistent/CUB/test/image_ids.txt")


class BoxesOnTheirOwn(unittest.TestCase):
    def test_all_contours_and_the_largest(self):
        # Two blobs: the larger on the left.
        m = np.zeros((20, 30))
        m[2:12, 1:11] = 1.0
        m[15:18, 20:24] = 0.6
        boxes, counts = wsol_eval.compute_bboxes_from_scoremaps(m, [0.0, 0.5, 0.7])
        self.assertEqual([b.tolist() for b in boxes], [[[1, 2, 11, 12]]] * 2 + [[[1, 2, 11, 12]]])
        self.assertEqual(counts, [1, 1, 1])
        boxes, counts = wsol_eval.compute_bboxes_from_scoremaps(m, [0.5, 0.7], multi_contour_eval=True)
        self.assertEqual(counts, [2, 1])
        self.assertEqual(sorted(map(tuple, boxes[0].tolist())), [(1, 2, 11, 12), (20, 15, 24, 18)])
        self.assertEqual(boxes[0].dtype, np.int64)


if __name__ == "__main__":
    unittest.main()
