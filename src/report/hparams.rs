//! TensorBoard's HParams plugin records: what its dashboard lists (one row per session,
//! its hyperparameters and metrics) is read from three summary tags, each a summary value
//! whose metadata carries plugin `hparams` and, as content, a serialized
//! `HParamsPluginData` (tensorboard/plugins/hparams/plugin_data.proto):
//!
//! * `_hparams_/experiment`: the columns, i.e. every hyperparameter (name, type, domain)
//!   and metric (a scalar tag, relative to each session's run) the dashboard shows;
//!   TensorBoard takes the first such record it finds under its logdir.
//! * `_hparams_/session_start_info`: one run's hyperparameter values and start time; the
//!   run directory holding it is the session, and its scalars with the metrics' tags are
//!   the session's metric values (the last value of each).
//! * `_hparams_/session_end_info`: the session's status and end time.
//!
//! TensorBoard keeps the first record of a tag per run (`plugin_event_accumulator`), so
//! a run writes its start record once.
//!
//! tensorboard-proto 0.5.7 ships an older copy of these messages (no `HParamInfo.differs`)
//! whose maps serialize in hash order, so they are encoded here by hand with protobuf's
//! `CodedOutputStream`, in field-number order, map entries by key: the bytes equal
//! Python's `SerializeToString(deterministic=True)` of tensorboard's own classes (the
//! tests hold bytes obtained that way). Field numbers are cited from tensorboard 2.21's
//! `plugin_data.proto`, `api.proto` and protobuf's `struct.proto`; proto3 leaves fields
//! at their default out, except the members of a `oneof`.

use std::collections::BTreeMap;

use protobuf::{CodedOutputStream, ProtobufResult};

pub const PLUGIN_NAME: &str = "hparams";
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// A hyperparameter's value as `google.protobuf.Value` holds it (the three kinds the
/// plugin shows).
#[derive(Debug, Clone, PartialEq)]
pub enum HValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl HValue {
    /// api.proto `DataType`: STRING 1, BOOL 2, FLOAT64 3.
    pub fn data_type(&self) -> i32 {
        match self {
            HValue::Text(_) => 1,
            HValue::Bool(_) => 2,
            HValue::Number(_) => 3,
        }
    }

    /// struct.proto `Value`, a oneof `kind`: number_value 2, string_value 3, bool_value 4
    /// (written even when zero, empty or false: it is a oneof member).
    fn encode(&self) -> Vec<u8> {
        message(|os| match self {
            HValue::Number(x) => os.write_double(2, *x),
            HValue::Text(s) => os.write_string(3, s),
            HValue::Bool(b) => os.write_bool(4, *b),
        })
    }
}

impl std::fmt::Display for HValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HValue::Number(x) => write!(f, "{x}"),
            HValue::Text(s) => f.write_str(s),
            HValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The values a hyperparameter may take, for the dashboard's filters.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// Unknown (a single run has no range to show).
    Unset,
    Discrete(Vec<HValue>),
    Interval {
        min: f64,
        max: f64,
    },
}

/// api.proto `HParamInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamInfo {
    pub name: String,
    /// The type of its values; `None` leaves it unset.
    pub kind: Option<HValue>,
    pub domain: Domain,
    /// Whether its value differs between sessions: TensorBoard lists these first.
    pub differs: bool,
}

impl HParamInfo {
    /// HParamInfo: name 1, type 4 (enum DataType), oneof domain { domain_discrete 5
    /// (ListValue), domain_interval 6 (Interval) }, differs 7.
    fn encode(&self) -> Vec<u8> {
        message(|os| {
            write_nonempty(os, 1, &self.name)?;
            if let Some(t) = &self.kind {
                os.write_enum(4, t.data_type())?;
            }
            match &self.domain {
                Domain::Unset => {}
                // ListValue: values 1 (repeated Value).
                Domain::Discrete(values) => {
                    os.write_bytes(5, &message(|l| values.iter().try_for_each(|v| l.write_bytes(1, &v.encode()))))?
                }
                // Interval: min_value 1, max_value 2 (doubles, left out at 0).
                Domain::Interval { min, max } => os.write_bytes(
                    6,
                    &message(|i| {
                        write_nonzero(i, 1, *min)?;
                        write_nonzero(i, 2, *max)
                    }),
                )?,
            }
            if self.differs {
                os.write_bool(7, true)?;
            }
            Ok(())
        })
    }
}

