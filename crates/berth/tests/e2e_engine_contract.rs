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

#[test]
fn null_means_not_given() {
    let Some(d) = daemon_with_busybox("null_means_not_given") else {
        return;
    };
    // Docker's Go client sends every optional map and list of a build as `null`
    let ctx = dockerfile_tar("FROM bb\nLABEL a=b\n");
    let r = d.try_request(
        "POST",
        "/build?t=nulls:1&buildargs=null&labels=null&cachefrom=null&ulimits=null",
        &[("Content-Type", "application/x-tar")],
        Some(&ctx),
    );
    let r = r.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("errorDetail"), "{}", r.text());
    let img = d.get_json("/images/nulls:1/json");
    assert_eq!(img["Config"]["Labels"]["a"], "b");
    // and ulimits given reach the RUN containers
    let ctx = dockerfile_tar("FROM bb\nRUN ulimit -n > /n\n");
    let q = "/build?t=lim:1&ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22Soft%22%3A512%2C%22Hard%22%3A512%7D%5D";
    let r = d
        .try_request(
            "POST",
            q,
            &[("Content-Type", "application/x-tar")],
            Some(&ctx),
        )
        .unwrap();
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
