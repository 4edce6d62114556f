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
    super::for_each_name(&a.containers, |name| async move {
        let path = format!(
            "/containers/{}?force={}&v={}&link={}",
            super::q(&name),
            a.force,
            a.volumes,
            a.link
        );
        c.request(Method::DELETE, &path, ReqBody::Empty, &[])
            .await?;
        println!("{name}");
        Ok(())
    })
    .await
}
