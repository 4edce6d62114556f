//! Container commands.

use crate::client::{Client, ReqBody};
use anyhow::Result;
use clap::Args;
use http::Method;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    pub volumes: bool,
    /// Remove the specified link
    #[arg(short, long)]
    pub link: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    let mut failed = false;
    for name in &a.containers {
        let path = format!(
            "/containers/{}?force={}&v={}&link={}",
            super::q(name),
            a.force,
            a.volumes,
            a.link
        );
        match c.request(Method::DELETE, &path, ReqBody::Empty, &[]).await {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(crate::Exit(1).into());
    }
    Ok(())
}
