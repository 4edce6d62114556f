#![allow(clippy::unwrap_used)]
//! What Docker Engine's own integration suite holds dockerd to, as tests of ours (the
//! suite itself runs in `e2e_moby.rs`): `null` for optional values, malformed JSON bodies
//! refused in Go's words before any lookup, an error that reaches a client still sending
//! its body, old API versions.

mod common;
use common::*;
use std::io::{Read, Write};

/// A tar holding one Dockerfile.
fn dockerfile_tar(text: &str) -> Vec<u8> {
    one_file_tar("Dockerfile", text.as_bytes())
}

/// `POST /build` (with the query in `path`) of a context tar.
fn build(d: &Daemon, path: &str, ctx: &[u8]) -> Resp {
    d.try_request(
        "POST",
        path,
        &[("Content-Type", "application/x-tar")],
        Some(ctx),
    )
    .unwrap()
}

#[test]
fn null_means_not_given() {
    let Some(d) = daemon_with_busybox("null_means_not_given") else {
        return;
    };
    // Docker's Go client sends every optional map and list of a build as `null`
    let ctx = dockerfile_tar("FROM bb\nLABEL a=b\n");
    let r = build(
        &d,
        "/build?t=nulls:1&buildargs=null&labels=null&cachefrom=null&ulimits=null",
        &ctx,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("errorDetail"), "{}", r.text());
    let img = d.get_json("/images/nulls:1/json");
    assert_eq!(img["Config"]["Labels"]["a"], "b");
    // and ulimits given reach the RUN containers
    let ctx = dockerfile_tar("FROM bb\nRUN ulimit -n > /n\n");
    let q = "/build?t=lim:1&ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22Soft%22%3A512%2C%22Hard%22%3A512%7D%5D";
    let r = build(&d, q, &ctx);
    assert_eq!(r.status, 200, "{}", r.text());
    let out = d.berth(&["run", "--rm", "lim:1", "cat", "/n"]);
    assert_eq!(stdout(&out).trim(), "512", "{}", stderr(&out));
}

#[test]
fn a_refusal_reaches_a_client_still_sending() {
    if skip_unless_root("a_refusal_reaches_a_client_still_sending") {
        return;
    }
    let d = Daemon::start();
    // a parameter refused before the body is read; the client sends its 8 MiB anyway
    let body = vec![0u8; 8 << 20];
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "POST /build?buildargs=%5B HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    for chunk in body.chunks(64 << 10) {
        s.write_all(chunk)
            .expect("berthd stopped reading a body it had refused");
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let r = parse_response(&raw, false).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("invalid buildargs parameter"),
        "{}",
        r.text()
    );
}

