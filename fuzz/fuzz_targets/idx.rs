//! The IDX readers (images and labels), gzip-compressed or not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use statespace_data::idx;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz-idx3-ubyte");
    let Ok(bytes) = idx::decode_maybe_gz(p, data.to_vec()) else {
        return;
    };
    if let Ok(img) = idx::parse_images(p, &bytes) {
        assert_eq!(img.pixels.len(), img.count * img.rows * img.cols);
    }
    if let Ok(l) = idx::parse_labels(p, &bytes, 10) {
        assert!(l.iter().all(|&x| x < 10));
    }
});
