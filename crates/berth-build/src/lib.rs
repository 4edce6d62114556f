//! Building images from Dockerfiles. This crate holds what does not need a daemon: the
//! `.dockerignore` matcher (`ignore`), the Dockerfile parser (`parser`) and the
//! shell-like word processing Docker applies to
//! instruction arguments (`shell`: quotes, escapes, `$VAR`, `${VAR:-default}`,
//! `${VAR:+alt}`).

pub mod ignore;
pub mod parser;
pub mod shell;
