//! The request handlers of the output-side globals: `wl_output`, `zxdg_output_manager_v1`,
//! `ext_output_image_capture_source_manager_v1` and `ext_image_copy_capture_manager_v1`
//! with its sessions and frames (the capture itself is in `state.rs`).

use wayland_protocols::ext::image_capture_source::v1::server::{
    ext_image_capture_source_v1::{self, ExtImageCaptureSourceV1},
    ext_output_image_capture_source_manager_v1::{self, ExtOutputImageCaptureSourceManagerV1},
};
use wayland_protocols::ext::image_copy_capture::v1::server::{
    ext_image_copy_capture_cursor_session_v1::{self, ExtImageCopyCaptureCursorSessionV1},
    ext_image_copy_capture_frame_v1::{self, ExtImageCopyCaptureFrameV1},
    ext_image_copy_capture_manager_v1::{self, ExtImageCopyCaptureManagerV1},
    ext_image_copy_capture_session_v1::{self, ExtImageCopyCaptureSessionV1},
};
use wayland_protocols::xdg::xdg_output::zv1::server::{
    zxdg_output_manager_v1::{self, ZxdgOutputManagerV1},
    zxdg_output_v1::{self, ZxdgOutputV1},
};
use wayland_server::backend::ClientId;
use wayland_server::protocol::wl_output::{self, WlOutput};
use wayland_server::{Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource};

use crate::state::{FrameState, Session, State};

// ---------------------------------------------------------------- wl_output

impl GlobalDispatch<WlOutput, u32> for State {
    fn bind(
        state: &mut State,
        _handle: &DisplayHandle,
        _client: &Client,
        resource: New<WlOutput>,
        key: &u32,
        data_init: &mut DataInit<'_, State>,
    ) {
        let wl = data_init.init(resource, *key);
        let Some(o) = state.outputs.iter_mut().find(|o| o.key == *key) else {
            return; // removed while the client was binding: an inert output
        };
        let (lw, lh) = o.logical_size();
        wl.geometry(
            o.x,
            o.y,
            // Physical size in mm at 96 dpi of the logical size.
            (lw as f64 * 25.4 / 96.0) as i32,
            (lh as f64 * 25.4 / 96.0) as i32,
            wl_output::Subpixel::Unknown,
            "framebus".into(),
            "headless test output".into(),
            o.transform,
        );
        wl.mode(
            wl_output::Mode::Current | wl_output::Mode::Preferred,
            o.width as i32,
            o.height as i32,
            60_000,
        );
        if wl.version() >= 2 {
            wl.scale(o.scale);
        }
        if wl.version() >= 4 {
            wl.name(o.name.clone());
            wl.description(format!("framebus test output {}", o.name));
        }
        if wl.version() >= 2 {
            wl.done();
        }
        o.wl_outputs.push(wl);
    }
}

impl Dispatch<WlOutput, u32> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        _resource: &WlOutput,
        _request: wl_output::Request,
        _key: &u32,
        _dhandle: &DisplayHandle,
        _data_init: &mut DataInit<'_, State>,
    ) {
        // Only `release`, a destructor.
    }

    fn destroyed(state: &mut State, _client: ClientId, resource: &WlOutput, _key: &u32) {
        state.forget_wl_output(&resource.id());
    }
}

// ---------------------------------------------------------------- xdg-output

impl GlobalDispatch<ZxdgOutputManagerV1, ()> for State {
    fn bind(
        _state: &mut State,
        _handle: &DisplayHandle,
        _client: &Client,
        resource: New<ZxdgOutputManagerV1>,
        _global_data: &(),
        data_init: &mut DataInit<'_, State>,
    ) {
        data_init.init(resource, ());
    }
}

impl Dispatch<ZxdgOutputManagerV1, ()> for State {
    fn request(
        state: &mut State,
        _client: &Client,
        _resource: &ZxdgOutputManagerV1,
        request: zxdg_output_manager_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        if let zxdg_output_manager_v1::Request::GetXdgOutput { id, output } = request {
            let key = output.data::<u32>().copied().unwrap_or(0);
            let xdg = data_init.init(id, ());
            state.send_xdg_output(key, &xdg, &output);
        }
    }
}

