#![allow(clippy::unwrap_used)]
//! The API itself: ping headers, version negotiation, response shapes checked against
//! Docker's v1.50 swagger, errors for bad input, and a daemon that survives garbage sent
//! to every route.

mod common;
use common::schema::Spec;
use common::*;
use serde_json::Value;

#[test]
fn ping_and_versions() {
    if skip_unless_root("ping_and_versions") {
        return;
    }
    let d = Daemon::start();
    for path in ["/_ping", "/v1.24/_ping", "/v1.50/_ping"] {
        let r = d.request("GET", path, None);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "OK");
        assert_eq!(r.header("API-Version"), Some("1.50"));
        // BuildKit's API is served (/grpc, /session)
        assert_eq!(r.header("Builder-Version"), Some("2"));
        assert_eq!(r.header("OSType"), Some("linux"));
        assert!(r.header("Server").unwrap().starts_with("berth/"));
    }
    let r = d.request("HEAD", "/_ping", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("API-Version"), Some("1.50"));

    let r = d.request("GET", "/v1.51/version", None);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "client version 1.51 is too new. Maximum supported API version is 1.50"
    );
    let r = d.request("GET", "/v1.23/version", None);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("client version 1.23 is too old. Minimum supported API version is 1.24"));
    // every version in between answers, with and without the prefix
    for v in ["/v1.24", "/v1.41", "/v1.43", "/v1.44", "/v1.50", ""] {
        let r = d.request("GET", &format!("{v}/version"), None);
        assert_eq!(r.status, 200, "{v}");
        assert_eq!(r.json()["ApiVersion"], "1.50");
    }
    // an old client sees the fields it knew
    d.import(&one_file_tar("f", b"x"), "old:1");
    let old = d.get_json("/v1.41/images/json");
    assert!(old[0].get("VirtualSize").is_some());
    let new = d.get_json("/v1.50/images/json");
    assert!(new[0].get("VirtualSize").is_none());
    assert!(d
        .get_json("/v1.43/images/old:1/json")
        .get("ContainerConfig")
        .is_some());
}

#[test]
fn responses_match_the_swagger() {
    if skip_unless_root("responses_match_the_swagger") {
        return;
    }
    let Some(spec) = Spec::load() else { return };
    let d = Daemon::start();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id = d.import(&busybox_tar(), "bb:1");
    d.import(&one_file_tar("f", b"y"), "");
    let check = |schema: Value, v: &Value, what: &str| {
        let errs = spec.check(&schema, v);
        assert!(
            errs.is_empty(),
            "{what} departs from the swagger:\n{}\n{v:#}",
            errs.join("\n")
        );
    };
    check(
        spec.definition("SystemVersion"),
        &d.get_json("/version"),
        "/version",
    );
    check(spec.definition("SystemInfo"), &d.get_json("/info"), "/info");
    check(
        spec.response("/images/json", "get", "200"),
        &d.get_json("/images/json?shared-size=1"),
        "/images/json",
    );
    check(
        spec.definition("ImageInspect"),
        &d.get_json("/images/bb:1/json"),
        "/images/{name}/json",
    );
    check(
        spec.definition("ImageInspect"),
        &d.get_json(&format!("/images/{id}/json")),
        "/images/{id}/json",
    );
    check(
        spec.response("/images/{name}/history", "get", "200"),
        &d.get_json("/images/bb:1/history"),
        "history",
    );
    check(
        spec.response("/system/df", "get", "200"),
        &d.get_json("/system/df"),
        "/system/df",
    );
    check(
        spec.response("/containers/json", "get", "200"),
        &d.get_json("/containers/json"),
        "/containers/json",
    );
    let r = d.request("POST", "/images/bb:1/tag?repo=bb&tag=2", None);
    assert_eq!(r.status, 201);
    let r = d.request("DELETE", "/images/bb:2", None);
    assert_eq!(r.status, 200);
    check(
        spec.response("/images/{name}", "delete", "200"),
        &r.json(),
        "DELETE /images",
    );
    let r = d.request("POST", "/images/prune", None);
    assert_eq!(r.status, 200);
    check(
        spec.response("/images/prune", "post", "200"),
        &r.json(),
        "prune",
    );
    let now = start + 5;
    let r = d.request("GET", &format!("/events?since={start}&until={now}"), None);
    assert_eq!(r.status, 200);
    let lines: Vec<&str> = r
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for l in lines {
        let mut v: Value = serde_json::from_str(l).unwrap();
        // Docker still sends the deprecated status/id/from at 1.50 (gone in 1.52); the
        // swagger no longer lists them
        for legacy in ["status", "id", "from"] {
            v.as_object_mut().unwrap().remove(legacy);
        }
        check(spec.definition("EventMessage"), &v, "event");
    }
    let r = d.request("GET", "/v1.50/images/nope/json", None);
    check(spec.definition("ErrorResponse"), &r.json(), "error");
}

