//! BuildKit's wire protocol, as berthd speaks it with the docker CLI, buildx and Compose
//! v2: the control API (`moby.buildkit.v1.Control`, served on the daemon's `/grpc`
//! endpoint), the services a client exposes on its session (`/session`: file sync,
//! registry credentials, secrets, ssh forwarding, health), fsutil's file transfer
//! (`fsutil`), and gRPC over one already-open connection (`conn`: both endpoints are HTTP
//! upgrades of a connection the client opened).
//!
//! The .proto files in `proto/` are berth's own, written from BuildKit's and fsutil's
//! public definitions (each names its source); the code is generated at build time.

pub mod conn;
pub mod fsutil;
pub mod session;

/// The generated messages, clients and servers, by protobuf package.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    pub mod moby {
        pub mod buildkit {
            pub mod v1 {
                tonic::include_proto!("moby.buildkit.v1");
                pub mod frontend {
                    tonic::include_proto!("moby.buildkit.v1.frontend");
                }
            }
            pub mod secrets {
                pub mod v1 {
                    tonic::include_proto!("moby.buildkit.secrets.v1");
                }
            }
        }
        pub mod filesync {
            pub mod v1 {
                tonic::include_proto!("moby.filesync.v1");
            }
        }
        pub mod sshforward {
            pub mod v1 {
                tonic::include_proto!("moby.sshforward.v1");
            }
        }
    }
    /// `FileSend/DiffCopy` as a plain byte stream (`--output type=tar`)
    pub mod filesend_bytes {
        include!(concat!(env!("OUT_DIR"), "/moby.filesync.v1.FileSend.rs"));
    }
    pub mod fsutil {
        pub mod types {
            tonic::include_proto!("fsutil.types");
        }
    }
    pub mod containerd {
        pub mod services {
            pub mod content {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.content.v1");
                }
            }
        }
    }
    pub mod grpc {
        pub mod health {
            pub mod v1 {
                tonic::include_proto!("grpc.health.v1");
            }
        }
    }
}

pub use pb::containerd::services::content::v1 as content;
pub use pb::fsutil::types::{packet::PacketType, Packet, Stat};
pub use pb::moby::buildkit::v1 as control;
pub use pb::moby::buildkit::v1::frontend as gateway;
pub use pb::moby::filesync::v1 as filesync;
/// The protobuf runtime of the generated messages (to encode them by hand).
pub use prost;

/// The session headers of a `/session` request, as BuildKit clients send them.
pub mod headers {
    pub const SESSION_UUID: &str = "X-Docker-Expose-Session-Uuid";
    pub const SESSION_NAME: &str = "X-Docker-Expose-Session-Name";
    pub const SESSION_SHARED_KEY: &str = "X-Docker-Expose-Session-Sharedkey";
    pub const SESSION_METHOD: &str = "X-Docker-Expose-Session-Grpc-Method";
}
