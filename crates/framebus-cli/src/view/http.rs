//! The small HTTP/1.1 server of `framebus view` (std::net, a thread per
//! connection, keep-alive): `/` the page, `/frame.jpg?after=SEQ` the newest
//! JPEG newer than SEQ (long-poll, 2 s, else 204), `/stats` the figures as
//! JSON. Every request must carry `token=` (compared in constant time).
//! Requests are bounded (16 KiB of head, GET/HEAD only), connections are
//! capped, and every blocking read or write has a timeout, so the server
//! notices Ctrl-C within ~200 ms and a stuck browser holds only its thread.

use super::Hub;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: &str = include_str!("page.html");
const MAX_HEAD: usize = 16 << 10;
const MAX_CLIENTS: usize = 64;
/// How long `/frame.jpg` waits for a newer frame before answering 204.
const LONG_POLL: Duration = Duration::from_secs(2);
/// A connection with no request for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// Accept connections until the hub's stop flag is set.
pub(crate) fn serve(listener: TcpListener, hub: Arc<Hub>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let mut conns = Vec::new();
    while !hub.stop.is_set() {
        match listener.accept() {
            Ok((stream, _)) => {
                if hub.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    let _ = respond(
                        &stream,
                        503,
                        "text/plain",
                        &[],
                        b"too many connections",
                        false,
                    );
                    continue;
                }
                hub.clients.fetch_add(1, Ordering::Relaxed);
                let hub = hub.clone();
                if let Ok(h) = std::thread::Builder::new()
                    .name("framebus-view-conn".into())
                    .spawn(move || {
                        let _ = connection(stream, &hub);
                        hub.clients.fetch_sub(1, Ordering::Relaxed);
                    })
                {
                    conns.push(h);
                }
                conns.retain(|h| !h.is_finished());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

/// One keep-alive connection: requests until the peer closes, goes idle, or stop.
fn connection(mut stream: TcpStream, hub: &Hub) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut since = Instant::now();
    loop {
        let end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => i + 4,
            None => {
                if buf.len() > MAX_HEAD {
                    return respond(
                        &stream,
                        431,
                        "text/plain",
                        &[],
                        b"request head too large",
                        false,
                    );
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        if hub.stop.is_set() || since.elapsed() > IDLE {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        since = Instant::now();
        let keep = handle(&stream, &head, hub)?;
        if !keep || hub.stop.is_set() {
            return Ok(());
        }
    }
}

/// Answer one request; returns whether the connection stays open.
fn handle(stream: &TcpStream, head: &str, hub: &Hub) -> std::io::Result<bool> {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let close_asked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        })
    });
    let keep = version == "HTTP/1.1" && !close_asked;
    if !version.starts_with("HTTP/1.") {
        respond(stream, 400, "text/plain", &[], b"bad request", false)?;
        return Ok(false);
    }
    if method != "GET" && method != "HEAD" {
        respond(stream, 405, "text/plain", &[], b"only GET", keep)?;
        return Ok(keep);
    }
    let head_only = method == "HEAD";
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(a, _)| *a == k)
            .map(|(_, v)| v)
    };
    if !same(param("token").unwrap_or(""), &hub.token) {
        respond(
            stream,
            403,
            "text/plain",
            &[],
            b"missing or wrong token: open the URL framebus view printed",
            keep,
        )?;
        return Ok(keep);
    }
    let body_or_empty = |b: &[u8]| if head_only { Vec::new() } else { b.to_vec() };
    match path {
        "/" | "/index.html" => {
            respond(
                stream,
                200,
                "text/html; charset=utf-8",
                &[],
                &body_or_empty(PAGE.as_bytes()),
                keep,
            )?;
        }
        "/frame.jpg" => {
            let Some(after) = param("after").map_or(Some(0), |a| a.parse::<u64>().ok()) else {
                respond(
                    stream,
                    400,
                    "text/plain",
                    &[],
                    b"after= must be a frame number",
                    keep,
                )?;
                return Ok(keep);
            };
            match wait_newer(hub, after) {
                Some(l) => {
                    let age =
                        framebus_core::monotonic_ns().saturating_sub(l.timestamp_ns) as f64 / 1e6;
                    hub.served.fetch_add(1, Ordering::Relaxed);
                    respond(
                        stream,
                        200,
                        "image/jpeg",
                        &[
                            ("X-Frame-Seq", l.seq.to_string()),
                            ("X-Frame-Age-Ms", format!("{age:.2}")),
                        ],
                        if head_only { &[] } else { &l.jpeg[..] },
                        keep,
                    )?;
                }
                None => respond(stream, 204, "text/plain", &[], &[], keep)?,
            }
        }
        "/stats" => {
            let json = stats_json(hub);
            respond(
                stream,
                200,
                "application/json",
                &[],
                &body_or_empty(json.as_bytes()),
                keep,
            )?;
        }
        _ => respond(stream, 404, "text/plain", &[], b"not found", keep)?,
    }
    Ok(keep)
}

/// The newest frame if its number is above `after`, waiting up to
/// [`LONG_POLL`] for one (in 100 ms slices, for Ctrl-C).
fn wait_newer(hub: &Hub, after: u64) -> Option<super::Latest> {
    let deadline = Instant::now() + LONG_POLL;
    let mut l = hub.latest.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        hub.note_request();
        if l.seq > after && !l.jpeg.is_empty() {
            return Some(l.clone());
        }
        let now = Instant::now();
        if now >= deadline || hub.stop.is_set() {
            return None;
        }
        let slice = (deadline - now).min(Duration::from_millis(100));
        l = hub
            .fresh
            .wait_timeout(l, slice)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn stats_json(hub: &Hub) -> String {
    use crate::{json_num, json_str};
    let f = hub
        .figures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    format!(
        "{{\"source\": {}, \"width\": {}, \"height\": {}, \"format\": {}, \"fps\": {}, \
         \"received\": {}, \"drops\": {}, \"age_ms\": {}, \"encode_ms\": {}, \"jpeg_bytes\": {}, \
         \"served\": {}, \"clients\": {}, \"status\": {}}}",
        json_str(&f.source),
        f.width,
        f.height,
        json_str(&f.format),
        json_num(f.fps),
        f.received,
        f.drops,
        json_num(f.age_ms),
        json_num(f.encode_ms),
        f.jpeg_bytes,
        f.served,
        f.clients,
        json_str(&f.status)
    )
}

/// Compare without an early exit (the token is a secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn respond(
    mut stream: &TcpStream,
    code: u16,
    ctype: &str,
    extra: &[(&str, String)],
    body: &[u8],
    keep: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: {}\r\n",
        body.len(),
        if keep { "keep-alive" } else { "close" }
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_by_content() {
        assert!(super::same("abc", "abc"));
        assert!(!super::same("abc", "abd"));
        assert!(!super::same("ab", "abc"));
        assert!(!super::same("", "abc"));
    }
}
