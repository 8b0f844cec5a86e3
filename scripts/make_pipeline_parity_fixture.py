#!/usr/bin/env python3
"""Writes tests/fixtures/pipeline_parity/: small JPEG photos and what wsolevaluation's
input pipeline (data_loaders.py: PIL + torchvision) makes of them, for
tests/cli/pipeline_parity.rs to hold wsol's decoder and transforms against.

    pip install torch==2.5.1 torchvision==0.20.1 pillow numpy
    python3 scripts/make_pipeline_parity_fixture.py [PHOTOS_DIR] [OUT_DIR]

PHOTOS_DIR (default /tmp/photos) holds the source photos, checked by sha256:
  china.jpg, flower.jpg  scikit-learn 1.9.1's sample images (sklearn/datasets/images/ in
                         the wheel: `pip download --no-deps scikit-learn==1.9.1`, unzip),
                         BSD-3-Clause data of scikit-learn
  rocket.jpg             scikit-image's sample image (skimage/data/ in its wheel), public
                         domain (NASA)
The fixture JPEGs are smaller derivatives, made here with PIL and re-encoded at a fixed
quality and chroma subsampling (see PHOTOS below): china downscaled whole, 4:2:0 (what most
photos use); flower a crop, 4:4:4; rocket a portrait crop, 4:2:2, narrower than the train
resize (so its width is upscaled, its height downscaled).

Per photo it writes
  <name>.jpg                    the fixture photo
  <name>_pil.png                Image.open(path).convert('RGB'): PIL's decoded pixels
  <name>_eval<S>_resized.png    Resize((S, S)) of those, the 8-bit resize stage
  <name>_eval<S>.npy            eval transform: Resize((S, S)) -> ToTensor -> Normalize (CHW f32)
  <name>_train<R>_resized.png   Resize((R, R)), the train resize stage
  <name>_train_seed<K>.npy      train transform under torch.manual_seed(K): Resize((R, R)) ->
                                RandomCrop(S) -> RandomHorizontalFlip -> ToTensor -> Normalize
and metadata.json: the versions, mean/std, and for each train output the crop offset and
flip that seed drew (read back from torch's generator, and checked by redoing the crop and
flip with the functional transforms). Seeds are the first ones from a per-photo start that
draw no flip and a flip, so each photo has one of each.

Deterministic: a rerun with the same versions rewrites every file byte for byte (JPEG and
PNG bytes depend on Pillow's libjpeg-turbo and zlib, recorded in metadata.json).
"""
import hashlib
import io
import json
import os
import sys

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, features

# wsolevaluation's normalization (ImageNet statistics).
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
EVAL_SIZES = [64, 96]
RESIZE, CROP = 112, 96

# name, source file, its sha256, how the fixture photo is made from it.
PHOTOS = [
    ("china", "china.jpg", "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
     dict(box=None, size=(320, 213), quality=90, subsampling=2)),
    ("flower", "flower.jpg", "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
     dict(box=(190, 90, 430, 330), size=None, quality=85, subsampling=0)),
    ("rocket", "rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
     dict(box=(250, 240, 370, 420), size=None, quality=92, subsampling=1)),
]


def describe(how):
    parts = []
    if how["box"]:
        parts.append(f"crop box (x0, y0, x1, y1) = {how['box']}")
    if how["size"]:
        parts.append(f"resize to {how['size'][0]}x{how['size'][1]} (PIL bicubic)")
    sub = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[how["subsampling"]]
    parts.append(f"saved by PIL as JPEG quality {how['quality']}, {sub}, baseline, no EXIF")
    return "; ".join(parts)


def make_jpeg(src, how):
    img = Image.open(src).convert("RGB")
    if how["box"]:
        img = img.crop(how["box"])
    if how["size"]:
        img = img.resize(how["size"], Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=how["quality"], subsampling=how["subsampling"], optimize=False)
    return buf.getvalue()


def save_png(img, path):
    img.save(path, format="PNG", compress_level=9)


