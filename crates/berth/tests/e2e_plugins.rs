#![allow(clippy::unwrap_used)]
//! Managed plugins through the docker CLI and the API: `plugin install` from a registry
//! of the test's own (the privileges asked first, then granted or refused), `plugin
//! create` from a directory, `ls`, `inspect`, `set`, `rm`; `enable` refused with a clear
//! error; a plugin is no image and an image no plugin; bad directories refused with
//! nothing left behind.

mod common;
use common::*;

fn plugin_dirs(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.data_root().join("plugins"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn plugins_install_create_set_and_remove() {
    let Some(d) = daemon_with_busybox("plugins_install_create_set_and_remove") else {
        return;
    };
    let reg = tempfile::tempdir().unwrap();
    let (mut registry, port) = berth_registry(reg.path(), &[]);
    push_plugin(
        port,
        "test/sshfs",
        "1",
        sshfs_like_plugin_config(),
        &[("docker-volume-sshfs", b"#!/bin/sh\necho sshfs\n")],
    );
    let remote = format!("127.0.0.1:{port}/test/sshfs:1");

    // the privileges it asks for, as `plugin install` shows them first
    let r = d.request("GET", &format!("/plugins/privileges?remote={remote}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let asked = r.json();
    let names: Vec<&str> = asked
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["network", "mount", "device", "capabilities"]);
    assert_eq!(asked[3]["Value"], serde_json::json!(["CAP_SYS_ADMIN"]));

    // a pull that grants less is refused, and leaves nothing
    let r = d.request(
        "POST",
        &format!("/plugins/pull?remote={remote}&name=api/sshfs"),
        Some(b"[]"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(plugin_dirs(&d).is_empty());
    let body = serde_json::to_vec(&asked).unwrap();
    let r = d.request(
        "POST",
        &format!("/plugins/pull?remote={remote}&name=api/sshfs"),
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let p = d.get_json("/plugins/api/sshfs/json");
    assert_eq!(p["Name"], "api/sshfs:latest");
    assert_eq!(p["Enabled"], false);
    assert_eq!(
        p["Config"]["Entrypoint"],
        serde_json::json!(["/docker-volume-sshfs"])
    );
    assert_eq!(p["Settings"]["Env"], serde_json::json!(["DEBUG=0"]));
    // its layer is unpacked where it lives
    let id = p["Id"].as_str().unwrap();
    let script = d
        .data_root()
        .join("plugins")
        .join(id)
        .join("rootfs/docker-volume-sshfs");
    assert_eq!(
        std::fs::read_to_string(script).unwrap(),
        "#!/bin/sh\necho sshfs\n"
    );
    // a plugin is no image
    let out = d.berth(&["pull", &remote]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("(plugin) when fetching"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.request("DELETE", "/plugins/api/sshfs", None).status, 200);

    for cli in clis() {
        if cli != "docker" {
            continue; // berth's CLI has no plugin commands
        }
        let name = "cli/sshfs:1";
        ok(d.docker(&[
            "plugin",
            "install",
            "--grant-all-permissions",
            "--disable",
            "--alias",
            name,
            &remote,
        ]));
        let ls = ok(d.docker(&["plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"]));
        assert_eq!(ls, format!("{name} false\n"));
        // without --disable the CLI enables it after the pull, which berthd refuses
        let out = d.docker(&["plugin", "install", "--grant-all-permissions", &remote]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("does not run managed plugins"),
            "{}",
            stderr(&out)
        );
        ok(d.docker(&["plugin", "rm", &remote]));
        let out = d.docker(&[
            "plugin",
            "install",
            "--grant-all-permissions",
            "--alias",
            name,
            &remote,
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
        ok(d.docker(&["plugin", "set", name, "DEBUG=1", "state.source=/srv"]));
        let got = ok(d.docker(&[
            "plugin",
            "inspect",
            "-f",
            "{{.Settings.Env}} {{(index .Settings.Mounts 0).Source}} {{.PluginReference}}",
            name,
        ]));
        assert_eq!(
            got,
            format!("[DEBUG=1] /srv 127.0.0.1:{port}/test/sshfs:1\n")
        );
        let out = d.docker(&["plugin", "set", name, "state.destination=/x"]);
        assert!(!out.status.success());
        let out = d.docker(&["plugin", "enable", name]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("does not run managed plugins"),
            "{}",
            stderr(&out)
        );
        ok(d.docker(&["plugin", "rm", name]));

        // made from a directory
        let dir = d.dir.path().join("dummy");
        std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        std::fs::write(dir.join("rootfs/bin/dummy"), "x").unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"description": "a dummy", "entrypoint": ["/bin/dummy"],
                "interface": {"types": ["docker.volumedriver/1.0"], "socket": "dummy.sock"},
                "env": [{"name": "LEVEL", "settable": ["value"], "value": "1"}]}"#,
        )
        .unwrap();
        ok(d.docker(&["plugin", "create", "made/dummy", dir.to_str().unwrap()]));
        let p = d.get_json("/plugins/made/dummy:latest/json");
        assert_eq!(p["Config"]["Entrypoint"], serde_json::json!(["/bin/dummy"]));
        assert_eq!(p["Config"]["Description"], "a dummy");
        assert_eq!(
            p["Config"]["rootfs"]["diff_ids"].as_array().unwrap().len(),
            1
        );
        let filtered = ok(d.docker(&[
            "plugin",
            "ls",
            "--filter",
            "capability=volumedriver",
            "--format",
            "{{.Name}}",
        ]));
        assert_eq!(filtered, "made/dummy:latest\n");
        let out = d.docker(&["plugin", "create", "made/dummy", dir.to_str().unwrap()]);
        assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
        // bad directories: no config.json, a config without a socket
        let bad = d.dir.path().join("bad");
        std::fs::create_dir_all(bad.join("rootfs")).unwrap();
        let out = d.docker(&["plugin", "create", "made/bad", bad.to_str().unwrap()]);
        assert!(!out.status.success());
        std::fs::write(bad.join("config.json"), r#"{"entrypoint": ["/x"]}"#).unwrap();
        let out = d.docker(&["plugin", "create", "made/bad", bad.to_str().unwrap()]);
        assert!(
            stderr(&out).contains("interface.socket"),
            "{}",
            stderr(&out)
        );
        ok(d.docker(&["plugin", "rm", "made/dummy"]));
    }
    // an image is no plugin
    ok(d.berth(&["tag", "bb", &format!("127.0.0.1:{port}/img:1")]));
    ok(d.berth(&["push", &format!("127.0.0.1:{port}/img:1")]));
    let r = d.request(
        "GET",
        &format!("/plugins/privileges?remote=127.0.0.1:{port}/img:1"),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("is not a plugin"), "{}", r.text());
    assert_eq!(d.request("GET", "/plugins/nope/json", None).status, 404);
    assert!(plugin_dirs(&d).is_empty(), "{:?}", plugin_dirs(&d));
    let _ = registry.kill();
    let _ = registry.wait();
}
