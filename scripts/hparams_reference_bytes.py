#!/usr/bin/env python3
"""Reference bytes of TensorBoard's HParams plugin records, made by tensorboard's own
generated classes, for the unit tests of src/report/hparams.rs (which encodes them by
hand). Prints one `case: hex` line per case; the tests hold these strings.

Usage: pip install tensorboard && python3 scripts/hparams_reference_bytes.py
"""
from google.protobuf import struct_pb2

from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2


def experiment():
    e = api_pb2.Experiment(description="d", time_created_secs=1.5)
    lr = e.hparam_infos.add(name="train.optimizer.lr", type=api_pb2.DATA_TYPE_FLOAT64, differs=True)
    lr.domain_interval.min_value = 1e-5
    lr.domain_interval.max_value = 1.0
    head = e.hparam_infos.add(name="model.head", type=api_pb2.DATA_TYPE_STRING, differs=True)
    head.domain_discrete.extend(["cam", "has"])
    e.hparam_infos.add(name="data.hflip", type=api_pb2.DATA_TYPE_BOOL)
    width = e.hparam_infos.add(name="model.width", type=api_pb2.DATA_TYPE_FLOAT64)
    width.domain_discrete.extend([16.0, 0.0])
    low = e.hparam_infos.add(name="x", type=api_pb2.DATA_TYPE_FLOAT64)
    low.domain_interval.min_value = 0.0
    low.domain_interval.max_value = 2.0
    e.metric_infos.add(name=api_pb2.MetricName(tag="val/maxboxacc_v2"), dataset_type=api_pb2.DATASET_VALIDATION)
    e.metric_infos.add(name=api_pb2.MetricName(group="eval", tag="test/top1_cls"))
    return plugin_data_pb2.HParamsPluginData(version=0, experiment=e)


def session_start():
    s = plugin_data_pb2.SessionStartInfo(group_name="", start_time_secs=1700000000.25)
    s.hparams["train.optimizer.lr"].number_value = 0.01
    s.hparams["model.head"].string_value = "cam"
    s.hparams["data.hflip"].bool_value = True
    s.hparams["seed"].number_value = 0.0
    s.hparams["name"].string_value = ""
    s.hparams["log.tensorboard"].bool_value = False
    return plugin_data_pb2.HParamsPluginData(version=0, session_start_info=s)


def session_start_grouped():
    s = plugin_data_pb2.SessionStartInfo(group_name="g")
    s.hparams["a"].number_value = -2.5
    return plugin_data_pb2.HParamsPluginData(version=0, session_start_info=s)


def session_end():
    e = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=1700000100.5)
    return plugin_data_pb2.HParamsPluginData(version=0, session_end_info=e)


if __name__ == "__main__":
    for name, make in [
        ("experiment", experiment),
        ("session_start", session_start),
        ("session_start_grouped", session_start_grouped),
        ("session_end", session_end),
    ]:
        print(f"{name}: {make().SerializeToString(deterministic=True).hex()}")
