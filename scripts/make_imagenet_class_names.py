#!/usr/bin/env python3
"""Writes configs/imagenet_class_names.txt: the 1000 ILSVRC 2012 class names, line k naming
class k in the usual order (synset ids sorted, as torchvision's ImageFolder and
wsolevaluation's metadata number them), each the first WordNet lemma of its synset
("tench", "great white shark", ...; two names occur twice: crane, maillot).

The synset list and lemmas come from the `timm` wheel on PyPI (files
timm/data/_info/imagenet_synsets.txt and imagenet_synset_to_lemma.txt); only the wheel
is fetched, nothing is installed. On a connected machine (or with the wheel in pip's cache):

    python3 scripts/make_imagenet_class_names.py [OUT]   # default configs/imagenet_class_names.txt
"""
import os
import subprocess
import sys
import tempfile
import zipfile

TIMM = "timm==1.0.31"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "configs", "imagenet_class_names.txt")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, TIMM], check=True)
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z:
            synsets = z.read("timm/data/_info/imagenet_synsets.txt").decode().split()
            lemmas = dict(line.split("\t", 1) for line in z.read("timm/data/_info/imagenet_synset_to_lemma.txt").decode().splitlines() if line)
    if len(synsets) != 1000 or synsets != sorted(synsets):
        sys.exit(f"{TIMM}: expected 1000 sorted synset ids, got {len(synsets)}")
    names = [lemmas[s].split(",")[0].strip() for s in synsets]
    with open(out, "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"wrote {len(names)} names to {out}")


if __name__ == "__main__":
    main()
