//! The parts of the `idgov` command-line client that other tools reuse:
//! reading a roster CSV (the benchmarks seed the example organisation with
//! it, exactly as `idgov hr import` reads it).

pub mod roster_csv;
