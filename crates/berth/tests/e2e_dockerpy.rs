#![allow(clippy::unwrap_used)]
//! docker-py (the Python SDK docker-compose is built on) against berthd, unchanged.

mod common;
use common::*;
use std::process::Command;

const SCRIPT: &str = r#"
import docker, sys, time
c = docker.DockerClient(base_url=sys.argv[1])
assert c.version()["ApiVersion"] == "1.50"
assert c.info()["OSType"] == "linux"
t0 = int(time.time())
with open(sys.argv[2], "rb") as f:
    c.api.import_image_from_data(f.read(), repository="pybox", tag="1", changes=['CMD ["/bin/sh"]'])
img = c.images.get("pybox:1")
assert img.tags == ["pybox:1"], img.tags
assert img.attrs["Config"]["Cmd"] == ["/bin/sh"]
img.tag("pybox", "2")
assert sorted(c.images.get("pybox:2").tags) == ["pybox:1", "pybox:2"]
assert len(c.images.list(name="pybox")) == 1
data = b"".join(c.api.get_image("pybox:1"))
assert len(data) > 1000
c.images.remove("pybox:2")
assert img.history()[0]["Comment"] == "Imported from -"
c.images.remove("pybox:1")
try:
    c.images.get("pybox:1")
    raise SystemExit("image still there")
except docker.errors.ImageNotFound:
    pass
loaded = c.images.load(data)
assert loaded[0].tags == ["pybox:1"], loaded
assert c.df()["LayersSize"] > 0
actions = [e["Action"] for e in c.events(since=t0, until=int(time.time()) + 1, decode=True)]
assert actions[:3] == ["import", "tag", "tag"], actions
assert "load" in actions
# a build, as docker-compose's `build:` runs it
import os, tempfile
ctx = tempfile.mkdtemp()
with open(os.path.join(ctx, "Dockerfile"), "w") as f:
    f.write("FROM pybox:1\nARG MSG=none\nENV MSG=$MSG\nCOPY hello /hello\nRUN cat /hello\n")
with open(os.path.join(ctx, "hello"), "w") as f:
    f.write("hi from py\n")
built, logs = c.images.build(path=ctx, tag="pybuilt:1", buildargs={"MSG": "py"}, rm=True)
text = "".join(l.get("stream", "") for l in logs)
assert "hi from py" in text, text
assert "MSG=py" in built.attrs["Config"]["Env"], built.attrs["Config"]["Env"]
assert "pybuilt:1" in built.tags, built.tags
try:
    c.images.build(path=ctx, dockerfile="Missing")
    raise SystemExit("built without a Dockerfile")
except docker.errors.BuildError as e:
    assert "Cannot locate specified Dockerfile" in str(e), e
print("ok")
"#;

#[test]
fn docker_py_works_unchanged() {
    if skip_unless_root("docker_py_works_unchanged") {
        return;
    }
    let has_sdk = Command::new("python3")
        .args(["-c", "import docker"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_sdk {
        eprintln!("skipping: docker-py not installed (pip install docker)");
        return;
    }
    let d = Daemon::start();
    let tar = d.dir.path().join("bb.tar");
    std::fs::write(&tar, busybox_tar()).unwrap();
    let script = d.dir.path().join("t.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(d.host())
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-py failed:\n{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        d.log()
    );
    assert_eq!(stdout(&out), "ok\n");
}
