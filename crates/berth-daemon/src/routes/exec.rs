//! `/containers/{id}/exec` and `/exec/{id}/…`.

use super::streams::{detach_scanner, splice, upgraded};
use super::Ctx;
use crate::error::{EngineError, Kind};
use crate::http::{json, ok_json, status_only, Resp};
use crate::model::{Exec, ExecSpec};
use crate::shimctl::call;
use crate::Daemon;
use http::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// `POST /containers/{id}/exec`.
pub fn create(
    d: &Arc<Daemon>,
    mut body: serde_json::Value,
    c: &Arc<crate::model::Ctr>,
) -> Result<Resp, EngineError> {
    if !body.is_object() {
        return Err(EngineError::invalid("exec config must be a JSON object"));
    }
    // dockerd decodes field names in any case (docker-py sends `detachKeys`)
    crate::http::canonical_keys(
        &mut body,
        &[
            "User",
            "Privileged",
            "Tty",
            "ConsoleSize",
            "AttachStdin",
            "AttachStderr",
            "AttachStdout",
            "Detach",
            "DetachKeys",
            "Env",
            "WorkingDir",
            "Cmd",
        ],
    );
    let id = d.containers.create_exec(c, exec_spec(&body), &d.events)?;
    Ok(json(StatusCode::CREATED, &json!({"Id": id})))
}

/// An exec's create body (keys made canonical) as the engine's `ExecSpec`. A `Cmd`
/// that is not a list of strings is no command, an `Env` entry that is not a string an
/// empty one: the engine refuses both, after it has looked at the container.
fn exec_spec(body: &Value) -> ExecSpec {
    let flag = |k: &str| body[k].as_bool().unwrap_or(false);
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let cmd = body["Cmd"]
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let env = body["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    ExecSpec {
        cmd,
        env,
        user: text("User"),
        working_dir: text("WorkingDir"),
        tty: flag("Tty"),
        privileged: flag("Privileged"),
        attach_stdin: flag("AttachStdin"),
        attach_stdout: flag("AttachStdout"),
        attach_stderr: flag("AttachStderr"),
        detach_keys: body["DetachKeys"].as_str().map(String::from),
    }
}

/// `GET /exec/{id}/json`.
fn exec_json(e: &Exec) -> Value {
    let st = e.state.borrow().clone();
    let s = &e.spec;
    json!({
        "CanRemove": false,
        "ContainerID": e.container.id,
        "DetachKeys": s.detach_keys.clone().unwrap_or_default(),
        "ExitCode": st.exit_code,
        "ID": e.id,
        "OpenStderr": s.attach_stderr,
        "OpenStdin": s.attach_stdin,
        "OpenStdout": s.attach_stdout,
        "ProcessConfig": {
            "arguments": s.cmd.iter().skip(1).collect::<Vec<_>>(),
            "entrypoint": s.cmd.first().cloned().unwrap_or_default(),
            "privileged": s.privileged,
            "tty": s.tty,
            "user": s.user,
        },
        "Running": st.running,
        "Pid": st.pid,
    })
}

pub async fn route(d: &Arc<Daemon>, mut ctx: Ctx, rest: &str) -> Result<Resp, EngineError> {
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    // start's body is read (and refused if it is not JSON) before the lookup, as dockerd
    let body = match (&ctx.method, action) {
        (&Method::POST, "start") => ctx.json_required().await?,
        _ => serde_json::Value::Null,
    };
    let e = d.containers.execs.get(id)?;
    match (ctx.method.clone(), action) {
        (Method::GET, "json") => Ok(ok_json(&exec_json(&e))),
        (Method::POST, "resize") => {
            let h = ctx.query.int("h")?.unwrap_or(0);
            let w = ctx.query.int("w")?.unwrap_or(0);
            if !e.state.borrow().running {
                return Err(EngineError::conflict(format!(
                    "Exec {} is not running",
                    e.id
                )));
            }
            call(&d.containers.exec_socket(&e), &format!("resize {h} {w}")).await?;
            Ok(status_only(StatusCode::OK))
        }
        (Method::POST, "start") => start(d, &mut ctx, body, e).await,
        _ => Err(EngineError::not_found("page not found")),
    }
}

