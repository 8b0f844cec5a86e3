#!/usr/bin/env bash
# The Python package's checks, as a new user meets it: build the wsol-eval wheel with
# maturin, install it into a fresh virtualenv that has numpy and nothing else, run its
# tests (parity with the official numbers, bad input) and wsolevaluation's own
# evaluation_test.py with our modules swapped in. Needs python3 with venv and the PyPI
# registry (maturin, numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/python
rm -rf "$out"
python3 -m venv "$out/build-venv"
"$out/build-venv/bin/pip" install -q "maturin>=1.5,<2"
"$out/build-venv/bin/maturin" build --release -m crates/wsol-eval-py/Cargo.toml -o "$out/wheels"
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install -q numpy "$out"/wheels/wsol_eval-*.whl
py="$PWD/$out/venv/bin/python"
cd crates/wsol-eval-py
"$py" -m unittest discover -s tests -p 'test_*.py'
"$py" tests/run_wsolevaluation_test.py > "../../$out/wsolevaluation_test.log" 2>&1 ||
    { cat "../../$out/wsolevaluation_test.log"; exit 1; }
tail -n 1 "../../$out/wsolevaluation_test.log"
