//! The `org.freedesktop.portal.ScreenCast` conversation over D-Bus (zbus,
//! blocking API): CreateSession → SelectSources → Start → OpenPipeWireRemote.
//!
//! Each portal request answers through a `Response` signal on a request
//! object whose path we can predict (`/org/freedesktop/portal/desktop/request/
//! <sender>/<token>`), so we subscribe before calling. Every wait has a
//! timeout; a refusal, a cancelled dialog or a missing portal is a
//! [`CaptureError::Portal`] naming the step.
//!
//! `persist_mode = 2` asks the portal to remember the user's choice until it
//! is revoked; the token it returns is kept in
//! `$XDG_STATE_HOME/framebus/portal-restore-token` (default
//! `~/.local/state/...`) and offered on the next run, so the user is asked
//! once. The spec makes tokens single-use, so the one every successful Start
//! returns replaces the file (xdg-desktop-portal 1.16 hands the same one back).

use crate::{CaptureError, Result};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use zbus::export::futures_core::Stream;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

const DEST: &str = "org.freedesktop.portal.Desktop";
const PATH: &str = "/org/freedesktop/portal/desktop";
const IFACE: &str = "org.freedesktop.portal.ScreenCast";

/// Source types of `SelectSources` (bit flags).
pub const SOURCE_MONITOR: u32 = 1;
pub const SOURCE_WINDOW: u32 = 2;
/// Cursor modes.
pub const CURSOR_HIDDEN: u32 = 1;
pub const CURSOR_EMBEDDED: u32 = 2;

fn err(step: &'static str, detail: impl std::fmt::Display) -> CaptureError {
    CaptureError::Portal {
        step,
        detail: detail.to_string(),
    }
}

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Run a future to completion on this thread, giving up after `timeout`
/// (`None`). zbus drives its socket on its own executor thread, which wakes us.
fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// One stream the portal started: the PipeWire node and where it sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalStream {
    pub node_id: u32,
    pub position: Option<(i32, i32)>,
    pub size: Option<(i32, i32)>,
    pub source_type: Option<u32>,
    pub id: Option<String>,
}

/// What the conversation produced: the PipeWire remote and its streams.
pub struct Started {
    pub fd: OwnedFd,
    pub streams: Vec<PortalStream>,
    /// Whether a saved restore token was offered to the portal.
    pub restored_with_token: bool,
    /// The open portal session; dropping it closes the session.
    pub session: Session,
}

/// An open ScreenCast session: closed (org.freedesktop.portal.Session.Close)
/// when dropped, which makes the compositor stop the stream.
pub struct Session {
    conn: zbus::blocking::Connection,
    handle: OwnedObjectPath,
}

impl Session {
    /// The session's object path.
    pub fn handle(&self) -> &str {
        self.handle.as_str()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.conn.call_method(
            Some(DEST),
            self.handle.as_str(),
            Some("org.freedesktop.portal.Session"),
            "Close",
            &(),
        );
    }
}

/// Options of a portal conversation.
#[derive(Clone, Debug)]
pub struct Request {
    /// `SOURCE_MONITOR | SOURCE_WINDOW` bits.
    pub source_types: u32,
    /// Ask for the cursor to be drawn into the frames.
    pub cursor: bool,
    /// Keep and reuse a restore token (persist_mode = 2).
    pub restore: bool,
    /// Time allowed for each portal answer (Start may show a dialog).
    pub timeout: Duration,
}

/// `$XDG_STATE_HOME/framebus/portal-restore-token`, `$XDG_STATE_HOME`
/// defaulting to `~/.local/state` (None without either variable).
pub fn token_path() -> Option<PathBuf> {
    token_path_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn token_path_from(
    state: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let base = match state.filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(home.filter(|v| !v.is_empty())?).join(".local/state"),
    };
    Some(base.join("framebus").join("portal-restore-token"))
}

fn read_token() -> Option<String> {
    let t = std::fs::read_to_string(token_path()?).ok()?;
    let t = t.trim();
    (!t.is_empty() && t.len() < 4096).then(|| t.to_string())
}

fn write_token(token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_path().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "neither $XDG_STATE_HOME nor $HOME is set",
        )
    })?;
    let dir = path.parent().unwrap_or(&path);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".portal-restore-token.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

fn handle_token() -> String {
    format!(
        "framebus{}_{}",
        std::process::id(),
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
    )
}

struct Portal {
    conn: zbus::blocking::Connection,
    sender: String,
    timeout: Duration,
}

type Results = HashMap<String, OwnedValue>;

