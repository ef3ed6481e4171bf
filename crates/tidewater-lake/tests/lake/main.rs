//! The lake's integration tests, in one binary (one link of arrow and parquet): a real
//! `EmbeddedLog` in a temporary directory, a real `Lake`, and the files read back.

mod common;
mod crash;
mod data;
mod export;
mod format;
mod kill;
mod malformed;
mod python;
mod roundtrip;
