//! Pieces of the Docker protocol that both berthd and the berth CLI need.

pub mod detach;
pub mod duration;
pub mod gojson;
pub mod gotypes;
pub mod signal;
