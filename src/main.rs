//! The `reimage` binary: everything is in the library; this only exits with
//! the code it returns.

fn main() {
    std::process::exit(reimage::main());
}
