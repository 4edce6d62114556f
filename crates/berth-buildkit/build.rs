//! Generates the gRPC code for BuildKit's protocol from `proto/` (berth's own .proto
//! files) with protox, a protobuf compiler in Rust: no `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/fsutil.proto",
        "proto/session.proto",
        "proto/secrets.proto",
        "proto/ssh.proto",
        "proto/health.proto",
        "proto/gateway.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