impl Portal {
    fn connect(timeout: Duration) -> Result<Portal> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        {
            return Err(err(
                "connect to the D-Bus session bus",
                "neither $DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR is set",
            ));
        }
        let conn = zbus::blocking::connection::Builder::session()
            .and_then(|b| b.method_timeout(timeout).build())
            .map_err(|e| err("connect to the D-Bus session bus", e))?;
        let sender = conn
            .unique_name()
            .ok_or_else(|| err("connect to the D-Bus session bus", "no unique name"))?
            .trim_start_matches(':')
            .replace('.', "_");
        Ok(Portal {
            conn,
            sender,
            timeout,
        })
    }

    fn property(&self, name: &str) -> Result<u32> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(IFACE, name),
            )
            .map_err(|e| {
                err(
                    "read the ScreenCast portal's properties (is xdg-desktop-portal running \
                     with a backend that has ScreenCast?)",
                    e,
                )
            })?;
        let v: OwnedValue = reply
            .body()
            .deserialize()
            .map_err(|e| err("read the ScreenCast portal's properties", e))?;
        u32::try_from(v).map_err(|e| err("read the ScreenCast portal's properties", e))
    }

    /// Call `method` (whose options carry `handle_token = token`) and wait
    /// for the request's Response: its results, or an error naming `step`.
    fn call_and_wait<B>(
        &self,
        step: &'static str,
        method: &str,
        token: &str,
        body: &B,
    ) -> Result<Results>
    where
        B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
    {
        let path = format!("{PATH}/request/{}/{token}", self.sender);
        let req = zbus::blocking::Proxy::new(
            &self.conn,
            DEST,
            path.as_str(),
            "org.freedesktop.portal.Request",
        )
        .map_err(|e| err(step, e))?;
        let mut signals = block_on_timeout(req.inner().receive_signal("Response"), self.timeout)
            .ok_or_else(|| err(step, "timed out subscribing to the Response signal"))?
            .map_err(|e| err(step, e))?;
        let reply = self
            .conn
            .call_method(Some(DEST), PATH, Some(IFACE), method, body)
            .map_err(|e| err(step, e))?;
        let handle: OwnedObjectPath = reply.body().deserialize().map_err(|e| err(step, e))?;
        if handle.as_str() != path {
            return Err(err(
                step,
                format!(
                    "the portal answered on {handle}, expected {path} (xdg-desktop-portal < 0.9?)"
                ),
            ));
        }
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut signals).poll_next(cx));
        let msg = block_on_timeout(next, self.timeout)
            .ok_or_else(|| {
                err(
                    step,
                    format!(
                        "no answer from the portal within {:.0} s (a dialog left open?)",
                        self.timeout.as_secs_f64()
                    ),
                )
            })?
            .ok_or_else(|| err(step, "the D-Bus connection closed"))?;
        let (code, results): (u32, Results) = msg.body().deserialize().map_err(|e| err(step, e))?;
        match code {
            0 => Ok(results),
            1 => Err(err(step, "the user cancelled the screen-cast dialog")),
            c => Err(err(step, format!("the portal refused (response code {c})"))),
        }
    }
}

fn stream_of(node_id: u32, props: &HashMap<String, OwnedValue>) -> PortalStream {
    let pair = |k: &str| -> Option<(i32, i32)> {
        let v = props.get(k)?;
        <(i32, i32)>::try_from(v.try_clone().ok()?).ok()
    };
    PortalStream {
        node_id,
        position: pair("position"),
        size: pair("size"),
        source_type: props.get("source_type").and_then(|v| u32::try_from(v).ok()),
        id: props
            .get("id")
            .and_then(|v| <&str>::try_from(v).ok().map(str::to_string)),
    }
}

