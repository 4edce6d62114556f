//! `berth`: the command-line client. See the berth-cli crate.

fn main() {
    std::process::exit(berth_cli::main());
}
