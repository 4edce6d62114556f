#![allow(clippy::unwrap_used)]
//! Building images from Dockerfiles end to end, through berth's CLI and the docker CLI
//! (its legacy builder, which `Builder-Version: 1` selects): every instruction's effect
//! on the image config and files, build args and labels, the cache (hits, misses after a
//! change, `--no-cache`), multi-stage builds with `--target` (every stage before it built, as dockerd's),
//! `COPY --from`, ADD of archives and URLs, heredocs, `.dockerignore`, `--chown` and
//! `--chmod`, `builder prune` and `system df`, the bad inputs with their errors, and —
//! where dockerd is installed — the same Dockerfile built by Docker, compared.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

fn build(d: &Daemon, bin: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let p = dir.display().to_string();
    a.push(&p);
    d.cli(bin, &a)
}

fn config(d: &Daemon, image: &str) -> Value {
    d.get_json(&format!("/images/{image}/json"))["Config"].clone()
}

fn run_out(d: &Daemon, image: &str, script: &str) -> String {
    ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        script,
    ]))
}

const ALL_INSTRUCTIONS: &str = r#"# a comment
ARG BASE=bb
FROM $BASE
ARG VERSION=1.0
ARG FROMCLI
LABEL org.test.version=$VERSION maintainer="Some One"
ENV APP_HOME=/app \
    GREETING="hello world"
ENV DEF=${UNSET:-fallback} ALT=${APP_HOME:+set} KEEP=${APP_HOME:-unused}
WORKDIR $APP_HOME
COPY hello.txt ./
COPY dir/ sub/
RUN echo "$GREETING $FROMCLI" > generated.txt && mkdir -p /data && echo d > /data/f
EXPOSE 8080 53/udp
VOLUME ["/data"]
USER 1000:1000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD true
SHELL ["/bin/sh", "-c"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat generated.txt"]
ONBUILD RUN echo onbuild
"#;

/// The build args and label of the first test's builds, after `extra` flags.
fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = extra.to_vec();
    v.extend_from_slice(&[
        "--build-arg",
        "VERSION=2.0",
        "--build-arg",
        "FROMCLI=cli",
        "--label",
        "extra=yes",
    ]);
    v
}

const COMPARED: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