/// Run the whole conversation: a session, sources, Start (which may show the
/// compositor's picker unless a restore token is accepted) and the PipeWire fd.
pub fn start(req: &Request) -> Result<Started> {
    let p = Portal::connect(req.timeout)?;
    let version = p.property("version")?;
    let available = p.property("AvailableSourceTypes")?;
    let types = req.source_types & available;
    if types == 0 {
        return Err(err(
            "SelectSources",
            format!(
                "the portal offers source types {available:#x} (1 = monitor, 2 = window), none of \
                 the requested {:#x}",
                req.source_types
            ),
        ));
    }
    let cursor_modes = p.property("AvailableCursorModes").unwrap_or(CURSOR_HIDDEN);
    let want = if req.cursor {
        CURSOR_EMBEDDED
    } else {
        CURSOR_HIDDEN
    };
    let cursor_mode = if cursor_modes & want != 0 {
        want
    } else {
        cursor_modes & cursor_modes.wrapping_neg() // the lowest one offered
    };

    // CreateSession
    let token = handle_token();
    let session_token = handle_token();
    let mut opts: HashMap<&str, Value> = HashMap::new();
    opts.insert("handle_token", Value::from(token.as_str()));
    opts.insert("session_handle_token", Value::from(session_token.as_str()));
    let res = p.call_and_wait("CreateSession", "CreateSession", &token, &(opts,))?;
    let handle = res
        .get("session_handle")
        .and_then(|v| {
            <&str>::try_from(v).ok().map(str::to_string).or_else(|| {
                let v: &Value = v;
                ObjectPath::try_from(v.clone()).ok().map(|p| p.to_string())
            })
        })
        .ok_or_else(|| err("CreateSession", "the response has no session_handle"))?;
    let handle = OwnedObjectPath::try_from(handle).map_err(|e| err("CreateSession", e))?;
    let session = Session {
        conn: p.conn.clone(),
        handle: handle.clone(),
    };

    // SelectSources
    let saved = if req.restore && version >= 4 {
        read_token()
    } else {
        None
    };
    let token = handle_token();
    let mut opts: HashMap<&str, Value> = HashMap::new();
    opts.insert("handle_token", Value::from(token.as_str()));
    opts.insert("types", Value::from(types));
    opts.insert("multiple", Value::from(false));
    if cursor_mode != 0 {
        opts.insert("cursor_mode", Value::from(cursor_mode));
    }
    if req.restore && version >= 4 {
        opts.insert("persist_mode", Value::from(2u32));
        if let Some(t) = &saved {
            opts.insert("restore_token", Value::from(t.as_str()));
        }
    }
    p.call_and_wait("SelectSources", "SelectSources", &token, &(&handle, opts))?;

    // Start
    let token = handle_token();
    let mut opts: HashMap<&str, Value> = HashMap::new();
    opts.insert("handle_token", Value::from(token.as_str()));
    let res = p.call_and_wait("Start", "Start", &token, &(&handle, "", opts))?;
    let streams: Vec<(u32, HashMap<String, OwnedValue>)> = res
        .get("streams")
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| err("Start", "the response has no streams"))?;
    let streams: Vec<PortalStream> = streams.iter().map(|(n, p)| stream_of(*n, p)).collect();
    if streams.is_empty() {
        return Err(err("Start", "the portal started no stream"));
    }
    let new_token = res
        .get("restore_token")
        .and_then(|v| <&str>::try_from(v).ok().map(str::to_string));
    if req.restore {
        if let Some(t) = &new_token {
            write_token(t).map_err(|e| {
                err(
                    "saving the restore token",
                    format!("{}: {e}", token_path().unwrap_or_default().display()),
                )
            })?;
        }
    }

    // OpenPipeWireRemote
    let opts: HashMap<&str, Value> = HashMap::new();
    let reply = p
        .conn
        .call_method(
            Some(DEST),
            PATH,
            Some(IFACE),
            "OpenPipeWireRemote",
            &(&handle, opts),
        )
        .map_err(|e| err("OpenPipeWireRemote", e))?;
    let fd: zbus::zvariant::OwnedFd = reply
        .body()
        .deserialize()
        .map_err(|e| err("OpenPipeWireRemote", e))?;
    Ok(Started {
        fd: fd.into(),
        streams,
        restored_with_token: saved.is_some(),
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lives_under_xdg_state_home() {
        let p = token_path_from(Some("/s".into()), Some("/h".into())).unwrap();
        assert_eq!(p, PathBuf::from("/s/framebus/portal-restore-token"));
        let p = token_path_from(Some("".into()), Some("/h".into())).unwrap();
        assert_eq!(
            p,
            PathBuf::from("/h/.local/state/framebus/portal-restore-token")
        );
        assert!(token_path_from(None, None).is_none());
    }

    #[test]
    fn block_on_timeout_gives_up() {
        let t = Instant::now();
        assert!(
            block_on_timeout(std::future::pending::<()>(), Duration::from_millis(50)).is_none()
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(block_on_timeout(async { 7 }, Duration::ZERO), Some(7));
    }

    #[test]
    fn stream_props_are_read_and_missing_ones_are_none() {
        let mut props: HashMap<String, OwnedValue> = HashMap::new();
        props.insert(
            "position".into(),
            Value::from((10i32, 20i32)).try_into().unwrap(),
        );
        props.insert(
            "size".into(),
            Value::from((640i32, 480i32)).try_into().unwrap(),
        );
        props.insert("source_type".into(), Value::from(1u32).try_into().unwrap());
        let s = stream_of(42, &props);
        assert_eq!(s.node_id, 42);
        assert_eq!(s.position, Some((10, 20)));
        assert_eq!(s.size, Some((640, 480)));
        assert_eq!(s.source_type, Some(1));
        assert_eq!(stream_of(1, &HashMap::new()).size, None);
        // a wrongly typed value is ignored, not a panic
        props.insert("size".into(), Value::from("big").try_into().unwrap());
        assert_eq!(stream_of(1, &props).size, None);
    }
}
