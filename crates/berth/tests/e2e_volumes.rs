#![allow(clippy::unwrap_used)]
//! Volumes and mounts end to end, through berth's CLI and the docker CLI: named volumes
//! that outlive containers, `:ro`, binds, tmpfs, anonymous volumes (`-v /path`, image
//! VOLUMEs) and `rm -v`, copy-up from the image, `--volumes-from`, local driver options
//! (tmpfs, bind), `--mount` with Docker's syntax and errors, and the refused escapes.

mod common;
use common::*;

fn sh(d: &Daemon, bin: &str, args: &[&str]) -> String {
    ok(d.cli(bin, args))
}

fn run(d: &Daemon, bin: &str, mounts: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(mounts);
    args.extend_from_slice(&["bb", "sh", "-c", script]);
    d.cli(bin, &args)
}

#[test]
fn named_bind_tmpfs_and_anonymous_volumes() {
    let Some(d) = daemon_with_busybox("named_bind_tmpfs_and_anonymous_volumes") else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let hp = host.path().display().to_string();
    for (i, bin) in clis().iter().enumerate() {
        let vol = format!("data{i}");
        // a named volume outlives the container that wrote it
        assert_eq!(
            sh(&d, bin, &["volume", "create", "--label", "k=v", &vol]).trim(),
            vol
        );
        ok(run(
            &d,
            bin,
            &["-v", &format!("{vol}:/d")],
            "echo kept > /d/f",
        ));
        let out = ok(run(&d, bin, &["-v", &format!("{vol}:/d")], "cat /d/f"));
        assert_eq!(out.trim(), "kept", "{bin}");
        let v = d.get_json(&format!("/volumes/{vol}"));
        assert_eq!(v["Labels"]["k"], "v");
        assert_eq!(v["Driver"], "local");
        let mp = v["Mountpoint"].as_str().unwrap().to_string();
        assert_eq!(
            std::fs::read_to_string(format!("{mp}/f")).unwrap().trim(),
            "kept"
        );
        let ls = sh(
            &d,
            bin,
            &["volume", "ls", "--format", "{{.Name}} {{.Driver}}"],
        );
        assert!(
            ls.lines().any(|l| l == format!("{vol} local")),
            "{bin}: {ls}"
        );
        // :ro is enforced
        let out = run(&d, bin, &["-v", &format!("{vol}:/d:ro")], "echo no > /d/g");
        assert!(!out.status.success(), "{bin}: wrote to a read-only volume");
        assert!(
            stderr(&out).contains("Read-only file system"),
            "{bin}: {}",
            stderr(&out)
        );
        // in use: 409; removed with its container
        sh(
            &d,
            bin,
            &[
                "run",
                "-d",
                "--name",
                "holder",
                "--network",
                "none",
                "-v",
                &format!("{vol}:/d"),
                "bb",
                "sleep",
                "60",
            ],
        );
        let out = d.cli(bin, &["volume", "rm", &vol]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("volume is in use"),
            "{bin}: {}",
            stderr(&out)
        );
        let insp = d.get_json("/containers/holder/json");
        assert_eq!(insp["Mounts"][0]["Type"], "volume");
        assert_eq!(insp["Mounts"][0]["Name"], vol.as_str());
        assert_eq!(insp["Mounts"][0]["Destination"], "/d");
        sh(&d, bin, &["rm", "-f", "holder"]);
        sh(&d, bin, &["volume", "rm", &vol]);
        assert!(
            !std::path::Path::new(&mp).exists(),
            "{bin}: the data went with the volume"
        );
        // binds, both ways, and read-only ones
        std::fs::write(host.path().join("in"), "from-host").unwrap();
        let out = ok(run(
            &d,
            bin,
            &["-v", &format!("{hp}:/h")],
            "cat /h/in; echo from-ctr > /h/out",
        ));
        assert_eq!(out.trim(), "from-host");
        assert_eq!(
            std::fs::read_to_string(host.path().join("out"))
                .unwrap()
                .trim(),
            "from-ctr"
        );
        let out = run(
            &d,
            bin,
            &[
                "--mount",
                &format!("type=bind,source={hp},target=/h,readonly"),
            ],
            "echo x > /h/no",
        );
        assert!(!out.status.success(), "{bin}");
        // tmpfs, with a size
        let out = ok(run(
            &d,
            bin,
            &[
                "--mount",
                "type=tmpfs,target=/t,tmpfs-size=1m",
                "--tmpfs",
                "/u",
            ],
            "grep -E ' /(t|u) ' /proc/mounts",
        ));
        assert!(
            out.contains("/t tmpfs") && out.contains("size=1024k"),
            "{bin}: {out}"
        );
        assert!(out.contains("/u tmpfs"), "{bin}: {out}");
        // anonymous volumes: made for the container, gone with rm -v (and with --rm)
        sh(
            &d,
            bin,
            &[
                "run",
                "--name",
                "anon",
                "--network",
                "none",
                "-v",
                "/scratch",
                "bb",
                "sh",
                "-c",
                "echo a > /scratch/a",
            ],
        );
        let name = d.get_json("/containers/anon/json")["Mounts"][0]["Name"]
            .as_str()
            .unwrap()
            .to_string();
        let v = d.get_json(&format!("/volumes/{name}"));
        assert!(
            v["Labels"]
                .as_object()
                .unwrap()
                .contains_key("com.docker.volume.anonymous"),
            "{v}"
        );
        sh(&d, bin, &["rm", "-v", "anon"]);
        assert_eq!(
            d.request("GET", &format!("/volumes/{name}"), None).status,
            404,
            "{bin}"
        );
        let before = d.get_json("/volumes")["Volumes"].as_array().unwrap().len();
        ok(run(&d, bin, &["-v", "/scratch"], "true"));
        assert_eq!(
            d.get_json("/volumes")["Volumes"].as_array().unwrap().len(),
            before,
            "{bin}: --rm removed it"
        );
    }
    // ls filters
    ok(d.berth(&["volume", "create", "--label", "team=a", "lab1"]));
    ok(d.berth(&["volume", "create", "lab2"]));
    ok(d.berth(&[
        "create",
        "--name",
        "user2",
        "--network",
        "none",
        "-v",
        "lab2:/x",
        "bb",
        "true",
    ]));
    for bin in clis() {
        let out = sh(
            &d,
            &bin,
            &["volume", "ls", "-q", "--filter", "label=team=a"],
        );
        assert_eq!(out.trim(), "lab1", "{bin}");
        let out = sh(
            &d,
            &bin,
            &[
                "volume",
                "ls",
                "-q",
                "--filter",
                "dangling=true",
                "--filter",
                "name=lab",
            ],
        );
        assert_eq!(out.trim(), "lab1", "{bin}: lab2 is used");
    }
    ok(d.berth(&["rm", "user2"]));
    // prune: anonymous unused ones by default, named ones with -a
    ok(d.berth(&["volume", "create", "keepme"]));
    ok(d.berth(&[
        "create",
        "--name",
        "c1",
        "--network",
        "none",
        "-v",
        "/x",
        "bb",
        "true",
    ]));
    ok(d.berth(&["rm", "c1"]));
    let out = ok(d.berth(&["volume", "prune", "-f"]));
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(d.request("GET", "/volumes/keepme", None).status, 200);
    ok(d.berth(&["volume", "prune", "-a", "-f"]));
    assert_eq!(d.request("GET", "/volumes/keepme", None).status, 404);
}

