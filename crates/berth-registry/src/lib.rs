//! Registries: the distribution protocol's client side (manifests, blobs, auth) used by
//! berthd's pull and push.

pub mod auth;
pub mod client;
pub mod manifest;
pub mod server;