/// api.proto `MetricInfo`: a scalar tag of the session's run (`group` "": the run itself).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInfo {
    pub tag: String,
    pub group: String,
    /// api.proto `DatasetType`: 0 unknown, 1 training, 2 validation.
    pub dataset_type: i32,
}

impl MetricInfo {
    /// MetricInfo: name 1 (MetricName: group 1, tag 2), dataset_type 5.
    fn encode(&self) -> Vec<u8> {
        message(|os| {
            os.write_bytes(
                1,
                &message(|n| {
                    write_nonempty(n, 1, &self.group)?;
                    write_nonempty(n, 2, &self.tag)
                }),
            )?;
            if self.dataset_type != 0 {
                os.write_enum(5, self.dataset_type)?;
            }
            Ok(())
        })
    }
}

/// api.proto `Experiment`: the dashboard's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub description: String,
    pub time_created_secs: f64,
    pub hparams: Vec<HParamInfo>,
    pub metrics: Vec<MetricInfo>,
}

impl Experiment {
    /// The summary content: HParamsPluginData { experiment 2 }.
    /// Experiment: description 1, time_created_secs 3, hparam_infos 4, metric_infos 5.
    pub fn plugin_content(&self) -> Vec<u8> {
        let experiment = message(|os| {
            write_nonempty(os, 1, &self.description)?;
            write_nonzero(os, 3, self.time_created_secs)?;
            self.hparams.iter().try_for_each(|h| os.write_bytes(4, &h.encode()))?;
            self.metrics.iter().try_for_each(|m| os.write_bytes(5, &m.encode()))
        });
        plugin_data(2, &experiment)
    }
}

/// plugin_data.proto `SessionStartInfo`: one run's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStart {
    pub hparams: BTreeMap<String, HValue>,
    /// Sessions of one group are aggregated into one row; "" makes the run its own group.
    pub group_name: String,
    pub start_time_secs: f64,
}

impl SessionStart {
    /// HParamsPluginData { session_start_info 3 }. SessionStartInfo: hparams 1 (map
    /// entries: key 1, value 2), group_name 4, start_time_secs 5.
    pub fn plugin_content(&self) -> Vec<u8> {
        let start = message(|os| {
            for (k, v) in &self.hparams {
                let entry = message(|e| {
                    e.write_string(1, k)?;
                    e.write_bytes(2, &v.encode())
                });
                os.write_bytes(1, &entry)?;
            }
            write_nonempty(os, 4, &self.group_name)?;
            write_nonzero(os, 5, self.start_time_secs)
        });
        plugin_data(3, &start)
    }
}

/// api.proto `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Success = 1,
    Failure = 2,
    Running = 3,
}

/// HParamsPluginData { session_end_info 4 }. SessionEndInfo: status 1, end_time_secs 2.
pub fn session_end_content(status: SessionStatus, end_time_secs: f64) -> Vec<u8> {
    let end = message(|os| {
        os.write_enum(1, status as i32)?;
        write_nonzero(os, 2, end_time_secs)
    });
    plugin_data(4, &end)
}

/// HParamsPluginData: version 1 (0, TensorBoard's only version, so left out), then the
/// `data` oneof member `field`.
fn plugin_data(field: u32, body: &[u8]) -> Vec<u8> {
    message(|os| os.write_bytes(field, body))
}

fn write_nonempty(os: &mut CodedOutputStream, field: u32, s: &str) -> ProtobufResult<()> {
    if s.is_empty() {
        return Ok(());
    }
    os.write_string(field, s)
}

fn write_nonzero(os: &mut CodedOutputStream, field: u32, x: f64) -> ProtobufResult<()> {
    // proto3 leaves out +0.0 only; -0.0 has a sign bit and is written.
    if x.to_bits() == 0 {
        return Ok(());
    }
    os.write_double(field, x)
}

