//! `apollo-fleetsim`: fleet simulator and benchmarks.

fn main() {}
