#![allow(clippy::unwrap_used)]
//! Images end to end: the berth CLI and the real docker CLI against one berthd give the
//! same results for import, images, inspect, history, tag, rmi, prune, save, load,
//! events, system df, version and info.

mod common;
use common::*;

fn docker_available() -> bool {
    if !have("docker") {
        eprintln!("docker CLI not installed: skipping the docker side");
        return false;
    }
    true
}

#[test]
fn import_list_inspect_tag_remove_with_both_clis() {
    if skip_unless_root("import_list_inspect_tag_remove_with_both_clis") {
        return;
    }
    let d = Daemon::start();
    let tarfile = d.dir.path().join("bb.tar");
    std::fs::write(&tarfile, busybox_tar()).unwrap();
    let tarfile = tarfile.to_str().unwrap();

    // import with changes, through berth
    let out = ok(d.berth(&[
        "import",
        "-c",
        "CMD [\"/bin/sh\"]",
        "-c",
        "ENV A=1",
        "-m",
        "hello",
        tarfile,
        "bb:one",
    ]));
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");

    let docker = docker_available();
    // the same table from both
    let ours = ok(d.berth(&["images"]));
    assert!(
        ours.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{ours}"
    );
    assert!(
        ours.contains(&format!("bb           one       {}", &id[7..19])),
        "{ours}"
    );
    if docker {
        // the CREATED column is relative to when each CLI ran: a second may pass between
        assert_eq!(recent(&ok(d.docker(&["images"]))), recent(&ours));
        assert_eq!(
            ok(d.docker(&["images", "-q"])),
            ok(d.berth(&["images", "-q"]))
        );
        assert_eq!(
            recent(&ok(d.docker(&["images", "--no-trunc", "--digests"]))),
            recent(&ok(d.berth(&["images", "--no-trunc", "--digests"])))
        );
    }

    // inspect, with a template
    let fmt = "{{.Id}} {{.Config.Cmd}} {{.Config.Env}} {{.Comment}} {{json .RootFS.Layers}} {{.Os}}/{{.Architecture}}";
    let ours = ok(d.berth(&["image", "inspect", "-f", fmt, "bb:one"]));
    assert!(
        ours.starts_with(&format!("{id} [/bin/sh] [A=1] hello [\"sha256:")),
        "{ours}"
    );
    if docker {
        assert_eq!(
            ok(d.docker(&["image", "inspect", "-f", fmt, "bb:one"])),
            ours
        );
        assert_eq!(
            ok(d.docker(&["inspect", "-f", "{{.Id}}", "bb:one"])),
            format!("{id}\n")
        );
        // full JSON documents agree too
        let a: serde_json::Value =
            serde_json::from_str(&ok(d.docker(&["image", "inspect", "bb:one"]))).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(&ok(d.berth(&["image", "inspect", "bb:one"]))).unwrap();
        assert_eq!(a, b);
    }

    // tag by each CLI, list, then history
    ok(d.berth(&["tag", "bb:one", "bb:two"]));
    if docker {
        ok(d.docker(&["tag", &id[7..19], "localhost:5000/team/bb:three"]));
    } else {
        ok(d.berth(&["tag", &id[7..19], "localhost:5000/team/bb:three"]));
    }
    let listed = ok(d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    let mut lines: Vec<&str> = listed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["bb:one", "bb:two", "localhost:5000/team/bb:three"]
    );
    let hist = ok(d.berth(&["history", "bb:two"]));
    assert!(hist.starts_with("IMAGE          CREATED"), "{hist}");
    assert!(hist.contains("hello"), "{hist}");
    if docker {
        assert_eq!(recent(&ok(d.docker(&["history", "bb:two"]))), recent(&hist));
        assert_eq!(
            recent(&ok(d.docker(&["images", "--filter", "reference=bb"]))),
            recent(&ok(d.berth(&["images", "--filter", "reference=bb"])))
        );
    }

    // rmi: untag, then delete with the last reference
    assert_eq!(ok(d.berth(&["rmi", "bb:two"])), "Untagged: bb:two\n");
    let cli = |args: &[&str]| {
        if docker {
            d.docker(args)
        } else {
            d.berth(args)
        }
    };
    assert_eq!(
        ok(cli(&["rmi", "localhost:5000/team/bb:three"])),
        "Untagged: localhost:5000/team/bb:three\n"
    );
    let out = ok(cli(&["rmi", "bb:one"]));
    assert!(
        out.starts_with(&format!("Untagged: bb:one\nDeleted: {id}\n")),
        "{out}"
    );
    assert_eq!(ok(d.berth(&["images", "-q"])), "");
    assert_eq!(d.store_entries(), (0, 0), "layers and blobs were removed");

    // errors are docker's
    let o = d.berth(&["rmi", "bb:one"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "Error response from daemon: No such image: bb:one\n"
    );
    if docker {
        let o = d.docker(&["rmi", "bb:one"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("No such image: bb:one"),
            "{}",
            stderr(&o)
        );
        let o = d.docker(&["inspect", "nope"]);
        assert_eq!(o.status.code(), Some(1));
        let o2 = d.berth(&["inspect", "nope"]);
        assert_eq!(o2.status.code(), Some(1));
        assert_eq!(stderr(&o2), "Error: No such object: nope\n");
    }
}

#[test]
fn save_load_roundtrip_and_prune() {
    if skip_unless_root("save_load_roundtrip_and_prune") {
        return;
    }
    let d = Daemon::start();
    let id = d.import(&busybox_tar(), "bb:latest");
    let other = d.import(&one_file_tar("hello.txt", b"hi"), "hello:v1");
    let archive = d.dir.path().join("s.tar");
    let archive_s = archive.to_str().unwrap();
    let docker = have("docker");
    if docker {
        ok(d.docker(&["save", "-o", archive_s, "bb", "hello:v1"]));
    } else {
        ok(d.berth(&["save", "-o", archive_s, "bb", "hello:v1"]));
    }
    // both layouts are in the archive
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for n in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    ok(d.berth(&["rmi", "bb", "hello:v1"]));
    assert_eq!(d.store_entries(), (0, 0));
    let out = ok(d.berth(&["load", "-i", archive_s]));
    assert_eq!(out, "Loaded image: bb:latest\nLoaded image: hello:v1\n");
    let img = d.get_json("/images/bb/json");
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(d.get_json("/images/hello:v1/json")["Id"], other.as_str());

    // loading again over stdin through docker moves nothing
    if docker {
        let data = std::fs::read(&archive).unwrap();
        let out = ok(d.docker_stdin(&["load"], Some(&data)));
        assert!(out.contains("Loaded image: bb:latest"), "{out}");
    }

    // a dangling image is pruned, tagged ones stay
    ok(d.berth(&["rmi", "hello:v1"]));
    let dangling = d.import(&one_file_tar("x", b"x"), "");
    let listed = ok(d.berth(&["images", "--filter", "dangling=true", "-q", "--no-trunc"]));
    assert_eq!(listed.trim(), dangling);
    let out = ok(d.berth(&["image", "prune", "-f"]));
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {dangling}\n")),
        "{out}"
    );
    assert!(out.contains("Total reclaimed space: 1B"), "{out}");
    assert_eq!(ok(d.berth(&["images", "-q"])).lines().count(), 1);
    // -a removes everything no container uses
    let out = ok(d.berth(&["image", "prune", "-a", "-f"]));
    assert!(
        out.contains(&format!("untagged: bb:latest\ndeleted: {id}")),
        "{out}"
    );
    assert_eq!(d.store_entries(), (0, 0));
}

#[test]
fn events_system_df_version_info() {
    if skip_unless_root("events_system_df_version_info") {
        return;
    }
    let d = Daemon::start();
    let start = chrono_now();
    let id = d.import(&busybox_tar(), "bb:latest");
    ok(d.berth(&["tag", "bb", "bb:2"]));
    ok(d.berth(&["rmi", "bb:2"]));
    let until = chrono_now() + 1;
    let out = ok(d.berth(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &until.to_string(),
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]));
    assert_eq!(
        out,
        format!("image import {id}\nimage tag bb:latest\nimage tag bb:2\nimage untag bb:2\n")
    );
    let filtered = ok(d.berth(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "event=untag",
    ]));
    assert_eq!(filtered.lines().count(), 1, "{filtered}");
    assert!(
        filtered.contains(" image untag bb:2 (name=bb:2)"),
        "{filtered}"
    );
    if have("docker") {
        let theirs = ok(d.docker(&[
            "events",
            "--since",
            &start.to_string(),
            "--until",
            &until.to_string(),
        ]));
        let ours = ok(d.berth(&[
            "events",
            "--since",
            &start.to_string(),
            "--until",
            &until.to_string(),
        ]));
        assert_eq!(theirs, ours);
        assert_eq!(
            ok(d.docker(&["system", "df"])),
            ok(d.berth(&["system", "df"]))
        );
        let f = "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}";
        let v = ok(d.docker(&["version", "--format", f]));
        assert_eq!(v, "1.50 1.24\n");
        assert_eq!(ok(d.berth(&["version", "--format", f])), v);
        let i = ok(d.docker(&[
            "info",
            "--format",
            "{{.Images}} {{.Driver}} {{.DockerRootDir}}",
        ]));
        assert!(i.starts_with("1 "), "{i}");
        assert!(
            i.trim_end().ends_with(&d.data_root().display().to_string()),
            "{i}"
        );
    }
    let df = ok(d.berth(&["system", "df"]));
    assert!(df.starts_with("TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\nImages          1         0"), "{df}");
    let v = ok(d.berth(&["version"]));
    assert!(
        v.contains("API version:      1.50 (minimum version 1.24)"),
        "{v}"
    );
    let info = ok(d.berth(&["info", "--format", "{{.Images}} {{.OSType}}"]));
    assert_eq!(info, "1 linux\n");

    // a live stream sees an event that happens after it starts
    let mut child = std::process::Command::new(berth_bin())
        .args([
            "events",
            "--filter",
            "type=image",
            "--format",
            "{{.Action}}",
        ])
        .env("BERTH_HOST", d.host())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(d.berth(&["tag", "bb", "bb:live"]));
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"tag\n");
    let _ = child.kill();
    let _ = child.wait();
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn image_filters_agree_with_docker() {
    if skip_unless_root("image_filters_agree_with_docker") {
        return;
    }
    let d = Daemon::start();
    for (created, labels, tag, content) in [
        (
            "2020-01-01T00:00:00Z",
            serde_json::json!({"tier": "a", "x": "1"}),
            "old:1",
            &b"1"[..],
        ),
        (
            "2021-01-01T00:00:00Z",
            serde_json::json!({"tier": "b"}),
            "mid:1",
            &b"2"[..],
        ),
        (
            "2022-01-01T00:00:00Z",
            serde_json::json!({"tier": "a"}),
            "new:1",
            &b"3"[..],
        ),
    ] {
        let r = d.request(
            "POST",
            "/images/load",
            Some(&archive_with(created, labels, tag, content)),
        );
        assert!(r.text().contains("Loaded image"), "{}", r.text());
    }
    let cases: [(&[&str], &str); 7] = [
        (&["--filter", "label=tier=a"], "new:1\nold:1\n"),
        (&["--filter", "label=x"], "old:1\n"),
        (&["--filter", "before=new:1"], "mid:1\nold:1\n"),
        (&["--filter", "since=old:1"], "new:1\nmid:1\n"),
        (
            &["--filter", "since=old:1", "--filter", "before=new:1"],
            "mid:1\n",
        ),
        (&["--filter", "reference=*d:*"], "mid:1\nold:1\n"),
        (
            &["--filter", "dangling=false", "--filter", "label=tier=b"],
            "mid:1\n",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        assert_eq!(ok(d.berth(&a)), want, "{args:?}");
        if have("docker") {
            assert_eq!(ok(d.docker(&a)), want, "docker {args:?}");
        }
    }
    let o = d.berth(&["images", "--filter", "bogus=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "Error response from daemon: invalid filter 'bogus'\n"
    );
    // the table's CREATED column speaks of years, as docker's does
    let t = ok(d.berth(&["images", "old"]));
    assert!(t.contains(" years ago"), "{t}");
}

/// A table with "N seconds ago" / "Less than a second ago" made one word and spacing
/// collapsed, for tables listed a moment apart.
fn recent(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < t.len() {
                if t[i..].starts_with(&["Less", "than", "a", "second", "ago"]) {
                    out.push("RECENT");
                    i += 5;
                } else if i + 2 < t.len()
                    && t[i].parse::<u32>().is_ok()
                    && matches!(t[i + 1], "second" | "seconds")
                    && t[i + 2] == "ago"
                {
                    out.push("RECENT");
                    i += 3;
                } else {
                    out.push(t[i]);
                    i += 1;
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