/// `POST /exec/{id}/start`: detached, or attached over the upgraded connection.
async fn start(
    d: &Arc<Daemon>,
    ctx: &mut Ctx,
    body: serde_json::Value,
    e: Arc<crate::model::Exec>,
) -> Result<Resp, EngineError> {
    let detach = body["Detach"].as_bool().unwrap_or(false);
    let size: Option<(i64, i64)> = body["ConsoleSize"]
        .as_array()
        .and_then(|a| Some((a.first()?.as_i64()?, a.get(1)?.as_i64()?)));
    let prepared = d.containers.prepare_exec(&e).await;
    if detach {
        prepared?;
        d.containers.run_exec(&e, &d.events).await?;
        return Ok(status_only(StatusCode::OK));
    }
    // refusals come back as HTTP errors; a failure to run the process goes into the
    // stream, where the client shows it, and the exit code says it
    if let Err(err) = &prepared {
        if matches!(err.kind, Kind::Conflict | Kind::NotFound) {
            return Err(EngineError::new(err.kind, err.message.clone()));
        }
    }
    let Some(upgrade) = ctx.upgrade.take() else {
        return Err(EngineError::invalid(
            "exec start needs an upgraded connection (Upgrade: tcp)",
        ));
    };
    // the process's tty, and how the stream is framed: as dockerd, the start request's
    // `Tty` decides the framing (docker-py starts a tty exec with `Tty: false` and reads
    // frames)
    let tty = e.spec.tty;
    let raw = body["Tty"].as_bool().unwrap_or(tty);

    let (stdin, stdout, stderr) = (
        e.spec.attach_stdin,
        e.spec.attach_stdout,
        e.spec.attach_stderr,
    );
    let mut flags = Vec::new();
    for (on, name) in [(stdin, "stdin"), (stdout, "stdout"), (stderr, "stderr")] {
        if on {
            flags.push(name);
        }
    }
    if raw != tty {
        flags.push(if raw { "raw" } else { "framed" });
    }
    // as Docker: the end of the client's input closes the process's, without a tty only
    let stdin_once = stdin && !tty;
    if stdin_once {
        flags.push("once");
    }
    let scanner = detach_scanner(e.spec.detach_keys.as_deref(), tty, stdin)?;
    let d = d.clone();
    tokio::spawn(async move {
        let sock = d.containers.exec_socket(&e);
        let Ok(up) = upgrade.await else {
            if prepared.is_ok() {
                let _ = call(&sock, "abort").await;
            }
            return;
        };
        let mut client = TokioIo::new(up);
        let fail = |msg: String| {
            let text = format!("{msg}\r\n");
            if raw {
                text.into_bytes()
            } else {
                berth_runtime::shim::frame(1, text.as_bytes())
            }
        };
        if let Err(err) = prepared {
            let _ = client.write_all(&fail(err.message)).await;
            let _ = client.shutdown().await;
            return;
        }
        let Some(shim) = crate::shimctl::attach(&sock, &flags).await else {
            let _ = call(&sock, "abort").await;
            let _ = client.shutdown().await;
            return;
        };
        if let Err(err) = d.containers.run_exec(&e, &d.events).await {
            let _ = client.write_all(&fail(err.message)).await;
            let _ = client.shutdown().await;
            return;
        }
        if let (true, Some((h, w))) = (tty, size) {
            let _ = call(&sock, &format!("resize {h} {w}")).await;
        }
        let mut st = e.state.subscribe();
        splice(client, shim, stdin, stdin_once, scanner, async {
            // the exit code is in place before the client, done reading, asks for it
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                st.wait_for(|s| s.exit_code.is_some()),
            )
            .await;
        })
        .await;
    });
    Ok(upgraded(raw))
}
