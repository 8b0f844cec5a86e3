#!/usr/bin/env python3
"""Builds tests/fixtures/wsolevaluation_test: what wsolevaluation's own unit tests
(`evaluation_test.py`) need to run against wsol's Python package, offline.

Usage:
    python3 scripts/make_wsolevaluation_test_fixture.py WSOLEVAL_DIR [OUT_DIR]

WSOLEVAL_DIR is a checkout of https://github.com/clovaai/wsolevaluation at
96f4b88679af41f005824661f47e6fe3628af2aa. Copied from it, unchanged, under its MIT
license (LICENSE and NOTICE copied too): `evaluation_test.py` (the test itself, run by
crates/wsol-eval-py/tests/run_wsolevaluation_test.py with our modules in place of
theirs), the five OpenImages test masks of `test_data/test_masks`, and the metadata
splits the test reads, cut to their first KEEP images (the test checks the first three
images' boxes and sizes and that every listed box lies inside its image; the full
splits are 13 MB) plus, for OpenImages val, the five images the mask tests score.
Lines are copied verbatim, in their order.
"""
import os
import shutil
import sys

KEEP = 40
SPLITS = [("CUB", "val"), ("CUB", "test"), ("ILSVRC", "val"), ("ILSVRC", "test"), ("OpenImages", "val")]
# Mask tests score these images (evaluation_test.MaskEvaluatorTest).
OPENIMAGES_IDS = [
    "val/0bt_c3/1cd9ac0169ec7df0.jpg",
    "val/0bt_c3/3a29f0b33894d4a6.jpg",
    "val/0bt_c3/3b3b9931325d65c9.jpg",
    "val/0by6g/490365f63135f3e0.jpg",
    "val/0by6g/b4d953e7105da1d8.jpg",
]
FILES = ["image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"]


def main(src, out):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for name in ["evaluation_test.py", "LICENSE", "NOTICE"]:
        shutil.copy(os.path.join(src, name), os.path.join(out, name))
    shutil.copytree(os.path.join(src, "test_data", "test_masks"), os.path.join(out, "test_data", "test_masks"))
    for dataset, split in SPLITS:
        sdir = os.path.join(src, "metadata", dataset, split)
        ddir = os.path.join(out, "metadata", dataset, split)
        os.makedirs(ddir)
        with open(os.path.join(sdir, "image_ids.txt")) as f:
            ids = [line.rstrip("\n") for line in f]
        keep = set(ids[:KEEP]) | (set(OPENIMAGES_IDS) if dataset == "OpenImages" else set())
        for name in FILES:
            with open(os.path.join(sdir, name)) as f:
                lines = f.readlines()
            # Every metadata line starts with its image id, then a comma (or nothing).
            kept = [line for line in lines if line.rstrip("\n").split(",")[0] in keep]
            with open(os.path.join(ddir, name), "w") as f:
                f.writelines(kept)
    print(f"wrote {out}")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "tests", "fixtures", "wsolevaluation_test")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else default_out)
