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
        "proto/content.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    // FileSend/DiffCopy also carries a plain byte stream (`--output type=tar`), with the
    // same method path: a second client and server for it
    let bytes = "crate::pb::moby::filesync::v1::BytesMessage";
    let svc = tonic_build::manual::Service::builder()
        .name("FileSend")
        .package("moby.filesync.v1")
        .method(
            tonic_build::manual::Method::builder()
                .name("diff_copy")
                .route_name("DiffCopy")
                .input_type(bytes)
                .output_type(bytes)
                .codec_path("tonic_prost::ProstCodec")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_client(true)
        .build_server(true)
        .compile(&[svc]);
    Ok(())
}