#[test]
fn bad_input_gets_docker_errors() {
    if skip_unless_root("bad_input_gets_docker_errors") {
        return;
    }
    let d = Daemon::start();
    d.import(&one_file_tar("f", b"x"), "img:1");
    let expect = |method: &str, path: &str, body: Option<&[u8]>, status: u16, msg: &str| {
        let r = d.request(method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json"),
            "{method} {path}"
        );
        let m = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(m.contains(msg), "{method} {path}: {m:?} lacks {msg:?}");
    };
    expect(
        "GET",
        "/images/json?filters=%7Bnot-json",
        None,
        400,
        "invalid filter",
    );
    expect(
        "GET",
        "/images/json?filters=%5B1%5D",
        None,
        400,
        "invalid filter",
    );
    expect(
        "GET",
        "/images/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        None,
        400,
        "invalid filter 'bogus'",
    );
    expect(
        "GET",
        "/images/json?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D",
        None,
        400,
        "dangling",
    );
    expect(
        "GET",
        "/images/nope/json",
        None,
        404,
        "No such image: nope:latest",
    );
    expect(
        "GET",
        "/images/sha256:0000000000000000000000000000000000000000000000000000000000000000/json",
        None,
        404,
        "No such image",
    );
    expect(
        "GET",
        "/images/nope/history",
        None,
        404,
        "No such image: nope:latest",
    );
    expect(
        "DELETE",
        "/images/nope",
        None,
        404,
        "No such image: nope:latest",
    );
    expect(
        "POST",
        "/images/img:1/tag?repo=a%20b",
        None,
        400,
        "invalid reference format",
    );
    expect(
        "POST",
        "/images/img:1/tag?repo=Upper",
        None,
        400,
        "must be lowercase",
    );
    expect(
        "POST",
        "/images/img:1/tag?repo=ok&tag=-bad",
        None,
        400,
        "invalid reference format",
    );
    expect(
        "POST",
        "/images/nope/tag?repo=ok",
        None,
        404,
        "No such image",
    );
    expect("DELETE", "/images/img:1?force=maybe", None, 400, "force");
    expect(
        "POST",
        "/images/create?fromSrc=-&repo=a:b:c",
        Some(b"x"),
        400,
        "invalid reference format",
    );
    expect(
        "POST",
        "/images/create?fromSrc=-&repo=ok&changes=RUN%20true",
        Some(b"x"),
        400,
        "RUN is not a valid change command",
    );
    expect(
        "POST",
        "/images/create?fromSrc=-&repo=ok",
        Some(b"definitely not a tar archive, just text that goes on"),
        400,
        "invalid tar stream",
    );
    expect("GET", "/images/get?names=nope", None, 404, "No such image");
    expect("GET", "/events?since=yesterday", None, 400, "since");
    expect("GET", "/nothing/here", None, 404, "page not found");
    expect(
        "GET",
        "/containers/nope/json",
        None,
        404,
        "No such container: nope",
    );
    // an image under two names is not deleted by ID without force
    let id = d.get_json("/images/img:1/json")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        d.request("POST", "/images/img:1/tag?repo=img&tag=2", None)
            .status,
        201
    );
    let by_id = format!("/images/{}", &id[7..19]);
    expect(
        "DELETE",
        &by_id,
        None,
        409,
        "image is referenced in multiple repositories",
    );
    assert_eq!(d.request("DELETE", "/images/img:2", None).status, 200);
    // the failed imports left nothing behind
    assert_eq!(d.get_json("/images/json").as_array().unwrap().len(), 1);
    assert_eq!(d.store_entries(), (1, 1));
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_to_every_route_never_kills_the_daemon() {
    if skip_unless_root("garbage_to_every_route_never_kills_the_daemon") {
        return;
    }
    let d = Daemon::start();
    d.import(&one_file_tar("f", b"x"), "img:1");
    let routes = [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/version"),
        ("GET", "/info"),
        ("GET", "/events"),
        ("GET", "/system/df"),
        ("GET", "/images/json"),
        ("POST", "/images/create"),
        ("POST", "/images/load"),
        ("GET", "/images/get"),
        ("POST", "/images/prune"),
        ("GET", "/images/img:1/json"),
        ("GET", "/images/img:1/history"),
        ("POST", "/images/img:1/tag"),
        ("GET", "/images/img:1/get"),
        ("DELETE", "/images/zzz"),
        ("GET", "/containers/json"),
        ("GET", "/containers/x/json"),
        ("POST", "/images/img:1/push"),
        ("GET", "/images/search"),
    ];
    let params = [
        "filters",
        "since",
        "until",
        "force",
        "noprune",
        "repo",
        "tag",
        "fromSrc",
        "fromImage",
        "changes",
        "names",
        "quiet",
        "all",
        "shared-size",
        "message",
        "platform",
        "type",
    ];
    let values = [
        "",
        "-",
        "%7B",
        "%7B%22a%22%3A1%7D",
        "%5B%5D",
        "true",
        "maybe",
        "99999999999999999999",
        "%00",
        "..%2F..",
        "a:b:c",
        "sha256:",
        "%FF%FE",
        "1.5",
        "-1",
    ];
    let mut rng = Lcg(0x5eed);
    for round in 0..300 {
        let (method, path) = routes[round % routes.len()];
        let prefix = rng.pick(&["", "/v1.24", "/v1.50", "/v1.44", "/v9.9", "/vx.y"]);
        let mut q = Vec::new();
        for _ in 0..(rng.next() % 4) {
            q.push(format!("{}={}", rng.pick(&params), rng.pick(&values)));
        }
        if path == "/events" {
            // a stream without an end would never answer in full
            q.push("until=1".into());
        }
        let full = format!("{prefix}{path}?{}", q.join("&"));
        let n = (rng.next() % 2048) as usize;
        let body = if path == "/images/load" || path == "/images/create" {
            // sometimes a tar header followed by junk
            let mut b = one_file_tar("x", b"y");
            b.truncate((rng.next() % 1024) as usize);
            b.extend(rng.bytes(n));
            b
        } else {
            rng.bytes(n)
        };
        let with_body = method != "GET" && method != "HEAD" && path != "/events";
        let r = d.try_request(
            method,
            &full,
            &[("Content-Type", "application/x-tar")],
            if with_body { Some(&body) } else { None },
        );
        let r = r.unwrap_or_else(|e| panic!("{method} {full}: {e}\n{}", d.log()));
        assert!(r.status < 600);
        if r.status >= 400 && method != "HEAD" {
            let v: Value = serde_json::from_slice(&r.body)
                .unwrap_or_else(|_| panic!("{method} {full}: non-JSON error {}", r.text()));
            assert!(v["message"].is_string(), "{method} {full}");
        }
    }
    assert_eq!(d.request("GET", "/_ping", None).status, 200);
    let log = d.log();
    assert!(!log.contains("panicked"), "berthd panicked:\n{log}");
    // nothing half-imported: one image, its layer and its blob
    assert_eq!(d.store_entries(), (1, 1));
}
