//! Builds berth-init (`init/berth-init.c`), the container init for `--init`, as a static
//! executable that berthd embeds: it has to run in images without a C library.

fn main() {
    let src = "init/berth-init.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = std::process::Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(out.join("berth-init"))
        .arg(src)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "building {src} with {cc} failed ({other:?}): a C compiler and the static C library are needed (apt-get install gcc libc6-dev)"
        ),
    }
}
