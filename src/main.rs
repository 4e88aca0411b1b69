//! The `snap` binary: see [`snap::cli`].

fn main() {
    std::process::exit(snap::cli::main());
}
