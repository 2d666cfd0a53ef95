//! The CIFAR-10 binary reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use statespace_data::cifar::{self, CifarImages};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut out = CifarImages::default();
    if cifar::parse_batch(Path::new("fuzz.bin"), data, &mut out).is_ok() {
        assert_eq!(out.pixels.len(), out.labels.len() * 3072);
        assert_eq!(data.len(), out.labels.len() * cifar::RECORD);
        assert!(out.labels.iter().all(|&l| l < 10));
    }
});
