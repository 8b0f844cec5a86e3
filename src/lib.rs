//! wsol: weakly supervised object localization on candle.
//!
//! The evaluation engine is its own crate, `wsol-eval` (no candle), and so are the compute
//! kernels, `wsol-ops`; this crate is the framework between them.

pub mod bench;
pub mod cam;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod distributed;
pub mod draws;
pub mod error;
pub mod evaluate;
pub mod methods;
pub mod models;
pub mod report;
pub mod runtime;
pub mod train;
