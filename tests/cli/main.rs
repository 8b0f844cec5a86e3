//! The integration tests: one binary (linked once), one module per area. Each runs the
//! `wsol` binary or the library on tiny data the tests make or ship (`tests/fixtures`).

mod common;

mod acol;
mod backbone_parity;
mod backbones;
mod bad_inputs;
mod bagcams;
mod bas;
mod batch_methods;
mod cam_methods;
mod cam_photos;
mod configs;
mod cub;
mod deit;
mod digits;
mod distributed;
mod drop_path;
mod end_to_end;
mod errors;
mod eval_cams;
mod eval_cams_masks;
mod eval_cams_official;
mod faithfulness;
mod folder_layout;
mod fuzz;
mod gradients;
mod interrupt;
mod mask_dataset;
mod optimizer;
mod per_image;
mod pipeline_parity;
mod precision;
mod preflight;
mod provenance;
mod scm;
mod source_rules;
mod tensorboard;
mod training_parity;