#[test]
fn instructions_args_labels_and_cache_through_both_clis() {
    let Some(d) = daemon_with_busybox("instructions_args_labels_and_cache_through_both_clis")
    else {
        return;
    };
    let ctx = context(&[
        ("Dockerfile", ALL_INSTRUCTIONS),
        ("hello.txt", "hi\n"),
        ("dir/x.txt", "x\n"),
    ]);
    let mut configs = Vec::new();
    for bin in clis() {
        let tag = format!("b-{}", if bin == "docker" { "docker" } else { "berth" });
        let out = ok(build(&d, &bin, ctx.path(), &args(&["-t", &tag])));
        assert!(
            out.contains("Step 1/21 : ARG BASE=bb\nStep 2/21 : FROM $BASE"),
            "{bin}: {out}"
        );
        assert!(
            out.contains(&format!("Successfully tagged {tag}:latest")),
            "{bin}: {out}"
        );
        let c = config(&d, &tag);
        assert!(c["Env"]
            .as_array()
            .unwrap()
            .contains(&Value::from("GREETING=hello world")));
        assert!(c["Env"]
            .as_array()
            .unwrap()
            .contains(&Value::from("APP_HOME=/app")));
        for e in ["DEF=fallback", "ALT=set", "KEEP=/app"] {
            assert!(
                c["Env"].as_array().unwrap().contains(&Value::from(e)),
                "{e}"
            );
        }
        assert_eq!(c["Labels"]["org.test.version"], "2.0");
        assert_eq!(c["Labels"]["maintainer"], "Some One");
        assert_eq!(c["Labels"]["extra"], "yes");
        assert_eq!(c["WorkingDir"], "/app");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert!(
            c["ExposedPorts"]["8080/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object()
        );
        assert!(c["Volumes"]["/data"].is_object());
        assert_eq!(
            c["Healthcheck"]["Test"],
            serde_json::json!(["CMD-SHELL", "true"])
        );
        assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
        assert_eq!(c["Healthcheck"]["Retries"], 2);
        assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
        assert_eq!(c["Cmd"], serde_json::json!(["cat generated.txt"]));
        assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo onbuild"]));
        // the build args reached RUN, not the image
        assert!(!c["Env"].to_string().contains("FROMCLI"));
        let run = ok(d.berth(&["run", "--rm", "--network", "none", &tag]));
        assert_eq!(run, "hello world cli\n", "{bin}");
        let files = run_out(
            &d,
            &tag,
            "cat /app/hello.txt /app/sub/x.txt /data/f; ls -ln /app/generated.txt",
        );
        assert!(files.starts_with("hi\nx\nd\n"), "{files}");
        assert!(
            files.contains(" 0 "),
            "files RUN writes are root's: {files}"
        );
        configs.push(c);
        // the same build again: every step after FROM from the cache
        let again = ok(build(&d, &bin, ctx.path(), &args(&["-t", &tag])));
        assert_eq!(again.matches("Using cache").count(), 19, "{bin}: {again}");
        // -q prints only the ID, the same image
        let q = ok(build(&d, &bin, ctx.path(), &args(&["-q"])));
        let id = d.get_json(&format!("/images/{tag}/json"))["Id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(q.trim(), id, "{bin}");
        // --no-cache runs every step
        let fresh = ok(build(&d, &bin, ctx.path(), &args(&["--no-cache"])));
        assert!(!fresh.contains("Using cache"), "{fresh}");
        // a different build arg misses from the RUN that sees it
        let other = ok(build(
            &d,
            &bin,
            ctx.path(),
            &[
                "--build-arg",
                "VERSION=2.0",
                "--build-arg",
                "FROMCLI=x",
                "--label",
                "extra=yes",
            ],
        ));
        assert!(
            other.contains("Step 10/21 : COPY dir/ sub/\n ---> Using cache"),
            "{other}"
        );
        assert!(other.contains("---> Running in"), "{other}");
    }
    for k in COMPARED {
        assert_eq!(configs[0][k], configs[1][k], "{k} differs between the CLIs");
    }
    // a build FROM an image with ONBUILD runs its trigger, and the trigger is not inherited
    let child = context(&[("Dockerfile", "FROM b-berth\nENV CHILD=1\n")]);
    let out = ok(build(&d, berth_bin(), child.path(), &["-t", "child"]));
    assert!(out.contains("# Executing 1 build trigger\n"), "{out}");
    assert!(out.contains("onbuild\n"), "{out}");
    assert!(config(&d, "child")["OnBuild"].is_null());
    // no build container is left
    assert_eq!(ok(d.berth(&["ps", "-aq"])).trim(), "");
    // history names the steps
    let h = ok(d.berth(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "b-berth",
    ]));
    assert!(
        h.contains("|2 VERSION=2.0 FROMCLI=cli /bin/sh -c echo \"$GREETING $FROMCLI\""),
        "{h}"
    );
    assert!(h.contains("#(nop)  WORKDIR /app"), "{h}");
    // every step's image is here, so every row has its ID (the base's row its tag)
    for bin in clis() {
        let ids = ok(d.cli(
            &bin,
            &["history", "--format", "{{.ID}} {{.CreatedBy}}", "b-berth"],
        ));
        assert!(!ids.contains("<missing>"), "{bin}: {ids}");
        assert_eq!(ids.lines().count(), 20, "{bin}: {ids}");
    }
}

#[test]
fn multistage_copy_from_add_heredocs_and_ignore() {
    let Some(d) = daemon_with_busybox("multistage_copy_from_add_heredocs_and_ignore") else {
        return;
    };
    // a small HTTP server for ADD URL, on loopback
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            use std::io::{Read, Write};
            let mut s = s;
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = "downloaded\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let arch = {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(7);
        h.set_mode(0o640);
        b.append_data(&mut h, "inner/f", &b"in tar\n"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    };
    let dockerfile = format!(
        r#"FROM bb AS builder
RUN mkdir -p /out && echo built > /out/artifact && echo 'app:x:1000:1000::/:/bin/sh' >> /etc/passwd
COPY --chown=app:2000 --chmod=0750 src/ /srcs/
FROM bb AS unused
RUN echo UNUSED-STAGE-RAN
FROM builder AS final
COPY --from=builder /out/artifact /final/
COPY --from=0 /srcs/one.txt /final/copied.txt
COPY --from=bb /etc/passwd /from-image/
COPY src/*.txt /globbed/
RUN mkdir -p /opt/real && ln -s /opt/real /linkdir
COPY src/one.txt /linkdir/
ADD arch.tar.gz /unpacked/
ADD http://127.0.0.1:{port}/remote.txt /dl/
ADD --checksum=sha256:{sum} http://127.0.0.1:{port}/remote.txt /dl/checked.txt
COPY . /ctx/
COPY <<EOF /greeting.txt
hello $HOSTNAME_UNSET heredoc
EOF
RUN <<EOF
echo from heredoc script
echo ran > /ran
EOF
"#,
        sum = sha256_hex(b"downloaded\n")
    );
    let ctx = context(&[
        ("Dockerfile", &dockerfile),
        ("src/one.txt", "one\n"),
        ("src/two.txt", "two\n"),
        ("src/skip.log", "log\n"),
        ("secret/key", "k\n"),
        (".dockerignore", "secret\n**/*.log\n"),
    ]);
    std::fs::write(ctx.path().join("arch.tar.gz"), &arch).unwrap();
    for bin in clis() {
        let out = ok(build(&d, &bin, ctx.path(), &["-t", "ms", "--no-cache"]));
        // the classic builder builds every stage before the target, as dockerd's does
        // (BuildKit skips those the target does not need: e2e_buildkit)
        assert!(
            out.contains("UNUSED-STAGE-RAN"),
            "a stage before the target was skipped: {out}"
        );
        assert!(out.contains("from heredoc script"), "{out}");
        let files = run_out(
            &d,
            "ms",
            "cat /final/artifact /final/copied.txt /unpacked/inner/f /dl/remote.txt /greeting.txt /ran /dl/checked.txt; \
             ls /globbed; ls -ln /srcs/one.txt /unpacked/inner/f; ls -a /ctx; ls /ctx/src; \
             ls /opt/real; ls -l /linkdir; cat /from-image/passwd",
        );
        for want in [
            "built\n",
            "one\nin tar\ndownloaded\nhello  heredoc\nran\ndownloaded\n",
            "one.txt\ntwo.txt\n",
            "-rwxr-x---    1 1000     2000",
            "-rw-r-----    1 0        0",
            "one.txt\nlrwxrwxrwx",
            "/linkdir -> /opt/real",
            "root:x:0:0:root:/root:/bin/sh\n",
        ] {
            assert!(files.contains(want), "{bin}: {want:?} not in {files}");
        }
        assert!(
            !files.contains("secret"),
            "an ignored directory was sent: {files}"
        );
        assert!(
            !files.contains("skip.log"),
            "an ignored file was sent: {files}"
        );
        // a download whose digest is not the one given fails
        let bad = context(&[(
            "Dockerfile",
            &format!(
                "FROM bb\nADD --checksum=sha256:{} http://127.0.0.1:{port}/r.txt /r\n",
                "0".repeat(64)
            ),
        )]);
        let o = build(&d, &bin, bad.path(), &[]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("digest mismatch"), "{}", stderr(&o));
        // --target stops at a stage, and builds only what it needs
        let t = ok(build(
            &d,
            &bin,
            ctx.path(),
            &["--target", "builder", "-t", "only-builder"],
        ));
        assert!(t.contains("Step 3/3 : COPY --chown"), "{t}");
        let files = run_out(&d, "only-builder", "ls / ; ls /srcs");
        assert!(!files.contains("final"), "{files}");
    }
}

