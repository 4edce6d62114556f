//! `berthd`: the berth daemon. See the berth-daemon crate.

use clap::Parser;

fn main() {
    let flags = berth_daemon::config::Flags::parse();
    if let Err(e) = berth_daemon::main_with(flags) {
        eprintln!("berthd: {e:#}");
        std::process::exit(1);
    }
}
