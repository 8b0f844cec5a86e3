//! wsol: weakly supervised object localization on candle.
//!
//! The evaluation engine (`localize`, `metrics`) depends on nothing but arrays and
//! annotations, so maps from any source are scored the same way as our own.

pub mod bench;
pub mod cam;
pub mod cli;
pub mod config;
pub mod data;
pub mod eval_cams;
pub mod evaluate;
pub mod localize;
pub mod metrics;
pub mod models;
pub mod picture;
pub mod pipeline;
pub mod profile;
pub mod report;
pub mod results;
pub mod run_report;
pub mod scoremaps;
pub mod sweep;
pub mod train;
pub mod util;
