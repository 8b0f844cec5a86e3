//! Property tests (proptest) of the parsers users feed by hand: whatever the bytes, the
//! config parser, the metadata reader and the `.npy` reader return an error or a value,
//! never a panic. Run longer with `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use proptest::prelude::*;

use wsol::config::Config;

/// Text made of the characters these formats are built from, so cases get past the
/// first byte often.
fn texty() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(",".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just(" ".to_string()),
            Just(":".to_string()),
            Just("-".to_string()),
            Just("\u{feff}".to_string()),
            "[a-z./_]{1,6}",
            "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
            Just("data:\n  batch_size: ".to_string()),
            Just("train: {epochs: ".to_string()),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn config_parser_never_panics(text in texty()) {
        let _ = Config::from_yaml(&text);
        let mut cfg = Config::default();
        let _ = cfg.apply_overrides(&[text.replace('\n', " ")]);
    }

    #[test]
    fn metadata_reader_never_panics(ids in texty(), labels in texty(), sizes in texty(), boxes in texty()) {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("test");
        std::fs::create_dir_all(&split).unwrap();
        for (name, text) in [("image_ids.txt", &ids), ("class_labels.txt", &labels), ("image_sizes.txt", &sizes), ("localization.txt", &boxes)] {
            std::fs::write(split.join(name), text).unwrap();
        }
        let _ = wsol::data::read_split(dir.path(), "test", 3);
    }

    #[test]
    fn npy_reader_never_panics(shape in proptest::collection::vec(0u8..5, 0..4), tail in proptest::collection::vec(any::<u8>(), 0..200), descr in prop_oneof![Just("<f4"), Just("<f8"), Just(">f4"), Just("<i4"), Just("|u1")]) {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(&tail);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        std::fs::write(&path, &bytes).unwrap();
        let _ = wsol_eval::scoremaps::read(&path);
    }
}
