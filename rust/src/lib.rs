//! Rust core of psgan_fast.
//!
//! Plain-Rust modules with their own `cargo test`s, and one thin PyO3
//! binding module (`python`, behind the `python` feature) that converts at
//! the edge, releases the GIL for long work and turns every error into a
//! Python exception. Nothing here panics on user input.

pub mod idx;
pub mod stream;
pub mod gram;
pub mod stats;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod python_stats;