#[test]
fn malformed_json_in_gos_words_before_any_lookup() {
    if skip_unless_root("malformed_json_in_gos_words_before_any_lookup") {
        return;
    }
    let d = Daemon::start();
    let json = [("Content-Type", "application/json")];
    // the objects named do not exist: the body is judged first, as dockerd does
    for route in [
        "/containers/create",
        "/containers/nosuch/exec",
        "/containers/nosuch/update",
        "/exec/nosuch/start",
        "/networks/create",
        "/networks/nosuch/connect",
        "/networks/nosuch/disconnect",
        "/volumes/create",
    ] {
        let path = route.to_string();
        for (body, want) in [
            (
                &b"{invalid json"[..],
                "invalid character 'i' looking for beginning of object key string",
            ),
            (b"", "got EOF while reading request body"),
            (
                b"{\"Name\": \"x\",}",
                "invalid character '}' looking for beginning of object key string",
            ),
            (b"{\"a\":1} {\"b\":2}", "unexpected content after JSON"),
            (b"{\"a\":", "unexpected EOF"),
        ] {
            let r = d.try_request("POST", &path, &json, Some(body)).unwrap();
            assert_eq!(r.status, 400, "{path} {:?}: {}", body, r.text());
            assert!(
                r.json()["message"].as_str().unwrap().contains(want),
                "{path} {:?}: {}",
                String::from_utf8_lossy(body),
                r.text()
            );
        }
        let r = d
            .try_request(
                "POST",
                &path,
                &[("Content-Type", "text/plain")],
                Some(b"{}"),
            )
            .unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(
            r.json()["message"],
            "Content-Type specified (text/plain) must be 'application/json'"
        );
    }
    // with valid bodies the lookups answer as before
    let r = d
        .try_request(
            "POST",
            "/containers/nosuch/exec",
            &json,
            Some(br#"{"Cmd":["true"]}"#),
        )
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let r = d
        .try_request(
            "POST",
            "/networks/nosuch/connect",
            &json,
            Some(br#"{"Container":"x"}"#),
        )
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    // the legacy copy route is gone from API 1.24 on (an empty 404, as dockerd)
    let r = d
        .try_request("POST", "/containers/nosuch/copy", &json, Some(b"{invalid"))
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty(), "{}", r.text());
}

/// A POST with a JSON body.
fn post(d: &Daemon, path: &str, body: &serde_json::Value) -> Resp {
    d.try_request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
    .unwrap()
}

/// Creates a container from a create request; its ID.
fn create(d: &Daemon, path: &str, body: serde_json::Value) -> String {
    let r = post(d, path, &body);
    assert_eq!(r.status, 201, "{path}: {}", r.text());
    r.json()["Id"].as_str().unwrap().to_string()
}

#[test]
fn old_api_versions_as_dockerd_served_them() {
    if skip_unless_root("old_api_versions_as_dockerd_served_them") {
        return;
    }
    // the floor is 1.24 unless DOCKER_MIN_API_VERSION lowers it, as Docker 25+
    let d = Daemon::start_wrapped_with(&["env", "DOCKER_MIN_API_VERSION=1.12"], &[]);
    d.import(&busybox_tar(), "bb:latest");
    assert_eq!(d.get_json("/version")["MinAPIVersion"], "1.12");
    let id = create(
        &d,
        "/v1.19/containers/create",
        serde_json::json!({"Image": "bb", "Cmd": ["true"], "HostConfig": {"CpusetCpus": "0", "Binds": ["/tmp:/host-tmp:ro"]}}),
    );
    // 1.19: killing a stopped container is no error; later it is
    let r = d.request("POST", &format!("/v1.19/containers/{id}/kill"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.request("POST", &format!("/v1.20/containers/{id}/kill"), None);
    assert_eq!(r.status, 409, "{}", r.text());
    // 1.19's inspect: resources in Config, volumes as Volumes/VolumesRW
    let old = d.get_json(&format!("/v1.19/containers/{id}/json"));
    assert_eq!(old["Config"]["Cpuset"], "0");
    assert_eq!(old["Volumes"]["/host-tmp"], "/tmp");
    assert_eq!(old["VolumesRW"]["/host-tmp"], false);
    assert!(old.get("Mounts").is_none());
    let new = d.get_json(&format!("/containers/{id}/json"));
    assert!(new["Config"].get("Cpuset").is_none());
    assert_eq!(new["Mounts"][0]["Destination"], "/host-tmp");
    // info before 1.25
    let info = d.get_json("/v1.20/info");
    assert_eq!(info["ExecutionDriver"], "<not supported>");
    assert!(d.get_json("/info").get("ExecutionDriver").is_none());
    // clients before 1.40 got shareable IPC by default, later ones private
    let ipc = |path: &str| {
        let id = create(
            &d,
            path,
            serde_json::json!({"Image": "bb", "Cmd": ["true"]}),
        );
        d.get_json(&format!("/containers/{id}/json"))["HostConfig"]["IpcMode"].clone()
    };
    assert_eq!(ipc("/v1.39/containers/create"), "shareable");
    assert_eq!(ipc("/v1.41/containers/create"), "private");
    // PidsLimit in an update came with 1.40
    let id = create(
        &d,
        "/containers/create",
        serde_json::json!({"Image": "bb", "Cmd": ["sleep", "60"], "HostConfig": {"PidsLimit": 32, "NetworkMode": "none"}}),
    );
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), None)
            .status,
        204
    );
    let limit = |d: &Daemon| {
        d.get_json(&format!("/containers/{id}/json"))["HostConfig"]["PidsLimit"].clone()
    };
    let r = post(
        &d,
        &format!("/v1.39/containers/{id}/update"),
        &serde_json::json!({"PidsLimit": 16}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(limit(&d), 32);
    // 0 and any negative value take the limit away, recorded as 0
    let r = post(
        &d,
        &format!("/containers/{id}/update"),
        &serde_json::json!({"PidsLimit": -1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(limit(&d), 0);
    let out = ok(d.berth(&["exec", &id, "cat", "/sys/fs/cgroup/pids/pids.max"]));
    assert_eq!(out.trim(), "max");
    ok(d.berth(&["rm", "-f", &id]));
    // the same daemon without the variable refuses them
    let d2 = Daemon::start();
    let r = d2.request("GET", "/v1.19/version", None);
    assert_eq!(r.status, 400);
}

#[test]
fn container_semantics_of_the_engine_suite() {
    let Some(d) = daemon_with_busybox("container_semantics_of_the_engine_suite") else {
        return;
    };
    for cli in clis() {
        let name = format!("same-{}", cli.len());
        ok(d.cli(
            &cli,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "none",
                "bb",
                "sleep",
                "60",
            ],
        ));
        // a rename to the same name, a removal without force
        let out = d.cli(&cli, &["rename", &name, &name]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("Renaming a container with the same name as its current name"),
            "{cli}: {}",
            stderr(&out)
        );
        let out = d.cli(&cli, &["rm", &name]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("container is running"),
            "{cli}: {}",
            stderr(&out)
        );
        // a resize without a tty has nothing to do, and is no error
        ok(d.cli(
            &cli,
            &["container", "update", "--cpu-quota", "10000", &name],
        ));
        let q = ok(d.berth(&["exec", &name, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"]));
        assert_eq!(q.trim(), "10000");
        ok(d.cli(&cli, &["container", "update", "--cpu-quota", "-1", &name]));
        let q = ok(d.berth(&["exec", &name, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"]));
        assert_eq!(q.trim(), "-1", "{cli}");
        ok(d.cli(&cli, &["rm", "-f", &name]));
    }
    // an old client hears dockerd 20.10's words for the refused removal
    let id = create(
        &d,
        "/containers/create",
        serde_json::json!({"Image": "bb", "Cmd": ["sleep", "60"], "HostConfig": {"NetworkMode": "none"}}),
    );
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), None)
            .status,
        204
    );
    let r = d.request("DELETE", &format!("/v1.41/containers/{id}"), None);
    assert_eq!(r.status, 409);
    assert!(
        r.text().contains("You cannot remove a running container"),
        "{}",
        r.text()
    );
    // a resize without a tty has nothing to do, and is no error
    let r = d.request("POST", &format!("/containers/{id}/resize?h=40&w=40"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    // unprivileged ports and ICMP echo sockets, as dockerd sets them up
    let out = ok(d.berth(&[
        "exec",
        "-u",
        "1000:1000",
        &id,
        "cat",
        "/proc/sys/net/ipv4/ping_group_range",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "2147483647", "0"]
    );
    ok(d.berth(&["rm", "-f", &id]));
    // stop -t -1 waits for the process, however long it takes
    let id = create(
        &d,
        "/containers/create",
        serde_json::json!({"Image": "bb", "Cmd": ["sh", "-c", "sleep 2 && exit 42"], "HostConfig": {"NetworkMode": "none"}}),
    );
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), None)
            .status,
        204
    );
    let r = d.request("POST", &format!("/containers/{id}/stop?t=-1"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let st = d.get_json(&format!("/containers/{id}/json"))["State"].clone();
    assert_eq!(st["ExitCode"], 42, "{st}");
    // legacy links are kept by ID and shown as dockerd shows them
    ok(d.berth(&["run", "-d", "--name", "la", "bb", "sleep", "60"]));
    ok(d.berth(&[
        "run", "-d", "--name", "lb", "--link", "la", "bb", "sleep", "60",
    ]));
    ok(d.berth(&["rename", "la", "la1"]));
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "la",
        "--network",
        "none",
        "bb",
        "sleep",
        "60",
    ]));
    let links = &d.get_json("/containers/lb/json")["HostConfig"]["Links"];
    assert_eq!(links, &serde_json::json!(["/la1:/lb/la"]));
    ok(d.berth(&["rm", "-f", "la", "la1", "lb"]));
    // create-time checks: env names, --volumes-from, tmpfs over an image volume,
    // masked and read-only paths written down, platforms
    for env in ["", "=", "=foo"] {
        let r = post(
            &d,
            "/containers/create",
            &serde_json::json!({"Image": "bb", "Env": [env]}),
        );
        assert_eq!(r.status, 400, "{env:?}: {}", r.text());
        assert!(
            r.text().contains("invalid environment variable"),
            "{}",
            r.text()
        );
    }
    let r = post(
        &d,
        "/containers/create",
        &serde_json::json!({"Image": "bb", "HostConfig": {"VolumesFrom": ["nosuch"]}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let id = create(
        &d,
        "/containers/create",
        serde_json::json!({"Image": "bb", "Volumes": {"/foo": {}}, "HostConfig": {"Tmpfs": {"/foo": ""}, "NetworkMode": "none"},
            "Cmd": ["sh", "-c", "mount | grep ' /foo ' | grep -q tmpfs"]}),
    );
    let v = d.get_json(&format!("/containers/{id}/json"));
    assert_eq!(v["Mounts"], serde_json::json!([]));
    assert!(v["HostConfig"]["MaskedPaths"].as_array().unwrap().len() > 5);
    assert_eq!(v["HostConfig"]["ReadonlyPaths"][0], "/proc/bus");
    let out = ok(d.berth(&["start", "-a", &id]));
    let _ = out;
    assert_eq!(
        d.get_json(&format!("/containers/{id}/json"))["State"]["ExitCode"],
        0
    );
    let id = create(
        &d,
        "/containers/create",
        serde_json::json!({"Image": "bb", "HostConfig": {"MaskedPaths": []}}),
    );
    let v = d.get_json(&format!("/containers/{id}/json"));
    assert_eq!(v["HostConfig"]["MaskedPaths"], serde_json::json!([]));
    let body = serde_json::json!({"Image": "bb"});
    let r = post(
        &d,
        "/containers/create?platform=linux/amd64DifferentArch",
        &body,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("does not match the specified platform"),
        "{}",
        r.text()
    );
    let r = post(&d, "/containers/create?platform=foobar", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("unknown operating system or architecture"),
        "{}",
        r.text()
    );
}

#[test]
fn files_images_builds_and_sessions_of_the_engine_suite() {
    let Some(d) = daemon_with_busybox("files_images_builds_and_sessions_of_the_engine_suite")
    else {
        return;
    };
    ok(d.berth(&["create", "--name", "fc", "bb", "true"]));
    // the root's archive names its entries `/`, `/NAME`
    let r = d.request("GET", "/containers/fc/archive?path=/", None);
    assert_eq!(r.status, 200);
    let mut ar = tar::Archive::new(&r.body[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect();
    assert_eq!(names[0], "/", "{names:?}");
    assert!(names.contains(&"/bin/busybox".to_string()), "{names:?}");
    // a path through a file that is no directory
    let r = d.request("GET", "/containers/fc/archive?path=/etc/passwd/", None);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("not a directory"), "{}", r.text());
    let out_dir = tempfile::tempdir().unwrap();
    for cli in clis() {
        let dest = out_dir.path().join(format!("root-{}", cli.len()));
        ok(d.cli(&cli, &["cp", "fc:/", dest.to_str().unwrap()]));
        assert!(dest.join("bin/busybox").exists(), "{cli}");
    }
    // `cp -L` of a dangling link fails, as with dockerd (its stat names where it leads)
    ok(d.berth(&[
        "run",
        "--name",
        "dl",
        "--network",
        "none",
        "bb",
        "ln",
        "-s",
        "notexist",
        "/dangling",
    ]));
    let st = d.request("HEAD", "/containers/dl/archive?path=/dangling", None);
    let stat = st
        .header("X-Docker-Container-Path-Stat")
        .unwrap()
        .to_string();
    use base64::Engine;
    let stat: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(stat)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stat["linkTarget"], "/notexist");
    for cli in clis() {
        let dest = out_dir.path().join(format!("dl-{}", cli.len()));
        let out = d.cli(&cli, &["cp", "-L", "dl:/dangling", dest.to_str().unwrap()]);
        assert!(!out.status.success(), "{cli}: {}", stdout(&out));
        assert!(!dest.exists(), "{cli}: copied something");
        // without -L the link itself
        ok(d.cli(&cli, &["cp", "dl:/dangling", dest.to_str().unwrap()]));
        assert_eq!(
            std::fs::read_link(&dest).unwrap(),
            std::path::Path::new("notexist")
        );
    }
    // commit: changes expand the config's variables
    let c1 = ok(d.berth(&["commit", "-c", "ENV PATH=/bin", "fc", "envs:1"]));
    let _ = c1;
    ok(d.berth(&["create", "--name", "fc2", "envs:1", "true"]));
    ok(d.berth(&["commit", "-c", "ENV PATH=/usr/bin:$PATH", "fc2", "envs:2"]));
    let env = &d.get_json("/images/envs:2/json")["Config"]["Env"];
    assert_eq!(env, &serde_json::json!(["PATH=/usr/bin:/bin"]));
    // a tag that would read as a digest, an unknown platform
    let r = d.request("POST", "/images/bb/tag?repo=sha256&tag=sometag", None);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("ambiguous tag using digest algorithm"),
        "{}",
        r.text()
    );
    let r = d.request(
        "POST",
        "/images/create?fromImage=localhost:9/x&tag=1&platform=foobar",
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("unknown operating system or architecture"),
        "{}",
        r.text()
    );
    // builds: empty Dockerfiles, every stage of a classic build named by an aux ID
    for (text, want) in [
        ("", "the Dockerfile (Dockerfile) cannot be empty"),
        ("\n\n   \n", "file with no instructions"),
        ("# a comment\n", "file with no instructions"),
    ] {
        let r = build(&d, "/build", &dockerfile_tar(text));
        assert!(r.text().contains(want), "{text:?}: {}", r.text());
    }
    let ctx = dockerfile_tar(
        "FROM bb AS s1\nONBUILD RUN echo foo > /somefile\nONBUILD ENV bar=baz\nFROM s1\nRUN cat /somefile\nFROM s1\nRUN cat /somefile\n",
    );
    let r = build(&d, "/build", &ctx);
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["aux"]["ID"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 3, "{}", r.text());
    let last = d.get_json(&format!("/images/{}/json", ids[2]));
    assert!(last["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&"bar=baz".into()));
    let r = build(&d, "/build?platform=foobar", &ctx);
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("unknown operating system or architecture"),
        "{}",
        r.text()
    );
    // a session without an upgrade, or with another one
    let r = d.request("POST", "/session", None);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no upgrade"), "{}", r.text());
    let r = d
        .try_request("POST", "/session", &[("Upgrade", "foo")], None)
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not supported"), "{}", r.text());
}