impl Dispatch<ZxdgOutputV1, ()> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        _resource: &ZxdgOutputV1,
        _request: zxdg_output_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        _data_init: &mut DataInit<'_, State>,
    ) {
    }
}

// ---------------------------------------------------------------- image capture sources

impl GlobalDispatch<ExtOutputImageCaptureSourceManagerV1, ()> for State {
    fn bind(
        _state: &mut State,
        _handle: &DisplayHandle,
        _client: &Client,
        resource: New<ExtOutputImageCaptureSourceManagerV1>,
        _global_data: &(),
        data_init: &mut DataInit<'_, State>,
    ) {
        data_init.init(resource, ());
    }
}

impl Dispatch<ExtOutputImageCaptureSourceManagerV1, ()> for State {
    fn request(
        state: &mut State,
        _client: &Client,
        _resource: &ExtOutputImageCaptureSourceManagerV1,
        request: ext_output_image_capture_source_manager_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        if let ext_output_image_capture_source_manager_v1::Request::CreateSource {
            source,
            output,
        } = request
        {
            // The source names the output by key; a removed output gives an inert source
            // whose sessions are stopped at once.
            let key = output
                .data::<u32>()
                .copied()
                .filter(|k| state.output(*k).is_some());
            data_init.init(source, key);
        }
    }
}

impl Dispatch<ExtImageCaptureSourceV1, Option<u32>> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        _resource: &ExtImageCaptureSourceV1,
        _request: ext_image_capture_source_v1::Request,
        _data: &Option<u32>,
        _dhandle: &DisplayHandle,
        _data_init: &mut DataInit<'_, State>,
    ) {
    }
}

// ---------------------------------------------------------------- image copy capture

impl GlobalDispatch<ExtImageCopyCaptureManagerV1, ()> for State {
    fn bind(
        _state: &mut State,
        _handle: &DisplayHandle,
        _client: &Client,
        resource: New<ExtImageCopyCaptureManagerV1>,
        _global_data: &(),
        data_init: &mut DataInit<'_, State>,
    ) {
        data_init.init(resource, ());
    }
}

impl Dispatch<ExtImageCopyCaptureManagerV1, ()> for State {
    fn request(
        state: &mut State,
        _client: &Client,
        resource: &ExtImageCopyCaptureManagerV1,
        request: ext_image_copy_capture_manager_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        match request {
            ext_image_copy_capture_manager_v1::Request::CreateSession {
                session,
                source,
                options,
            } => {
                let valid = ext_image_copy_capture_manager_v1::Options::all().bits();
                let bits = match options {
                    wayland_server::WEnum::Value(o) => o.bits(),
                    wayland_server::WEnum::Unknown(b) => b,
                };
                if bits & !valid != 0 {
                    resource.post_error(
                        ext_image_copy_capture_manager_v1::Error::InvalidOption,
                        format!("invalid options {bits:#x}"),
                    );
                    return;
                }
                // paint_cursors is accepted and has nothing to paint: this compositor has no cursor.
                let key = source
                    .data::<Option<u32>>()
                    .copied()
                    .flatten()
                    .filter(|k| state.output(*k).is_some());
                let session = data_init.init(session, ());
                let id = session.id();
                state.sessions.insert(
                    id.clone(),
                    Session {
                        resource: session,
                        output: key,
                        last_seq: None,
                        frame: None,
                    },
                );
                match key {
                    Some(_) => state.send_constraints(&id),
                    None => {
                        if let Some(s) = state.sessions.get(&id) {
                            s.resource.stopped();
                        }
                    }
                }
            }
            ext_image_copy_capture_manager_v1::Request::CreatePointerCursorSession {
                session,
                ..
            } => {
                // Unreachable for a well-behaved client (no wl_seat, so no wl_pointer), but
                // a new id must still be initialised before the error.
                let s = data_init.init(session, ());
                s.post_error(
                    ext_image_copy_capture_manager_v1::Error::InvalidOption,
                    "cursor sessions are not supported",
                );
            }
            ext_image_copy_capture_manager_v1::Request::Destroy => {}
            _ => {}
        }
    }
}

