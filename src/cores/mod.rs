//! Algorithmic cores: plain Rust, no pgrx types, tested with ordinary `#[test]`s.
//!
//! Arrows point one way: the pgrx glue in `src/*.rs` converts arguments, calls into these
//! modules and reports their errors; nothing here knows about Datums or SPI.

pub mod billing;
pub mod daily_stats;
pub mod jobs;
pub mod queue;
pub mod records;
pub mod rollup;
pub mod sketch;
pub mod sketch_pair;
pub mod sources;