def save_npy(tensor, path):
    np.save(path, np.ascontiguousarray(tensor.numpy().astype(np.float32)))


def main():
    photos_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/photos"
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/pipeline_parity"
    os.makedirs(out, exist_ok=True)
    to_tensor_norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    meta_photos = []
    for k, (name, src, sha, how) in enumerate(PHOTOS):
        src_path = os.path.join(photos_dir, src)
        got = hashlib.sha256(open(src_path, "rb").read()).hexdigest()
        if got != sha:
            sys.exit(f"{src_path}: sha256 {got}, expected {sha} (a different photo)")
        jpeg = make_jpeg(src_path, how)
        jpeg_path = os.path.join(out, f"{name}.jpg")
        with open(jpeg_path, "wb") as f:
            f.write(jpeg)
        # As data_loaders.py opens images.
        img = Image.open(jpeg_path).convert("RGB")
        save_png(img, os.path.join(out, f"{name}_pil.png"))
        transforms = []
        for s in EVAL_SIZES:
            resized = T.Resize((s, s))(img)
            save_png(resized, os.path.join(out, f"{name}_eval{s}_resized.png"))
            full = T.Compose([T.Resize((s, s))] + to_tensor_norm)(img)
            assert torch.equal(full, T.Compose(to_tensor_norm)(resized))
            save_npy(full, os.path.join(out, f"{name}_eval{s}.npy"))
            transforms.append(dict(kind="eval", size=s, resized=f"{name}_eval{s}_resized.png",
                                   output=f"{name}_eval{s}.npy"))
        resized = T.Resize((RESIZE, RESIZE))(img)
        resized_name = f"{name}_train{RESIZE}_resized.png"
        save_png(resized, os.path.join(out, resized_name))
        train = T.Compose([T.Resize((RESIZE, RESIZE)), T.RandomCrop(CROP), T.RandomHorizontalFlip()]
                          + to_tensor_norm)
        wanted, seed = [False, True], 100 * k
        while wanted:
            torch.manual_seed(seed)
            y0 = int(torch.randint(0, RESIZE - CROP + 1, size=(1,)).item())
            x0 = int(torch.randint(0, RESIZE - CROP + 1, size=(1,)).item())
            flip = bool(torch.rand(1) < 0.5)
            if flip in wanted:
                wanted.remove(flip)
                torch.manual_seed(seed)
                full = train(img)
                view = TF.crop(resized, y0, x0, CROP, CROP)
                if flip:
                    view = TF.hflip(view)
                assert torch.equal(full, T.Compose(to_tensor_norm)(view)), (name, seed)
                out_name = f"{name}_train_seed{seed}.npy"
                save_npy(full, os.path.join(out, out_name))
                transforms.append(dict(kind="train", resize=RESIZE, crop=CROP, torch_seed=seed, x0=x0, y0=y0,
                                       flip=flip, resized=resized_name, output=out_name))
            seed += 1
        meta_photos.append(dict(name=name, jpeg=f"{name}.jpg", width=img.width, height=img.height,
                                decoded=f"{name}_pil.png", source=src, source_sha256=sha,
                                made_by=describe(how), transforms=transforms))
    meta = dict(
        generator="scripts/make_pipeline_parity_fixture.py",
        reference="clovaai/wsolevaluation data_loaders.py transforms (PIL + torchvision)",
        licenses={"china.jpg, flower.jpg": "scikit-learn 1.9.1 sample images, BSD-3-Clause",
                  "rocket.jpg": "scikit-image sample image, public domain (NASA)"},
        versions=dict(torch=torch.__version__, torchvision=torchvision.__version__, pillow=PIL.__version__,
                      numpy=np.__version__, libjpeg_turbo=features.version("libjpeg_turbo"),
                      zlib=features.version("zlib")),
        mean=MEAN, std=STD, photos=meta_photos,
    )
    with open(os.path.join(out, "metadata.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
