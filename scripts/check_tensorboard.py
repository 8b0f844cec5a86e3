#!/usr/bin/env python3
"""List what TensorBoard's own reader finds under a logdir.

Usage: pip install tensorboard && python3 scripts/check_tensorboard.py LOGDIR
LOGDIR is a run's tb/ folder, a run directory, a sweep directory or experiments/runs:
every folder below it holding event files is a run, as for `tensorboard --logdir`.

Prints, per run, every scalar tag with its number of points and last value, image tags,
and histogram tags (with their steps); then the HParams dashboard's view: the
experiment's hyperparameters (with their domains) and metrics, and each session (a run
with a start record) with its hyperparameter values, its status and its metric values
(the last value of each metric's scalar, as the dashboard takes it).
"""
import os
import sys

from tensorboard.backend.event_processing import event_multiplexer
from tensorboard.plugins.hparams import api_pb2, metadata
from google.protobuf import json_format

ALL = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}


def value_text(v):
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return f"{v.number_value:g}"
    if kind == "string_value":
        return repr(v.string_value)
    if kind == "bool_value":
        return str(v.bool_value).lower()
    return json_format.MessageToJson(v)


def domain_text(info):
    which = info.WhichOneof("domain")
    if which == "domain_interval":
        return f"interval [{info.domain_interval.min_value:g}, {info.domain_interval.max_value:g}]"
    if which == "domain_discrete":
        return "one of {" + ", ".join(value_text(v) for v in info.domain_discrete.values) + "}"
    return "no domain"


def list_run(mux, run, prefix):
    tags = mux.GetAccumulator(run).Tags()
    for tag in sorted(tags.get("scalars", [])):
        events = mux.Scalars(run, tag)
        print(f"{prefix}{tag:40s} {len(events):5d} points, last step {events[-1].step}, last value {events[-1].value:.4f}")
    for tag in sorted(tags.get("images", [])):
        print(f"{prefix}{tag:40s} {len(mux.Images(run, tag)):5d} images")
    for tag in sorted(tags.get("histograms", [])):
        hs = mux.Histograms(run, tag)
        steps = ",".join(str(h.step) for h in hs)
        last = hs[-1].histogram_value
        print(f"{prefix}{tag:40s} {len(hs):5d} histograms at steps {steps}; last: {last.num:g} values in [{last.min:.4g}, {last.max:.4g}]")
    found = bool(tags.get("scalars") or tags.get("images") or tags.get("histograms"))
    if not found:
        print(f"{prefix}(no scalars, images or histograms; HParams records below)")
    return found


def list_hparams(mux):
    content = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    if not content:
        print("hparams: no records")
        return
    experiments = [(r, t[metadata.EXPERIMENT_TAG]) for r, t in sorted(content.items()) if metadata.EXPERIMENT_TAG in t]
    metrics = []
    if experiments:
        run, raw = experiments[0]
        exp = metadata.parse_experiment_plugin_data(raw)
        print(f"hparams experiment (run {run}; {len(experiments)} experiment record(s) found, the first is used): {exp.description}")
        for h in exp.hparam_infos:
            differs = ", differs" if h.differs else ""
            print(f"  hparam {h.name}: {api_pb2.DataType.Name(h.type)}, {domain_text(h)}{differs}")
        metrics = [m.name for m in exp.metric_infos]
        for m in metrics:
            print(f"  metric {m.tag}" + (f" (group {m.group})" if m.group else ""))
    else:
        print("hparams: no experiment record (TensorBoard infers the columns from the sessions)")
    sessions = sorted(r for r, t in content.items() if metadata.SESSION_START_INFO_TAG in t)
    print(f"hparams sessions: {len(sessions)}")
    for run in sessions:
        tags = content[run]
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        status = "no end record"
        if metadata.SESSION_END_INFO_TAG in tags:
            end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
            status = api_pb2.Status.Name(end.status)
        print(f"  session {run} (group {start.group_name or run!r}, {status}, {len(start.hparams)} hparams)")
        shown = [h.name for h in exp.hparam_infos] if experiments else sorted(start.hparams)
        for name in shown:
            if name in start.hparams:
                print(f"    {name} = {value_text(start.hparams[name])}")
        for m in metrics:
            metric_run = os.path.join(run, m.group) if m.group else run
            try:
                last = mux.Scalars(metric_run, m.tag)[-1]
                print(f"    {m.tag} = {last.value:.4f} (step {last.step})")
            except KeyError:
                print(f"    {m.tag}: no value")


def main(logdir: str) -> int:
    mux = event_multiplexer.EventMultiplexer(size_guidance=ALL)
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    runs = sorted(mux.Runs())
    if not runs:
        print(f"no event files found under {logdir}", file=sys.stderr)
        return 1
    found = False
    for run in runs:
        prefix = "" if len(runs) == 1 else "  "
        if len(runs) > 1:
            print(f"run {run}:")
        found |= list_run(mux, run, prefix)
    list_hparams(mux)
    if not found:
        print(f"no scalars, images or histograms found under {logdir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
