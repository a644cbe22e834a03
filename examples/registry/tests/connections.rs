//! Connection limits, over real sockets against the real binary: a request body that
//! stalls is ended, a body that keeps trickling is not; an idle keep-alive connection, a
//! silent one and one stuck in its request head are closed; past `--max-connections` new
//! connections wait and are served once others close.
//!
//! Timeouts are configured short (1 s) so the tests run quickly; the generous read
//! deadlines only bound how long a failing test hangs, nothing is measured.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Server, registry_command, tempdir};

/// How long a test waits for something the server should do after a 1 s timeout.
const PATIENCE: Duration = Duration::from_secs(20);

fn start(data: &Path, extra: &[&str]) -> Server {
    let mut cmd = registry_command();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--storage")
        .arg(data.join("blobs"))
        .arg("--metadata")
        .arg(data.join("registry.db"))
        .args(extra);
    Server::spawn(cmd)
}

fn connect(server: &Server) -> TcpStream {
    let conn = TcpStream::connect(&server.addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn
}

/// Reads one HTTP/1.1 response (head and a Content-Length body); returns its status.
fn read_response(conn: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).expect("read a response head");
        assert_eq!(n, 1, "connection closed inside a response head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    status
}

/// Reads until the server closes the connection; panics if it is still open after
/// [`PATIENCE`]. Returns what was read before the close.
fn read_until_closed(conn: &mut TcpStream, what: &str, server: &Server) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return seen,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: still open after {PATIENCE:?}\n{}", server.log())
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn get_v2(conn: &mut TcpStream, server: &Server) {
    write!(conn, "GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).unwrap();
}

#[test]
fn a_stalled_request_body_is_ended() {
    let dir = tempdir();
    let server = start(dir.path(), &["--body-timeout", "1s"]);
    let body = common::random_bytes(common::seed(), 256 * 1024);
    let digest = common::sha256(&body);
    let mut conn = connect(&server);
    write!(
        conn,
        "POST /v2/stall/test/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .unwrap();
    conn.write_all(&body[..body.len() / 2]).unwrap();
    conn.flush().unwrap();
    // Nothing more is sent: the server ends the request and closes the connection.
    let answer = read_until_closed(&mut conn, "a connection whose body stalled", &server);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || !answer.starts_with("HTTP/1.1 2"),
        "a stalled upload must not succeed: {answer}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.log().contains("request body made no progress"),
        "{}",
        server.log()
    );
}

/// The body timeout limits stalls, not the length of an upload: a body that sends a
/// piece every 300 ms for well past the 1 s timeout is stored.
#[test]
fn a_slow_but_moving_body_completes() {
    let dir = tempdir();
    let server = start(dir.path(), &["--body-timeout", "1s"]);
    let body = common::random_bytes(common::seed(), 10 * 1024);
    let digest = common::sha256(&body);
    let mut conn = connect(&server);
    write!(
        conn,
        "POST /v2/slow/test/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .unwrap();
    // 10 pieces, 3 s in all.
    for piece in body.chunks(1024) {
        conn.write_all(piece).unwrap();
        conn.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(read_response(&mut conn), 201, "{}", server.log());
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let dir = tempdir();
    let server = start(dir.path(), &["--idle-timeout", "1s"]);
    let mut conn = connect(&server);
    // Two requests on one connection: it is kept alive between them ...
    get_v2(&mut conn, &server);
    assert_eq!(read_response(&mut conn), 200);
    get_v2(&mut conn, &server);
    assert_eq!(read_response(&mut conn), 200);
    // ... and closed once it sits idle.
    let rest = read_until_closed(&mut conn, "an idle keep-alive connection", &server);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));

    // A connection that never sends a byte is closed too.
    let mut silent = connect(&server);
    let rest = read_until_closed(&mut silent, "a silent connection", &server);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn a_request_head_that_stalls_is_closed() {
    let dir = tempdir();
    let server = start(
        dir.path(),
        &["--header-timeout", "1s", "--idle-timeout", "1h"],
    );
    let mut conn = connect(&server);
    write!(conn, "GET /v2/ HTTP/1.1\r\nHost: {}\r\n", server.addr).unwrap();
    conn.flush().unwrap();
    // The blank line that ends the head never comes.
    read_until_closed(&mut conn, "a connection with half a request head", &server);
}

#[test]
fn past_the_connection_limit_new_connections_wait_until_others_close() {
    let dir = tempdir();
    let server = start(
        dir.path(),
        &["--max-connections", "2", "--idle-timeout", "1h"],
    );
    let mut first = connect(&server);
    get_v2(&mut first, &server);
    assert_eq!(read_response(&mut first), 200);
    let mut second = connect(&server);
    get_v2(&mut second, &server);
    assert_eq!(read_response(&mut second), 200);

    // The third connects (the kernel's backlog holds it) but is not served ...
    let mut third = connect(&server);
    get_v2(&mut third, &server);
    third
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a third connection past a limit of 2 was answered: {other:?}"),
    }
    // ... until one of the first two closes; the open one still works meanwhile.
    get_v2(&mut second, &server);
    assert_eq!(read_response(&mut second), 200);
    drop(first);
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_response(&mut third), 200, "{}", server.log());
    assert!(
        server.log().contains("connection limit reached"),
        "{}",
        server.log()
    );
}