#[test]
fn copy_up_volumes_from_and_driver_options() {
    let Some(d) = daemon_with_busybox("copy_up_volumes_from_and_driver_options") else {
        return;
    };
    // an image with /conf holding a file owned by 1000:1000, mode 0640, and a VOLUME
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o750, 0);
    h.set_uid(1000);
    h.set_gid(1000);
    b.append_data(&mut h, "conf/", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o640, 7);
    h.set_uid(1000);
    h.set_gid(1000);
    b.append_data(&mut h, "conf/app.cfg", &b"setting"[..])
        .unwrap();
    let layer = b.into_inner().unwrap();
    // the busybox image with conf/ added, through an import of both
    let mut all = tar::Builder::new(Vec::new());
    for tarball in [busybox_tar(), layer] {
        let mut a = tar::Archive::new(&tarball[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let path = e.path().unwrap().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            if h.entry_type() == tar::EntryType::Symlink {
                let target = e.link_name().unwrap().unwrap().into_owned();
                all.append_link(&mut h, &path, &target).unwrap();
            } else {
                all.append_data(&mut h, &path, &data[..]).unwrap();
            }
        }
    }
    let img = all.into_inner().unwrap();
    let r = d.request(
        "POST",
        "/images/create?fromSrc=-&repo=withconf&tag=1&changes=VOLUME%20%2Fconf",
        Some(&img),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for (i, bin) in clis().iter().enumerate() {
        let vol = format!("cfg{i}");
        // a new named volume over /conf gets the image's files, owners and modes
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &format!("{vol}:/conf"),
                "withconf:1",
                "sh",
                "-c",
                "cat /conf/app.cfg; echo; ls -ln /conf; ls -lnd /conf",
            ],
        );
        assert!(out.starts_with("setting"), "{bin}: {out}");
        assert!(
            out.contains("-rw-r-----") && out.contains("1000     1000"),
            "{bin}: {out}"
        );
        assert!(
            out.contains("drwxr-x---"),
            "{bin}: the volume root takes the directory's mode: {out}"
        );
        // once: what the volume holds now stays
        sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &format!("{vol}:/conf"),
                "withconf:1",
                "rm",
                "/conf/app.cfg",
            ],
        );
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &format!("{vol}:/conf"),
                "withconf:1",
                "ls",
                "/conf",
            ],
        );
        assert_eq!(out.trim(), "", "{bin}: copied only once");
        // the image's VOLUME: an anonymous volume with the files
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "withconf:1",
                "cat",
                "/conf/app.cfg",
            ],
        );
        assert_eq!(out.trim(), "setting", "{bin}");
        // nocopy
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--mount",
                &format!("src=nc{i},dst=/conf,volume-nocopy"),
                "withconf:1",
                "ls",
                "/conf",
            ],
        );
        assert_eq!(out.trim(), "", "{bin}");
        // --volumes-from
        sh(
            &d,
            bin,
            &[
                "run",
                "--name",
                &format!("src{i}"),
                "--network",
                "none",
                "-v",
                &format!("{vol}:/shared"),
                "bb",
                "sh",
                "-c",
                "echo shared > /shared/s",
            ],
        );
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--volumes-from",
                &format!("src{i}:ro"),
                "bb",
                "sh",
                "-c",
                "cat /shared/s; touch /shared/t || echo ro",
            ],
        );
        assert!(out.contains("shared") && out.contains("ro"), "{bin}: {out}");
        sh(&d, bin, &["rm", &format!("src{i}")]);
        // local driver options: a tmpfs volume, and a bind of a host directory
        sh(
            &d,
            bin,
            &[
                "volume",
                "create",
                "-o",
                "type=tmpfs",
                "-o",
                "device=tmpfs",
                "-o",
                "o=size=2m",
                &format!("tv{i}"),
            ],
        );
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &format!("tv{i}:/m"),
                "bb",
                "grep",
                " /m ",
                "/proc/mounts",
            ],
        );
        assert!(
            out.contains("tmpfs") && out.contains("size=2048k"),
            "{bin}: {out}"
        );
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("h"), "host-file").unwrap();
        sh(
            &d,
            bin,
            &[
                "volume",
                "create",
                "-o",
                "type=none",
                "-o",
                "o=bind",
                "-o",
                &format!("device={}", host.path().display()),
                &format!("bv{i}"),
            ],
        );
        let out = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &format!("bv{i}:/m"),
                "bb",
                "cat",
                "/m/h",
            ],
        );
        assert_eq!(out.trim(), "host-file", "{bin}");
        for v in [vol, format!("nc{i}"), format!("tv{i}"), format!("bv{i}")] {
            sh(&d, bin, &["volume", "rm", &v]);
        }
        assert_eq!(
            std::fs::read_to_string(host.path().join("h")).unwrap(),
            "host-file",
            "the bound directory stays"
        );
    }
}

