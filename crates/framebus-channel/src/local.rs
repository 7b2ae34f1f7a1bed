//! An in-process channel with the semantics of the shared-memory one (latest /
//! lossless with back-pressure, pins, close-then-drain), for threads in one
//! process. Pins are plain [`framebus_core::Lease`] clones: a received frame
//! is a read-only clone of the sent one. Names live in a process-wide registry.

use crate::transport::{not_found, time_left, wait_on, FrameReceiver, FrameSender, Transport};
use crate::{ChannelError, CloseReason, Mode, OnFull, PublisherConfig, Result};
use framebus_core::Frame;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The in-process implementation.
pub struct Local;

struct Queue {
    frames: VecDeque<Frame>,
    skipped: u64,
    leaving: bool,
}

struct Inner {
    name: String,
    mode: Mode,
    on_full: OnFull,
    state: Mutex<State>,
    /// Signalled on every send, take, join, leave and close.
    changed: Condvar,
}

struct State {
    subs: Vec<(u64, Queue)>,
    next_sub: u64,
    next_seq: u64,
    closed: bool,
    /// Senders waiting for room right now.
    waiting: usize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn registry() -> MutexGuard<'static, HashMap<String, Weak<Inner>>> {
    static REG: OnceLock<Mutex<HashMap<String, Weak<Inner>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Sending end of an in-process channel.
pub struct LocalPublisher {
    inner: Arc<Inner>,
}

/// Receiving end of an in-process channel.
pub struct LocalSubscriber {
    inner: Arc<Inner>,
    id: u64,
}

impl Transport for Local {
    type Tx = LocalPublisher;
    type Rx = LocalSubscriber;

    fn publish(name: &str, cfg: PublisherConfig) -> Result<LocalPublisher> {
        crate::wire::validate_name(name)?;
        let mut reg = registry();
        if reg.get(name).is_some_and(|w| w.strong_count() > 0) {
            return Err(ChannelError::NameInUse(name.to_owned()));
        }
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            mode: cfg.mode,
            on_full: cfg.on_full,
            state: Mutex::new(State {
                subs: Vec::new(),
                next_sub: 1,
                next_seq: 1,
                closed: false,
                waiting: 0,
            }),
            changed: Condvar::new(),
        });
        reg.insert(name.to_owned(), Arc::downgrade(&inner));
        Ok(LocalPublisher { inner })
    }

    fn subscribe(name: &str, timeout: Duration) -> Result<LocalSubscriber> {
        crate::wire::validate_name(name)?;
        let start = Instant::now();
        let inner = loop {
            let found = registry().get(name).and_then(Weak::upgrade);
            match found {
                Some(i) if !i.lock().closed => break i,
                _ if start.elapsed() >= timeout => return Err(not_found(name, start.elapsed())),
                // like the shared-memory channel: no event for "a publisher appeared"
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let mut st = inner.lock();
        let id = st.next_sub;
        st.next_sub += 1;
        st.subs.push((
            id,
            Queue {
                frames: VecDeque::new(),
                skipped: 0,
                leaving: false,
            },
        ));
        drop(st);
        inner.changed.notify_all();
        Ok(LocalSubscriber { inner, id })
    }
}

impl FrameSender for LocalPublisher {
    fn send(&self, frame: &Frame) -> Result<u64> {
        let inner = &self.inner;
        let start = Instant::now();
        let mut st = inner.lock();
        loop {
            if st.closed {
                return Err(ChannelError::closed(
                    &inner.name,
                    CloseReason::PublisherClosed,
                ));
            }
            let Mode::Lossless { depth } = inner.mode else {
                break;
            };
            let Some((id, _)) = st
                .subs
                .iter()
                .find(|(_, q)| !q.leaving && q.frames.len() >= depth as usize)
            else {
                break;
            };
            let full = |waited| ChannelError::Full {
                name: inner.name.clone(),
                subscriber: *id,
                depth,
                waited,
            };
            let deadline = match inner.on_full {
                OnFull::Raise => return Err(full(None)),
                OnFull::Block(t) => t.map(|t| start + t),
            };
            let left =
                time_left(deadline, None, "room").map_err(|_| full(Some(start.elapsed())))?;
            st.waiting += 1;
            st = wait_on(&inner.changed, st, left);
            st.waiting -= 1;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let sent = frame
            .clone()
            .with_meta(frame.timestamp_ns(), seq)
            .into_readonly();
        let mut replaced = Vec::new();
        for (_, q) in st.subs.iter_mut().filter(|(_, q)| !q.leaving) {
            if inner.mode == Mode::Latest {
                if let Some(old) = q.frames.pop_front() {
                    q.skipped += 1;
                    replaced.push(old);
                }
            }
            q.frames.push_back(sent.clone());
        }
        drop(st);
        drop(replaced);
        inner.changed.notify_all();
        Ok(seq)
    }

    fn subscriber_count(&self) -> usize {
        self.inner
            .lock()
            .subs
            .iter()
            .filter(|(_, q)| !q.leaving)
            .count()
    }

    fn waiting_senders(&self) -> usize {
        self.inner.lock().waiting
    }

    fn close(&self) {
        self.inner.lock().closed = true;
        registry().remove(&self.inner.name);
        self.inner.changed.notify_all();
    }
}

impl Drop for LocalPublisher {
    fn drop(&mut self) {
        self.close();
    }
}

impl FrameReceiver for LocalSubscriber {
    fn recv(&mut self, timeout: Option<Duration>) -> Result<Frame> {
        let inner = &self.inner;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = inner.lock();
        loop {
            let closed = st.closed;
            let q = match st.subs.iter_mut().find(|(id, _)| *id == self.id) {
                Some((_, q)) => q,
                None => {
                    return Err(ChannelError::closed(
                        &inner.name,
                        CloseReason::PublisherGone,
                    ))
                }
            };
            if let Some(f) = q.frames.pop_front() {
                drop(st);
                inner.changed.notify_all(); // room for a blocked lossless sender
                return Ok(f);
            }
            if closed {
                return Err(ChannelError::closed(
                    &inner.name,
                    CloseReason::PublisherGone,
                ));
            }
            let left = time_left(deadline, timeout, "a frame")?;
            st = wait_on(&inner.changed, st, left);
        }
    }

    fn skipped(&self) -> u64 {
        let st = self.inner.lock();
        st.subs
            .iter()
            .find(|(id, _)| *id == self.id)
            .map_or(0, |(_, q)| q.skipped)
    }
}

impl Drop for LocalSubscriber {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.subs.retain(|(id, _)| *id != self.id);
        drop(st);
        self.inner.changed.notify_all();
    }
}
