#!/usr/bin/env python3
"""Writes tests/fixtures/pth/: the same small state dict (torchvision-style names of the
`tiny` backbone at width 2, plus a 10-class ImageNet-style `fc` and BN
`num_batches_tracked` buffers) as PyTorch zip checkpoints and as .safetensors, so the
`.pth` reader can be checked without PyTorch installed (numpy only).

The .pth files follow torch.save's zip layout: `<name>/data.pkl` (pickle protocol 2; each
tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})`
with the storage as a persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`),
`<name>/data/<key>` raw little-endian bytes and `<name>/version`. The torch names are
written as pickle GLOBALs through stand-in modules; nothing from torch runs.

    python3 scripts/make_pth_fixture.py tests/fixtures/pth
"""
import collections
import json
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

SHAPES = {
    "features.0.weight": (2, 3, 3, 3), "features.1.weight": (2,), "features.1.bias": (2,),
    "features.1.running_mean": (2,), "features.1.running_var": (2,),
    "features.3.weight": (4, 2, 3, 3), "features.4.weight": (4,), "features.4.bias": (4,),
    "features.4.running_mean": (4,), "features.4.running_var": (4,),
    "features.7.weight": (8, 4, 3, 3), "features.8.weight": (8,), "features.8.bias": (8,),
    "features.8.running_mean": (8,), "features.8.running_var": (8,),
    "features.10.weight": (8, 8, 3, 3), "features.11.weight": (8,), "features.11.bias": (8,),
    "features.11.running_mean": (8,), "features.11.running_var": (8,),
    "fc.weight": (10, 8), "fc.bias": (10,),
}


def stand_ins():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storages = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {})
        cls.__module__ = "torch"
        cls.__qualname__ = name
        setattr(torch, name, cls)
        storages[name] = cls

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("stand-in")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    return storages, _rebuild_tensor_v2


STORAGES, REBUILD = stand_ins()


class Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class Tensor:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        a = self.storage.array
        stride = tuple(s // a.itemsize for s in a.strides)
        return (REBUILD, (self.storage, 0, tuple(a.shape), stride, False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            kind = "FloatStorage" if obj.array.dtype == np.float32 else "LongStorage"
            return ("storage", STORAGES[kind], obj.key, "cpu", obj.array.size)
        return None


def write_pth(path, obj, storages):
    import io
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    stem = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"{stem}/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{stem}/version", "3\n")


def write_safetensors(path, arrays):
    header, blobs, off = {}, [], 0
    for name, a in arrays.items():
        b = a.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        n = int(np.prod(shape))
        values = np.sin(np.arange(n, dtype=np.float64) * 0.7 + i) * 0.5
        if name.endswith("running_var"):
            values = np.abs(values) + 0.5
        arrays[name] = values.astype(np.float32).reshape(shape)
    storages = {name: Storage(str(k), a) for k, (name, a) in enumerate(arrays.items())}
    tracked = {name.rsplit(".", 1)[0] + ".num_batches_tracked": Storage(f"n{k}", np.array(7, dtype=np.int64))
               for k, name in enumerate(n for n in arrays if n.endswith("running_mean"))}
    plain = collections.OrderedDict((n, Tensor(s)) for n, s in {**storages, **tracked}.items())
    write_pth(out / "tiny_w2.pth", plain, list(storages.values()) + list(tracked.values()))
    wrapped = {"epoch": 90, "state_dict": collections.OrderedDict(("module." + n, t) for n, t in plain.items())}
    write_pth(out / "tiny_w2_wrapped.pth", wrapped, list(storages.values()) + list(tracked.values()))
    write_safetensors(out / "tiny_w2.safetensors", arrays)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/pth")
