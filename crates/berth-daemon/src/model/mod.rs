//! The engine's model: what it records of containers and their execs, health and
//! networking, as Rust types. The doors translate their wire formats to and from
//! these (the Docker API's JSON in `routes`).

pub mod container;
pub mod exec;
pub mod health;
pub mod net;

pub use container::{attrs, short, Ctr, State, ZERO_TIME};
pub use exec::{Exec, ExecSpec, ExecState, Execs};
pub use health::{Health, Probe};
pub use net::{Endpoint, NetState, Published};
