"""The metadata readers of wsolevaluation's ``data_loaders.py`` (no torch needed).

A metadata split folder holds ``image_ids.txt``, ``class_labels.txt``,
``image_sizes.txt`` and ``localization.txt`` (boxes, or masks for OpenImages30k).
Malformed lines raise ``ValueError`` naming the file and the line.
"""
import os

from . import _native

__all__ = [
    "configure_metadata",
    "get_image_ids",
    "get_class_labels",
    "get_bounding_boxes",
    "get_image_sizes",
    "get_mask_paths",
]


class Metadata(dict):
    """File paths of a split; read as attributes or items, as wsolevaluation's Munch."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def configure_metadata(metadata_root):
    """The paths of the metadata files of the split folder ``metadata_root``."""
    metadata = Metadata()
    for key in ("image_ids", "image_ids_proxy", "class_labels", "image_sizes", "localization"):
        metadata[key] = os.path.join(metadata_root, key + ".txt")
    return metadata


def split_dir(metadata):
    """The split folder of a metadata object (ours or wsolevaluation's Munch)."""
    return os.path.dirname(metadata["image_ids"])


def _lines(path):
    """(line number, stripped line) of each non-blank line."""
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            line = line.strip()
            if line:
                yield no, line


def _fields(path, no, line, n, expected):
    parts = line.rsplit(",", n - 1)
    if len(parts) != n:
        raise ValueError(f"{path}:{no}: expected `{expected}`, got `{line}`")
    return parts


def _int(path, no, field, text):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}:{no}: {field}: expected an integer, got `{text}`") from None


def get_image_ids(metadata, proxy=False):
    """Image ids in file order (``image_ids_proxy.txt`` with ``proxy``)."""
    path = metadata["image_ids" + ("_proxy" if proxy else "")]
    return [line for _, line in _lines(path)]


def get_class_labels(metadata):
    """``{image_id: class label}``."""
    path = metadata["class_labels"]
    labels = {}
    for no, line in _lines(path):
        image_id, label = _fields(path, no, line, 2, "image_id,label")
        labels[image_id] = _int(path, no, "label", label)
    return labels


def get_image_sizes(metadata):
    """``{image_id: (width, height)}``."""
    path = metadata["image_sizes"]
    sizes = {}
    for no, line in _lines(path):
        image_id, w, h = _fields(path, no, line, 3, "image_id,width,height")
        sizes[image_id] = (_int(path, no, "width", w), _int(path, no, "height", h))
    return sizes


def _number(v):
    return int(v) if float(v).is_integer() else v


def get_bounding_boxes(metadata):
    """``{image_id: [(x0, y0, x1, y1), ...]}`` in original-image pixels, each box checked
    to lie inside its image (``image_sizes.txt``)."""
    split = _native.read_box_split(split_dir(metadata))
    return {
        image_id: [tuple(_number(v) for v in box) for box in boxes]
        for image_id, boxes in zip(split["image_ids"], split["boxes"])
    }


def get_mask_paths(metadata):
    """``({image_id: [mask path, ...]}, {image_id: ignore path})`` of a mask split."""
    split = _native.read_mask_split_dir(split_dir(metadata))
    ids = split["image_ids"]
    return dict(zip(ids, split["mask_paths"])), dict(zip(ids, split["ignore_paths"]))