impl Dispatch<ExtImageCopyCaptureCursorSessionV1, ()> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        _resource: &ExtImageCopyCaptureCursorSessionV1,
        request: ext_image_copy_capture_cursor_session_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        if let ext_image_copy_capture_cursor_session_v1::Request::GetCaptureSession { session } =
            request
        {
            let s = data_init.init(session, ());
            s.post_error(
                ext_image_copy_capture_manager_v1::Error::InvalidOption,
                "cursor sessions are not supported",
            );
        }
    }
}

impl Dispatch<ExtImageCopyCaptureSessionV1, ()> for State {
    fn request(
        state: &mut State,
        _client: &Client,
        resource: &ExtImageCopyCaptureSessionV1,
        request: ext_image_copy_capture_session_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        match request {
            ext_image_copy_capture_session_v1::Request::CreateFrame { frame } => {
                let sid = resource.id();
                let has_frame = state.sessions.get(&sid).is_some_and(|s| s.frame.is_some());
                let frame = data_init.init(frame, ());
                if has_frame {
                    resource.post_error(
                        ext_image_copy_capture_session_v1::Error::DuplicateFrame,
                        "create_frame before the previous frame was destroyed",
                    );
                    return;
                }
                let fid = frame.id();
                if let Some(s) = state.sessions.get_mut(&sid) {
                    s.frame = Some(fid.clone());
                }
                state.frames.insert(
                    fid,
                    FrameState {
                        resource: frame,
                        session: sid,
                        buffer: None,
                        buffer_damage: Vec::new(),
                        captured: false,
                        waiting: false,
                    },
                );
            }
            ext_image_copy_capture_session_v1::Request::Destroy => {}
            _ => {}
        }
    }

    fn destroyed(
        state: &mut State,
        _client: ClientId,
        resource: &ExtImageCopyCaptureSessionV1,
        _data: &(),
    ) {
        state.sessions.remove(&resource.id());
    }
}

impl Dispatch<ExtImageCopyCaptureFrameV1, ()> for State {
    fn request(
        state: &mut State,
        _client: &Client,
        resource: &ExtImageCopyCaptureFrameV1,
        request: ext_image_copy_capture_frame_v1::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        _data_init: &mut DataInit<'_, State>,
    ) {
        use ext_image_copy_capture_frame_v1::{Error, Request};
        let id = resource.id();
        let Some(f) = state.frames.get_mut(&id) else {
            return;
        };
        match request {
            Request::AttachBuffer { buffer } => {
                if f.captured {
                    resource.post_error(Error::AlreadyCaptured, "attach_buffer after capture");
                    return;
                }
                f.buffer = Some(buffer);
            }
            Request::DamageBuffer {
                x,
                y,
                width,
                height,
            } => {
                if f.captured {
                    resource.post_error(Error::AlreadyCaptured, "damage_buffer after capture");
                    return;
                }
                if x < 0 || y < 0 || width <= 0 || height <= 0 {
                    resource.post_error(
                        Error::InvalidBufferDamage,
                        format!("invalid buffer damage {x},{y} {width}x{height}"),
                    );
                    return;
                }
                f.buffer_damage.push((x, y, width, height));
            }
            Request::Capture => {
                if f.captured {
                    resource.post_error(Error::AlreadyCaptured, "capture sent twice");
                    return;
                }
                if f.buffer.is_none() {
                    resource.post_error(Error::NoBuffer, "capture without attach_buffer");
                    return;
                }
                f.captured = true;
                state.capture(&id);
            }
            Request::Destroy => {}
            _ => {}
        }
    }

    fn destroyed(
        state: &mut State,
        _client: ClientId,
        resource: &ExtImageCopyCaptureFrameV1,
        _data: &(),
    ) {
        let id = resource.id();
        if let Some(f) = state.frames.remove(&id) {
            if let Some(s) = state.sessions.get_mut(&f.session) {
                if s.frame.as_ref() == Some(&id) {
                    s.frame = None;
                }
            }
        }
    }
}