#[test]
fn bad_mounts_and_escapes_are_refused() {
    let Some(d) = daemon_with_busybox("bad_mounts_and_escapes_are_refused") else {
        return;
    };
    for bin in clis() {
        // the flag's own errors (exit 125, the docker CLI's words)
        for (m, says) in [
            ("type=bind,source=/tmp", "target is required"),
            (
                "type=bind,target=/b,bogus=1",
                "unexpected key 'bogus' in 'bogus=1'",
            ),
            (
                "type=volume,target=/b,bind-propagation=shared",
                "cannot mix 'bind-*' options with mount type 'volume'",
            ),
        ] {
            let out = d.cli(&bin, &["run", "--rm", "--mount", m, "bb", "true"]);
            assert_eq!(out.status.code(), Some(125), "{bin} {m}");
            assert!(stderr(&out).contains(says), "{bin} {m}: {}", stderr(&out));
        }
        // the daemon's
        for (args, says) in [
            (
                vec!["--mount", "type=bind,source=/nonexistent-berth,target=/b"],
                "bind source path does not exist: /nonexistent-berth",
            ),
            (
                vec![
                    "--mount",
                    "type=volume,source=v1,target=/b,volume-subpath=../../etc",
                ],
                "subpath must be a relative path within the volume",
            ),
            (vec!["-v", "v1:relative"], "mount path must be absolute"),
            (vec!["-v", "v1:/a/../../etc"], "must not contain '..'"),
            (
                vec!["-v", "v1:/a", "-v", "v2:/a"],
                "Duplicate mount point: /a",
            ),
            (
                vec!["-v", "a$b:/b"],
                "includes invalid characters for a local volume name",
            ),
            (
                vec!["--mount", "type=tmpfs,source=x,target=/t"],
                "field Source must not be specified",
            ),
        ] {
            let mut full = vec!["create", "--network", "none"];
            full.extend(args.iter());
            full.push("bb");
            let out = d.cli(&bin, &full);
            assert!(!out.status.success(), "{bin} {args:?}");
            assert!(
                stderr(&out).contains(says),
                "{bin} {args:?}: {}",
                stderr(&out)
            );
        }
    }
    // a subpath that leaves the volume through a symlink is refused at start
    ok(d.berth(&["volume", "create", "esc"]));
    ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "esc:/v",
        "bb",
        "ln",
        "-s",
        "/etc",
        "/v/out",
    ]));
    let out = d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "src=esc,dst=/x,volume-subpath=out",
        "bb",
        "ls",
        "/x",
    ]);
    assert!(
        !out.status.success(),
        "followed a symlink out of the volume"
    );
    assert!(
        stderr(&out).contains("without symlinks"),
        "{}",
        stderr(&out)
    );
    // an image VOLUME reaching above the root is refused at create
    let r = d.request(
        "POST",
        "/images/create?fromSrc=-&repo=badvol&tag=1&changes=VOLUME%20%2Fa%2F..%2F..%2Fetc",
        Some(&busybox_tar()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = d.berth(&["create", "--network", "none", "badvol:1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("must not contain '..'"),
        "{}",
        stderr(&out)
    );
    // the API: malformed Mounts get 400 with Docker's words
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"Mounts":[{"Type":"bind","Target":"/x"}]}}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "invalid mount config for type \"bind\": field Source must not be empty"
    );
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"Mounts":[{"Type":"weird","Target":"/x"}]}}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "invalid mount config for type \"weird\": mount type unknown"
    );
}
