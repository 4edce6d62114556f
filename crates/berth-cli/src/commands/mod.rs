//! One module per command group; each command is a function taking its parsed flags.

pub mod build;
pub mod containers;
pub mod context;
pub mod exec;
pub mod files;
pub mod images;
pub mod kube;
pub mod limits;
pub mod network;
pub mod plugin;
pub mod registry;
pub mod stream;
pub mod system;
pub mod usage;
pub mod volume;

use crate::client::Client;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::ffi::OsString;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show the berth version information
    Version(system::VersionArgs),
    /// Display system-wide information
    Info(system::InfoArgs),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Manage berth
    #[command(subcommand)]
    System(SystemCmd),
    /// Manage contexts
    #[command(subcommand)]
    Context(context::ContextCmd),
    /// Generate Kubernetes YAML from containers, and run it
    #[command(subcommand)]
    Kube(kube::KubeCmd),
    /// List images
    Images(images::ListArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCmd),
    /// Return low-level information on berth objects
    Inspect(images::InspectArgs),
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Manage builds
    #[command(subcommand)]
    Builder(build::BuilderCmd),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(images::TagArgs),
    /// Remove one or more images
    Rmi(images::RmiArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(images::ImportArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(images::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(images::LoadArgs),
    /// Download an image from a registry
    Pull(registry::PullArgs),
    /// Upload an image to a registry
    Push(registry::PushArgs),
    /// Authenticate to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Run berth's own registry
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Create and run a new container from an image
    Run(containers::CreateArgs),
    /// Create a new container
    Create(containers::CreateArgs),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// List containers
    Ps(containers::PsArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(containers::WaitArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(exec::AttachArgs),
    /// Display the running processes of a container
    Top(exec::TopArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(files::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(files::ExportArgs),
    /// Create a new image from a container's changes
    Commit(files::CommitArgs),
    /// Pause all processes within one or more containers
    Pause(usage::PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(usage::PauseArgs),
    /// Update configuration of one or more containers
    Update(usage::UpdateArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(usage::StatsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// List port mappings or a specific mapping for the container
    Port(network::PortArgs),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// A docker CLI plugin (`docker-NAME`: compose, buildx, …)
    #[command(external_subcommand)]
    Plugin(Vec<OsString>),
}

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(containers::PsArgs),
    /// Create and run a new container from an image
    Run(containers::CreateArgs),
    /// Create a new container
    Create(containers::CreateArgs),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// Display detailed information on one or more containers
    Inspect(ContainerInspectArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(containers::WaitArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// List port mappings or a specific mapping for the container
    Port(network::PortArgs),
    /// Remove all stopped containers
    Prune(containers::PruneArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(exec::AttachArgs),
    /// Display the running processes of a container
    Top(exec::TopArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(files::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(files::ExportArgs),
    /// Create a new image from a container's changes
    Commit(files::CommitArgs),
    /// Pause all processes within one or more containers
    Pause(usage::PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(usage::PauseArgs),
    /// Update configuration of one or more containers
    Update(usage::UpdateArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(usage::StatsArgs),
}

#[derive(Debug, Args)]
pub struct ContainerInspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Serve an OCI distribution registry
    Serve(registry::ServeArgs),
    /// Remove blobs no manifest names
    Gc(registry::GcArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Show berth disk usage
    Df(system::DfArgs),
    /// Display system-wide information
    Info(system::InfoArgs),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Remove unused data
    Prune(system::PruneArgs),
    /// Proxy the stdio stream to the daemon connection (what `ssh://` hosts run)
    #[command(hide = true)]
    DialStdio,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// List images
    #[command(alias = "list")]
    Ls(images::ListArgs),
    /// Display detailed information on one or more images
    Inspect(images::ImageInspectArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(images::TagArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(images::RmiArgs),
    /// Remove unused images
    Prune(images::PruneArgs),
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Import the contents from a tarball to create a filesystem image
    Import(images::ImportArgs),
    /// Save one or more images to a tar archive
    Save(images::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(images::LoadArgs),
    /// Download an image from a registry
    Pull(registry::PullArgs),
    /// Upload an image to a registry
    Push(registry::PushArgs),
}

/// Shared `--format` flag.
#[derive(Debug, Args, Clone, Default)]
pub struct FormatArg {
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json', or a Go template
    #[arg(long)]
    pub format: Option<String>,
}

pub async fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Version(a) => system::version(c, a).await,
        Cmd::Info(a) | Cmd::System(SystemCmd::Info(a)) => system::info(c, a).await,
        Cmd::Events(a) | Cmd::System(SystemCmd::Events(a)) => system::events(c, a).await,
        Cmd::System(SystemCmd::Df(a)) => system::df(c, a).await,
        Cmd::System(SystemCmd::DialStdio) => system::dial_stdio(c).await,
        Cmd::System(SystemCmd::Prune(a)) => system::prune(c, a).await,
        Cmd::Kube(k) => kube::run(c, k).await,
        Cmd::Context(cmd) => context::run(cmd, &c.context),
        Cmd::Plugin(args) => plugin::exec(
            &args,
            (c.context == context::DEFAULT).then_some(c.host.as_str()),
        ),
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => images::list(c, a).await,
        Cmd::Image(ImageCmd::Inspect(a)) => images::image_inspect(c, a).await,
        Cmd::Inspect(a) => images::inspect(c, a).await,
        Cmd::History(a) | Cmd::Image(ImageCmd::History(a)) => images::history(c, a).await,
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => images::tag(c, a).await,
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => images::rmi(c, a).await,
        Cmd::Image(ImageCmd::Prune(a)) => images::prune(c, a).await,
        Cmd::Build(a) | Cmd::Image(ImageCmd::Build(a)) => build::build(c, *a).await,
        Cmd::Builder(build::BuilderCmd::Build(a)) => build::build(c, *a).await,
        Cmd::Builder(build::BuilderCmd::Prune(a)) => build::prune(c, a).await,
        Cmd::Import(a) | Cmd::Image(ImageCmd::Import(a)) => images::import(c, a).await,
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => images::save(c, a).await,
        Cmd::Load(a) | Cmd::Image(ImageCmd::Load(a)) => images::load(c, a).await,
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => registry::pull(c, a).await,
        Cmd::Push(a) | Cmd::Image(ImageCmd::Push(a)) => registry::push(c, a).await,
        Cmd::Login(a) => registry::login(c, a).await,
        Cmd::Registry(RegistryCmd::Serve(a)) => registry::serve(a).await,
        Cmd::Registry(RegistryCmd::Gc(a)) => registry::gc(a).await,
        Cmd::Logout(a) => registry::logout(c, a).await,
        Cmd::Run(a) | Cmd::Container(ContainerCmd::Run(a)) => containers::run(c, a).await,
        Cmd::Create(a) | Cmd::Container(ContainerCmd::Create(a)) => containers::create(c, a).await,
        Cmd::Start(a) | Cmd::Container(ContainerCmd::Start(a)) => containers::start(c, a).await,
        Cmd::Container(ContainerCmd::Inspect(a)) => {
            let args = images::InspectArgs {
                format: a.format,
                size: a.size,
                kind: Some("container".into()),
                names: a.names,
            };
            images::inspect(c, args).await
        }
        Cmd::Ps(a) | Cmd::Container(ContainerCmd::Ls(a)) => containers::ps(c, a).await,
        Cmd::Logs(a) | Cmd::Container(ContainerCmd::Logs(a)) => containers::logs(c, a).await,
        Cmd::Stop(a) | Cmd::Container(ContainerCmd::Stop(a)) => {
            containers::stop(c, a, "stop").await
        }
        Cmd::Restart(a) | Cmd::Container(ContainerCmd::Restart(a)) => {
            containers::stop(c, a, "restart").await
        }
        Cmd::Kill(a) | Cmd::Container(ContainerCmd::Kill(a)) => containers::kill(c, a).await,
        Cmd::Wait(a) | Cmd::Container(ContainerCmd::Wait(a)) => containers::wait(c, a).await,
        Cmd::Rename(a) | Cmd::Container(ContainerCmd::Rename(a)) => containers::rename(c, a).await,
        Cmd::Rm(a) | Cmd::Container(ContainerCmd::Rm(a)) => containers::rm(c, a).await,
        Cmd::Container(ContainerCmd::Prune(a)) => containers::prune(c, a).await,
        Cmd::Exec(a) | Cmd::Container(ContainerCmd::Exec(a)) => exec::exec(c, a).await,
        Cmd::Attach(a) | Cmd::Container(ContainerCmd::Attach(a)) => exec::attach(c, a).await,
        Cmd::Top(a) | Cmd::Container(ContainerCmd::Top(a)) => exec::top(c, a).await,
        Cmd::Cp(a) | Cmd::Container(ContainerCmd::Cp(a)) => files::cp(c, a).await,
        Cmd::Diff(a) | Cmd::Container(ContainerCmd::Diff(a)) => files::diff(c, a).await,
        Cmd::Export(a) | Cmd::Container(ContainerCmd::Export(a)) => files::export(c, a).await,
        Cmd::Commit(a) | Cmd::Container(ContainerCmd::Commit(a)) => files::commit(c, a).await,
        Cmd::Pause(a) | Cmd::Container(ContainerCmd::Pause(a)) => usage::pause(c, a).await,
        Cmd::Unpause(a) | Cmd::Container(ContainerCmd::Unpause(a)) => usage::unpause(c, a).await,
        Cmd::Update(a) | Cmd::Container(ContainerCmd::Update(a)) => usage::update(c, a).await,
        Cmd::Stats(a) | Cmd::Container(ContainerCmd::Stats(a)) => usage::stats(c, a).await,
        Cmd::Port(a) | Cmd::Container(ContainerCmd::Port(a)) => network::port(c, a).await,
        Cmd::Volume(v) => match v {
            volume::VolumeCmd::Create(a) => volume::create(c, a).await,
            volume::VolumeCmd::Ls(a) => volume::ls(c, a).await,
            volume::VolumeCmd::Inspect(a) => volume::inspect(c, a).await,
            volume::VolumeCmd::Rm(a) => volume::rm(c, a).await,
            volume::VolumeCmd::Prune(a) => volume::prune(c, a).await,
        },
        Cmd::Network(n) => match n {
            network::NetworkCmd::Create(a) => network::create(c, a).await,
            network::NetworkCmd::Ls(a) => network::ls(c, a).await,
            network::NetworkCmd::Inspect(a) => network::inspect(c, a).await,
            network::NetworkCmd::Rm(a) => network::rm(c, a).await,
            network::NetworkCmd::Prune(a) => network::prune(c, a).await,
            network::NetworkCmd::Connect(a) => network::connect(c, a).await,
            network::NetworkCmd::Disconnect(a) => network::disconnect(c, a).await,
        },
    }
}

/// `X rm NAME…`: DELETE each (name, path), printing the name, or the error (then exit 1
/// at the end); with `ignore_missing`, a 404 is no error.
pub async fn remove_each(
    c: &Client,
    items: &[(String, String)],
    ignore_missing: bool,
) -> Result<()> {
    let mut failed = false;
    for (name, path) in items {
        match c
            .request(
                http::Method::DELETE,
                path,
                crate::client::ReqBody::Empty,
                &[],
            )
            .await
        {
            Ok(_) => println!("{name}"),
            Err(e) => {
                let missing = e
                    .downcast_ref::<crate::client::DaemonError>()
                    .is_some_and(|d| d.status == http::StatusCode::NOT_FOUND);
                if !(ignore_missing && missing) {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        return Err(crate::Exit(1).into());
    }
    Ok(())
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// `key=value` filter flags into the API's JSON form.
pub fn filters_json(filters: &[String]) -> Result<Option<String>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value)"))?;
        m.entry(k.trim().to_lowercase())
            .or_default()
            .push(v.to_string());
    }
    Ok(Some(serde_json::to_string(&m)?))
}

/// Asks y/N on the terminal.
/// `TITLE` and one line per name, or nothing when no name was deleted (what a prune
/// prints of one kind of object).
pub fn deleted_list(title: &str, names: &serde_json::Value) -> String {
    let names: Vec<&str> = names
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return String::new();
    }
    let mut out = format!("{title}\n");
    for n in names {
        out.push_str(n);
        out.push('\n');
    }
    out
}

/// Prints a prune's report as docker does: the list and an empty line when something was
/// deleted, then the space reclaimed (for the kinds that count it).
pub fn print_pruned(out: &str, space: Option<i64>) {
    if !out.is_empty() {
        println!("{out}");
    }
    if let Some(s) = space {
        println!("Total reclaimed space: {}", crate::format::human_size(s));
    }
}

pub fn confirm(prompt: &str) -> bool {
    use std::io::Write;
    eprint!("{prompt} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "Yes")
}

/// Runs `f` on each name, printing each failure as it comes; fails (exit 1) at the end
/// if any did, as docker's multi-object commands do.
pub async fn for_each_name<F, Fut>(names: &[String], mut f: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failed = false;
    for n in names {
        if let Err(e) = f(n.clone()).await {
            eprintln!("{e}");
            failed = true;
        }
    }
    if failed {
        return Err(crate::Exit(1).into());
    }
    Ok(())
}
