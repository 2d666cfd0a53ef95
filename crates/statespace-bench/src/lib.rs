//! criterion benchmarks of the statespace engine: `cargo bench -p statespace-bench`. The cases and
//! shapes are those of `statespace bench` (see `statespace_core::bench`), which also reports FLOP
//! rates against the measured FMA peak, peak RSS and the peers' times.
