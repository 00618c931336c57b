//! The integration tests of `apollo-protocol`, one test binary: the specification's test
//! vectors checked against this crate ([`vectors`]) and against an independent Python
//! implementation ([`independent_check`]), and property tests of the parsers that face the
//! network ([`properties`]).

mod independent_check;
mod properties;
mod vectors;