#[test]
fn cache_follows_file_contents_and_modes() {
    let Some(d) = daemon_with_busybox("cache_follows_file_contents_and_modes") else {
        return;
    };
    let ctx = context(&[
        ("Dockerfile", "FROM bb\nENV A=1\nCOPY f /f\nRUN cat /f\n"),
        ("f", "v1\n"),
    ]);
    let first = ok(build(&d, berth_bin(), ctx.path(), &["-t", "c"]));
    assert!(first.contains("v1"), "{first}");
    let cached = ok(build(&d, berth_bin(), ctx.path(), &["-t", "c"]));
    assert_eq!(cached.matches("Using cache").count(), 3, "{cached}");
    // new contents: ENV hits, COPY and what follows miss
    std::fs::write(ctx.path().join("f"), "v2\n").unwrap();
    let changed = ok(build(&d, berth_bin(), ctx.path(), &["-t", "c"]));
    assert_eq!(changed.matches("Using cache").count(), 1, "{changed}");
    assert!(changed.contains("v2"), "{changed}");
    // a mode change is a change too
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ctx.path().join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let moded = ok(build(&d, berth_bin(), ctx.path(), &["-t", "c"]));
    assert_eq!(moded.matches("Using cache").count(), 1, "{moded}");
    // the live view on a terminal folds each step's output away (forced here with tty)
    let live = ok(build(
        &d,
        berth_bin(),
        ctx.path(),
        &["--progress", "tty", "--no-cache", "-t", "live"],
    ));
    assert!(live.contains("\x1b[1mStep 4/4 : RUN cat /f"), "{live:?}");
    assert!(
        live.contains("\x1b[2mv2"),
        "RUN output is shown dimmed: {live:?}"
    );
    assert!(
        live.contains("A\x1b[J"),
        "and folded when the step ends: {live:?}"
    );
    // a lone Dockerfile on stdin (no context), and a context tar on stdin, both CLIs
    for bin in clis() {
        let run = |args: &[&str], input: &[u8]| {
            if bin == "docker" {
                d.docker_stdin(args, Some(input))
            } else {
                d.berth_stdin(args, Some(input))
            }
        };
        let id = ok(run(&["build", "-q", "-"], b"FROM bb\nENV FROM_STDIN=1\n"));
        // the escape directive, and a syntax directive noted
        let escaped = ok(run(
            &["build", "--no-cache", "-"],
            b"# syntax=docker/dockerfile:1\n# escape=`\nFROM bb\nRUN echo one `\n  two\n",
        ));
        assert!(escaped.contains("one two\n"), "{bin}: {escaped}");
        assert!(escaped.contains("syntax"), "{bin}: {escaped}");
        let env = ok(d.berth(&["image", "inspect", "-f", "{{json .Config.Env}}", id.trim()]));
        assert!(env.contains("FROM_STDIN=1"), "{bin}: {env}");
        let mut t = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("Dockerfile", &b"FROM bb\nCOPY f /f\n"[..]),
            ("f", b"in tar\n"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, name, data).unwrap();
        }
        let id = ok(run(&["build", "-q", "-"], &t.into_inner().unwrap()));
        assert_eq!(run_out(&d, id.trim(), "cat /f"), "in tar\n", "{bin}");
    }
    // -f: a Dockerfile elsewhere in the context, or outside it; --network none for RUN
    let alt = context(&[
        (
            "sub/Other.dockerfile",
            "FROM bb\nCOPY f /g\nRUN ls /sys/class/net\n",
        ),
        ("f", "from context\n"),
    ]);
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        outside.path(),
        "FROM bb\nCOPY f /h\nRUN ls /sys/class/net\n",
    )
    .unwrap();
    for bin in clis() {
        let inside = alt.path().join("sub/Other.dockerfile");
        let o = ok(build(
            &d,
            &bin,
            alt.path(),
            &["--no-cache", "-f", inside.to_str().unwrap(), "-t", "alt"],
        ));
        assert!(o.contains("eth0"), "the default network: {o}");
        assert_eq!(run_out(&d, "alt", "cat /g"), "from context\n");
        let o = ok(build(
            &d,
            &bin,
            alt.path(),
            &[
                "--no-cache",
                "--network",
                "none",
                "-f",
                outside.path().to_str().unwrap(),
                "-t",
                "alt2",
            ],
        ));
        assert!(
            !o.contains("eth0") && o.contains("lo\n"),
            "{bin}: --network none: {o}"
        );
        assert_eq!(run_out(&d, "alt2", "cat /h"), "from context\n");
    }
    // a gzip-compressed context, and resources for RUN steps
    let res = context(&[("Dockerfile", "FROM bb\nRUN grep /dev/shm /proc/mounts\n")]);
    for bin in clis() {
        let o = ok(build(
            &d,
            &bin,
            res.path(),
            &["--no-cache", "--compress", "--shm-size", "8m", "-m", "64m"],
        ));
        assert!(o.contains("size=8192k"), "{bin}: {o}");
    }
    // system df counts the cache; builder prune empties it
    let df = ok(d.berth(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]));
    let n: usize = df
        .lines()
        .find_map(|l| l.strip_prefix("Build Cache "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 3, "{df}");
    let verbose = ok(d.berth(&["system", "df", "-v"]));
    assert!(verbose.contains("Build cache usage: "), "{verbose}");
    assert!(
        verbose.contains("CACHE ID") && verbose.contains("regular"),
        "{verbose}"
    );
    let api = d.get_json("/system/df");
    assert!(api["BuildCache"].as_array().unwrap().len() >= 3);
    let pruned = ok(d.berth(&["builder", "prune", "-f"]));
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(
        d.get_json("/system/df")["BuildCache"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let before = ok(d.berth(&["images", "-aq"]));
    let after = ok(build(&d, berth_bin(), ctx.path(), &["-t", "c2"]));
    assert!(!after.contains("Using cache"), "{after}");
    // the final image's intermediates go with it
    ok(d.berth(&["rmi", "c2"]));
    assert_eq!(ok(d.berth(&["images", "-aq"])), before);
    // with the cache gone, --cache-from finds the steps in an image built before
    ok(d.berth(&["builder", "prune", "-f"]));
    let from = ok(build(
        &d,
        berth_bin(),
        ctx.path(),
        &["--cache-from", "c", "-t", "c3"],
    ));
    assert_eq!(from.matches("Using cache").count(), 3, "{from}");
    assert_eq!(
        run_out(&d, "c3", "cat /f; ls -l /f"),
        format!("v2\n{}", run_out(&d, "c", "ls -l /f"))
    );
    // the old chains left dangling by re-tagging go with `image prune`, each once
    let pruned = ok(d.berth(&["image", "prune", "-f"]));
    let deleted: Vec<&str> = pruned
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("deleted: "))
        .collect();
    let unique: std::collections::BTreeSet<&&str> = deleted.iter().collect();
    assert!(!deleted.is_empty(), "{pruned}");
    assert_eq!(unique.len(), deleted.len(), "{pruned}");
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let Some(d) = daemon_with_busybox("bad_input_fails_clearly_and_leaves_nothing") else {
        return;
    };
    let images_before = ok(d.berth(&["images", "-aq"]));
    // (Dockerfile, other context files, the error, the exit code)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, i32);
    let cases: &[Case] = &[
        (
            "FROM bb\nFOO bar\n",
            &[],
            "dockerfile parse error on line 2: unknown instruction: FOO",
            1,
        ),
        (
            "FROM bb\nRUN <<EOF\necho\n",
            &[],
            "dockerfile parse error on line 2: unterminated heredoc",
            1,
        ),
        (
            "FROM bb\nCOPY missing.txt /x\n",
            &[],
            "file not found in build context",
            1,
        ),
        (
            "FROM bb\nCOPY *.nothing /x/\n",
            &[],
            "COPY failed: no source files were specified",
            1,
        ),
        (
            "FROM bb\nCOPY ../outside /x\n",
            &[],
            "forbidden path outside the build context",
            1,
        ),
        (
            "FROM bb\nCOPY secret.txt /x\n",
            &[("secret.txt", "s"), (".dockerignore", "secret.txt")],
            "excluded by .dockerignore",
            1,
        ),
        (
            "FROM bb\nRUN echo output-before-failing && exit 7\n",
            &[],
            "returned a non-zero code: 7",
            7,
        ),
        (
            "FROM ${NEVER_DEFINED}\n",
            &[],
            "base name (${NEVER_DEFINED}) should not be blank",
            1,
        ),
        (
            "FROM bb\nADD http://127.0.0.1:9/x /x\n",
            &[],
            "failed to GET http://127.0.0.1:9/x",
            1,
        ),
        (
            "FROM bb\nCOPY a b /notadir\n",
            &[("a", "a"), ("b", "b")],
            "the destination must be a directory and end with a /",
            1,
        ),
        (
            "FROM bb\nRUN --mount=type=cache,target=/c true\n",
            &[],
            "the --mount option requires BuildKit",
            1,
        ),
        (
            "FROM bb\nCOPY --bogus=1 a /a\n",
            &[("a", "a")],
            "Unknown flag: bogus",
            1,
        ),
        (
            "FROM bb\nADD --checksum=sha256:00 a /a\n",
            &[("a", "a")],
            "checksum can't be specified for non-HTTP(S) sources",
            1,
        ),
        ("FROM bb\n", &[], "failed to reach build target nope", 1),
    ];
    for bin in clis() {
        for (df, files, want, code) in cases {
            let mut all = vec![("Dockerfile", *df)];
            all.extend_from_slice(files);
            let ctx = context(&all);
            let extra: &[&str] = if want.contains("target") {
                &["--target", "nope"]
            } else {
                &[]
            };
            let o = build(&d, &bin, ctx.path(), extra);
            let text = format!("{}{}", stdout(&o), stderr(&o));
            assert_eq!(o.status.code(), Some(*code), "{bin} {df:?}: {text}");
            assert!(
                text.contains(want),
                "{bin} {df:?}: wanted {want:?} in {text}"
            );
            if *code == 7 {
                assert!(text.contains("output-before-failing"), "{text}");
            }
        }
    }
    // nothing dangling: no containers, no new images
    assert_eq!(ok(d.berth(&["ps", "-aq"])).trim(), "");
    assert_eq!(ok(d.berth(&["images", "-aq"])), images_before);
    // --rm=false keeps a failed step's container, as asked
    let ctx = context(&[("Dockerfile", "FROM bb\nRUN exit 1\n")]);
    let o = build(&d, berth_bin(), ctx.path(), &["--rm=false"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(ok(d.berth(&["ps", "-aq"])).lines().count(), 1);
    // a client that goes away cancels the build: the running step's container goes
    {
        let s = build_until_started(&d);
        drop(s);
        let start = std::time::Instant::now();
        // only the --rm=false container above is left
        while ok(d.berth(&["ps", "-aq"])).lines().count() != 1 {
            assert!(
                start.elapsed().as_secs() < 10,
                "the canceled step's container stayed"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // a context that is not a tar
    let r = d.request("POST", "/build", Some(&[b'x'; 1024][..]));
    assert!(r.text().contains("not a tar archive"), "{}", r.text());
    // the daemon still builds
    let ctx = context(&[("Dockerfile", "FROM bb\nENV OK=1\n")]);
    ok(build(&d, berth_bin(), ctx.path(), &[]));
}

/// Starts a build over a raw connection whose RUN step prints `started` and sleeps;
/// returns the connection once the step's output has come.
fn build_until_started(d: &Daemon) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut t = tar::Builder::new(Vec::new());
    // quoted so that the step's own line does not say it
    let df = b"FROM bb\nRUN echo sta''rted; sleep 60\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(df.len() as u64);
    h.set_mode(0o644);
    t.append_data(&mut h, "Dockerfile", &df[..]).unwrap();
    let body = t.into_inner().unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /build?nocache=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("started") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// The same Dockerfile through Docker's own builder: the configs and the file trees match.
#[test]
fn same_images_as_docker() {
    if skip_unless_root("same_images_as_docker") {
        return;
    }
    if !have("dockerd") {
        eprintln!("same_images_as_docker: dockerd is not installed; skipped");
        return;
    }
    let d = daemon_with_busybox("same_images_as_docker").unwrap();
    let docker = DockerPeer::start();
    let saved = d.berth(&["save", "bb"]).stdout;
    ok(docker.cli(&["load"], Some(&saved)));
    let all = context(&[
        ("Dockerfile", ALL_INSTRUCTIONS),
        ("hello.txt", "hi\n"),
        ("dir/x.txt", "x\n"),
    ]);
    // stages, COPY --from and --chown, globs, an archive ADD unpacks, WORKDIR's directory
    // (no heredocs or --chmod: Docker 20.10's classic builder has neither)
    let staged = context(&[
        (
            "Dockerfile",
            "FROM bb AS builder\n\
             RUN mkdir -p /out && echo built > /out/artifact && echo 'app:x:1000:1000::/:/bin/sh' >> /etc/passwd\n\
             COPY --chown=app:2000 src/ /srcs/\n\
             FROM bb\n\
             COPY --from=builder /out/artifact /srcs/one.txt /final/\n\
             COPY src/*.txt /globbed/\n\
             ADD arch.tar.gz /unpacked/\n\
             WORKDIR /w/x\n\
             COPY src .\n",
        ),
        ("src/one.txt", "one\n"),
        ("src/two.txt", "two\n"),
    ]);
    let arch = {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(7);
        h.set_mode(0o640);
        b.append_data(&mut h, "inner/f", &b"in tar\n"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    };
    std::fs::write(staged.path().join("arch.tar.gz"), arch).unwrap();
    let cases = [
        (all.path(), "ls -lnR /app /data /bin /etc", true),
        (staged.path(), "ls -lnR /final /globbed /unpacked /w", false),
    ];
    for (i, (dir, listing, configs)) in cases.into_iter().enumerate() {
        let tag = format!("cmp{i}");
        let dir = dir.display().to_string();
        let args = ["build", "-t", &tag, "--build-arg", "FROMCLI=cli", &dir];
        ok(docker.cli(&args, None));
        ok(d.docker(&args));
        if configs {
            let theirs: Value =
                serde_json::from_str(&ok(docker.cli(&["image", "inspect", &tag], None))).unwrap();
            let ours = config(&d, &tag);
            for k in COMPARED {
                assert_eq!(ours[k], theirs[0]["Config"][k], "{k}");
            }
        }
        // the file trees: names, modes, owners, sizes (times differ between two builds)
        let script = format!("{listing} | grep -v '^total'");
        let run = [
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            &tag,
            "-c",
            &script,
        ];
        let tree = |out: String| -> Vec<String> {
            out.lines()
                // what each runtime puts in a running container, not in the image
                .filter(|l| {
                    !(l.ends_with(" hostname")
                        || l.ends_with(" hosts")
                        || l.ends_with(" resolv.conf")
                        || l.ends_with("mtab -> /proc/mounts"))
                })
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if f.len() >= 9 {
                        format!("{} {} {} {} {}", f[0], f[2], f[3], f[4], f[8..].join(" "))
                    } else {
                        l.to_string()
                    }
                })
                .collect()
        };
        let ours = tree(ok(d.berth(&run)));
        let theirs = tree(ok(docker.cli(&run, None)));
        assert_eq!(ours, theirs, "case {i}");
    }
}

/// A dockerd of its own (data root, sockets, containerd namespace), stopped on drop.
struct DockerPeer {
    dir: tempfile::TempDir,
    child: std::process::Child,
    /// what dockerd makes outside its data root (its cgroups, /etc/docker for its key,
    /// /run/docker), when it was not there before
    made: Vec<std::path::PathBuf>,
}

fn docker_cgroups() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|r| r.flatten().map(|e| e.path().join("docker")).collect())
        .unwrap_or_default()
}

impl DockerPeer {
    fn start() -> DockerPeer {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-dockerd-")
            .tempdir_in("/tmp")
            .unwrap();
        let base = dir.path().to_path_buf();
        let p = |s: &str| base.join(s).display().to_string();
        std::fs::write(base.join("daemon.json"), "{}").unwrap();
        let made: Vec<_> = docker_cgroups()
            .into_iter()
            .chain(["/etc/docker", "/run/docker"].map(std::path::PathBuf::from))
            .filter(|p| !p.exists())
            .collect();
        let child = std::process::Command::new("dockerd")
            .args([
                "--data-root",
                &p("root"),
                "--exec-root",
                &p("exec"),
                "--pidfile",
                &p("pid"),
            ])
            .args(["-H", &format!("unix://{}", p("d.sock"))])
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .args([
                "--containerd-namespace",
                "berthe2e",
                "--containerd-plugins-namespace",
                "berthe2ep",
            ])
            .args(["--config-file", &p("daemon.json")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(p("log")).unwrap())
            .spawn()
            .unwrap();
        let peer = DockerPeer { dir, child, made };
        for _ in 0..300 {
            if peer.cli(&["version"], None).status.success() {
                return peer;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "dockerd did not start: {}",
            std::fs::read_to_string(p("log")).unwrap_or_default()
        );
    }

    fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        run_cli(
            "docker",
            &format!("unix://{}", self.dir.path().join("d.sock").display()),
            args,
            stdin,
        )
    }
}

impl Drop for DockerPeer {
    fn drop(&mut self) {
        // SAFETY: a signal to the dockerd this peer started and has not reaped
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_below(self.dir.path());
        for p in &self.made {
            if p.starts_with("/sys/fs/cgroup") {
                let _ = std::fs::remove_dir(p);
            } else {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
}

/// FROM pulls a base image that is not here; `--pull` fetches it again when the
/// registry has a newer one.
#[test]
fn from_pulls_missing_base_and_pull_refreshes() {
    let Some(d) = daemon_with_busybox("from_pulls_missing_base_and_pull_refreshes") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (mut reg, port) = berth_registry(&root.path().join("data"), &[]);
    let base = format!("127.0.0.1:{port}/base:1");
    // version one of the base: busybox with V=1
    let v = |n: &str| context(&[("Dockerfile", &format!("FROM bb\nENV V={n}\n"))]);
    let one = v("1");
    ok(build(&d, berth_bin(), one.path(), &["-t", &base]));
    ok(d.berth(&["push", "-q", &base]));
    ok(d.berth(&["rmi", &base]));
    let app = context(&[("Dockerfile", &format!("FROM {base}\nRUN echo v=$V\n"))]);
    for bin in clis() {
        let _ = d.berth(&["rmi", "-f", &base]);
        let out = ok(build(&d, &bin, app.path(), &["--no-cache", "-t", "app"]));
        assert!(out.contains("v=1"), "{bin}: {out}");
        assert!(d.berth(&["image", "inspect", &base]).status.success());
    }
    // version two in the registry; the local base stays version one
    let v1 = ok(d.berth(&["image", "inspect", "-f", "{{.Id}}", &base]));
    let two = v("2");
    ok(build(&d, berth_bin(), two.path(), &["-t", &base]));
    ok(d.berth(&["push", "-q", &base]));
    ok(d.berth(&["tag", v1.trim(), &base]));
    let local = ok(build(&d, berth_bin(), app.path(), &["-t", "app1"]));
    assert!(!local.contains("v=2"), "{local}");
    let env = |i: &str| ok(d.berth(&["image", "inspect", "-f", "{{json .Config.Env}}", i]));
    assert!(env("app1").contains("V=1"), "{}", env("app1"));
    let pulled = ok(build(
        &d,
        berth_bin(),
        app.path(),
        &["--pull", "-t", "app2"],
    ));
    assert!(pulled.contains("v=2"), "{pulled}");
    assert!(env("app2").contains("V=2"), "{}", env("app2"));
    let _ = reg.kill();
    let _ = reg.wait();
}

/// A daemon that dies in the middle of a RUN step removes the step's container when it
/// starts again.
#[test]
fn a_step_interrupted_by_a_daemon_crash_is_cleaned_up() {
    let Some(mut d) = daemon_with_busybox("a_step_interrupted_by_a_daemon_crash_is_cleaned_up")
    else {
        return;
    };
    let s = build_until_started(&d);
    assert_eq!(ok(d.berth(&["ps", "-q"])).lines().count(), 1);
    // SAFETY: kill(2) on this test's own daemon
    unsafe {
        libc::kill(d.pid(), libc::SIGKILL);
    }
    let _ = d.child.take().map(|mut c| c.wait());
    drop(s);
    d.spawn();
    assert_eq!(ok(d.berth(&["ps", "-aq"])).trim(), "", "{}", d.log());
    d.assert_no_shims();
}

/// An image view a build had mounted when berthd died is unmounted at the next start,
/// before the scratch directory is cleared.
#[test]
fn a_leftover_image_view_is_unmounted_at_start() {
    if skip_unless_root("a_leftover_image_view_is_unmounted_at_start") {
        return;
    }
    let mut d = Daemon::start();
    d.stop();
    let view = d.data_root().join("tmp/view-left");
    std::fs::create_dir_all(&view).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &view,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    std::fs::write(view.join("f"), "x").unwrap();
    d.spawn();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(view.to_str().unwrap()), "{mounts}");
    assert!(!view.exists());
}
