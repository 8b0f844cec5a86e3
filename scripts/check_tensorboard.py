#!/usr/bin/env python3
"""List what TensorBoard's own reader finds in a run's event files.

Usage: pip install tensorboard && python3 scripts/check_tensorboard.py RUN_DIR/tb
Prints every scalar tag with its number of points and last value, and image tags.
"""
import sys

from tensorboard.backend.event_processing import event_accumulator


def main(logdir: str) -> int:
    ea = event_accumulator.EventAccumulator(logdir, size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    if not tags.get("scalars") and not tags.get("images"):
        print(f"no scalars or images found under {logdir}", file=sys.stderr)
        return 1
    for tag in sorted(tags.get("scalars", [])):
        events = ea.Scalars(tag)
        print(f"{tag:40s} {len(events):5d} points, last step {events[-1].step}, last value {events[-1].value:.4f}")
    for tag in sorted(tags.get("images", [])):
        print(f"{tag:40s} {len(ea.Images(tag)):5d} images")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
