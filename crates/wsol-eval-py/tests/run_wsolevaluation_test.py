#!/usr/bin/env python3
"""wsolevaluation's own unit tests (`evaluation_test.py`) run against wsol_eval: the
modules it imports, `evaluation` and `data_loaders`, are wsol_eval's. Nothing else of
wsolevaluation is on the path (no torch, OpenCV or Pillow are needed).

    python tests/run_wsolevaluation_test.py [FIXTURE_DIR]

FIXTURE_DIR (default tests/fixtures/wsolevaluation_test of the repository) holds the test
file and the data it reads, from scripts/make_wsolevaluation_test_fixture.py; a full
wsolevaluation checkout works too. Exits non-zero unless every test passes.
"""
import os
import sys
import unittest

import numpy as np

import wsol_eval.data_loaders
import wsol_eval.evaluation

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURE = os.path.join(HERE, "..", "..", "..", "tests", "fixtures", "wsolevaluation_test")


def main(fixture):
    fixture = os.path.abspath(fixture)
    # numpy 1.24 removed the `np.float` / `np.int` aliases the test still uses; they
    # always meant the builtins.
    for name, builtin in (("float", float), ("int", int)):
        if name not in np.__dict__:
            setattr(np, name, builtin)
    sys.modules["evaluation"] = wsol_eval.evaluation
    sys.modules["data_loaders"] = wsol_eval.data_loaders
    # The test opens metadata/... and test_data/... relative to its folder.
    os.chdir(fixture)
    sys.path.insert(0, fixture)
    import evaluation_test

    assert evaluation_test.BoxEvaluator is wsol_eval.evaluation.BoxEvaluator, "the shim did not take"
    assert evaluation_test.configure_metadata is wsol_eval.data_loaders.configure_metadata
    result = unittest.main(module=evaluation_test, argv=["evaluation_test"], exit=False, verbosity=2).result
    if result.testsRun == 0 or not result.wasSuccessful():
        return 1
    print(f"wsolevaluation's evaluation_test.py: {result.testsRun} tests passed on wsol_eval")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FIXTURE))
