//! Running containers: the OCI runtime spec berth generates for a container, the
//! per-container shim (`berth-shim`) that creates the container with the built-in runtime
//! (youki's libcontainer), owns its stdio, writes its json-file log, serves attach and
//! records its exit, and the log format itself.

pub mod logs;
pub mod shim;
pub mod spec;
