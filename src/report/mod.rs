//! Reporting: TensorBoard event files, progress bars, console tables, JSON and PNG output.

pub mod hparams;
pub mod overlay;
pub mod progress;
pub mod provenance;
pub mod table;
pub mod tensorboard;

pub use progress::Progress;
pub use table::metrics_table;
pub use tensorboard::TbWriter;
pub use wsol_eval::report::{curve_plot, encode_png_rgb, text, write_json};