/// One message's bytes; nested messages are encoded first and written as length-delimited
/// bytes by their parent.
fn message(write: impl FnOnce(&mut CodedOutputStream) -> ProtobufResult<()>) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut os = CodedOutputStream::vec(&mut buf);
        write(&mut os).and_then(|()| os.flush()).expect("encoding into a Vec cannot fail");
    }
    buf
}

#[cfg(test)]
mod tests {
    //! Expected bytes made by tensorboard 2.21's own classes (protobuf 6), with
    //! `scripts/hparams_reference_bytes.py`; each test names its case there.
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn info(name: &str, kind: Option<HValue>, domain: Domain, differs: bool) -> HParamInfo {
        HParamInfo { name: name.into(), kind, domain, differs }
    }

    #[test]
    fn experiment_bytes_equal_tensorboards() {
        let e = Experiment {
            description: "d".into(),
            time_created_secs: 1.5,
            hparams: vec![
                info("train.optimizer.lr", Some(HValue::Number(0.0)), Domain::Interval { min: 1e-5, max: 1.0 }, true),
                info(
                    "model.head",
                    Some(HValue::Text(String::new())),
                    Domain::Discrete(vec![HValue::Text("cam".into()), HValue::Text("has".into())]),
                    true,
                ),
                info("data.hflip", Some(HValue::Bool(false)), Domain::Unset, false),
                info(
                    "model.width",
                    Some(HValue::Number(0.0)),
                    Domain::Discrete(vec![HValue::Number(16.0), HValue::Number(0.0)]),
                    false,
                ),
                info("x", Some(HValue::Number(0.0)), Domain::Interval { min: 0.0, max: 2.0 }, false),
            ],
            metrics: vec![
                MetricInfo { tag: "val/maxboxacc_v2".into(), group: String::new(), dataset_type: 2 },
                MetricInfo { tag: "test/top1_cls".into(), group: "eval".into(), dataset_type: 0 },
            ],
        };
        assert_eq!(
            hex(&e.plugin_content()),
            "12d8010a016419000000000000f83f222c0a12747261696e2e6f7074696d697a65722e6c722003321209f168e388b5f8e43e\
             11000000000000f03f380122200a0a6d6f64656c2e6865616420012a0e0a051a0363616d0a051a036861733801220e0a0a\
             646174612e68666c6970200222270a0b6d6f64656c2e776964746820032a160a091100000000000030400a09110000000000\
             00000022100a0178200332091100000000000000402a160a12121076616c2f6d6178626f786163635f763228022a170a150a\
             046576616c120d746573742f746f70315f636c73"
        );
    }

    #[test]
    fn session_start_bytes_equal_tensorboards() {
        let hparams = [
            ("train.optimizer.lr", HValue::Number(0.01)),
            ("model.head", HValue::Text("cam".into())),
            ("data.hflip", HValue::Bool(true)),
            ("seed", HValue::Number(0.0)),
            ("name", HValue::Text(String::new())),
            ("log.tensorboard", HValue::Bool(false)),
        ];
        let s = SessionStart {
            hparams: hparams.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            group_name: String::new(),
            start_time_secs: 1700000000.25,
        };
        assert_eq!(
            hex(&s.plugin_content()),
            "1a87010a100a0a646174612e68666c6970120220010a150a0f6c6f672e74656e736f72626f617264120220000a130a0a6d6f\
             64656c2e6865616412051a0363616d0a0a0a046e616d6512021a000a110a047365656412091100000000000000000a1f0a12\
             747261696e2e6f7074696d697a65722e6c721209117b14ae47e17a843f2900001040fc54d941"
        );
        let grouped = SessionStart {
            hparams: [("a".to_string(), HValue::Number(-2.5))].into(),
            group_name: "g".into(),
            start_time_secs: 0.0,
        };
        assert_eq!(hex(&grouped.plugin_content()), "1a130a0e0a016112091100000000000004c0220167");
    }

    #[test]
    fn session_end_bytes_equal_tensorboards() {
        assert_eq!(hex(&session_end_content(SessionStatus::Success, 1700000100.5)), "220b08011100002059fc54d941");
    }
}
