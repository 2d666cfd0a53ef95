//! The TSV readers: ListOps files (header, fields, tokens, labels) and AAN pair lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use statespace_data::{listops, text};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = listops::parse_tsv(Path::new("fuzz.tsv"), data) {
        // what was accepted is consistent
        assert_eq!(s.offsets.len(), s.labels.len() + 1);
        for i in 0..s.len() {
            assert!(!s.example(i).is_empty());
            assert!(s.example(i).iter().all(|&t| t > 0 && (t as usize) < listops::VOCAB));
            assert!(s.labels[i] < 10);
        }
    }
    for line in data.split(|&b| b == b'\n') {
        if let Ok(p) = text::parse_aan_line(line) {
            assert!(p.label <= 1);
        }
    }
});
