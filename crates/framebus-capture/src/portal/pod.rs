//! A small SPA pod writer and reader, in pure Rust, for the few PipeWire
//! parameters the portal backend exchanges (EnumFormat, Buffers, Meta) and the
//! negotiated Format it reads back.
//!
//! The pod wire format: every pod is `{u32 size, u32 type, body}` in native
//! byte order, `size` being the body's length without padding, and every pod
//! is padded to 8 bytes. Objects are `{u32 object type, u32 param id}` then
//! properties `{u32 key, u32 flags, pod}`; a choice is `{u32 kind, u32 flags,
//! child header {u32 size, u32 type}, values…}`. The tests compare the bytes
//! with what libspa's C builder (`spa_pod_builder_add_object`) produces.
//!
//! The reader never trusts its input: every length is checked against the
//! buffer, and malformed pods are skipped or reported as `None`.

/// SPA type ids of the pods used here (spa/utils/type.h).
pub mod ty {
    pub const ID: u32 = 3;
    pub const INT: u32 = 4;
    pub const LONG: u32 = 5;
    pub const RECTANGLE: u32 = 10;
    pub const FRACTION: u32 = 11;
    pub const OBJECT: u32 = 15;
    pub const CHOICE: u32 = 19;
}

/// Choice kinds (spa/pod/pod.h).
pub mod choice {
    pub const RANGE: u32 = 1;
    pub const ENUM: u32 = 3;
    pub const FLAGS: u32 = 4;
}

/// Object types, param ids and property keys (spa/param/*.h).
pub mod key {
    pub const OBJECT_FORMAT: u32 = 0x40003;
    pub const OBJECT_PARAM_BUFFERS: u32 = 0x40004;
    pub const OBJECT_PARAM_META: u32 = 0x40005;
    pub const PARAM_ENUM_FORMAT: u32 = 3;
    pub const PARAM_FORMAT: u32 = 4;
    pub const PARAM_BUFFERS: u32 = 5;
    pub const PARAM_META: u32 = 6;
    pub const FORMAT_MEDIA_TYPE: u32 = 1;
    pub const FORMAT_MEDIA_SUBTYPE: u32 = 2;
    pub const MEDIA_TYPE_VIDEO: u32 = 2;
    pub const MEDIA_SUBTYPE_RAW: u32 = 1;
    pub const VIDEO_FORMAT: u32 = 0x20001;
    pub const VIDEO_MODIFIER: u32 = 0x20002;
    pub const VIDEO_SIZE: u32 = 0x20003;
    pub const VIDEO_FRAMERATE: u32 = 0x20004;
    pub const BUFFERS_BUFFERS: u32 = 1;
    pub const BUFFERS_DATA_TYPE: u32 = 6;
    pub const META_TYPE: u32 = 1;
    pub const META_SIZE: u32 = 2;
}

/// One pod value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Id(u32),
    Int(i32),
    Long(i64),
    Rectangle(u32, u32),
    Fraction(u32, u32),
    /// `kind` is one of [`choice`]; every value has the same type.
    Choice {
        kind: u32,
        values: Vec<Value>,
    },
    Object {
        object_type: u32,
        id: u32,
        props: Vec<(u32, Value)>,
    },
}

fn pad8(out: &mut Vec<u8>) {
    while out.len() & 7 != 0 {
        out.push(0);
    }
}

fn u32s(out: &mut Vec<u8>, vals: &[u32]) {
    for v in vals {
        out.extend_from_slice(&v.to_ne_bytes());
    }
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::Id(_) => ty::ID,
            Value::Int(_) => ty::INT,
            Value::Long(_) => ty::LONG,
            Value::Rectangle(..) => ty::RECTANGLE,
            Value::Fraction(..) => ty::FRACTION,
            Value::Choice { .. } => ty::CHOICE,
            Value::Object { .. } => ty::OBJECT,
        }
    }

    /// The body of a scalar, unpadded (what a choice holds).
    fn scalar_body(&self, out: &mut Vec<u8>) {
        match *self {
            Value::Id(v) => u32s(out, &[v]),
            Value::Int(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Value::Long(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Value::Rectangle(w, h) => u32s(out, &[w, h]),
            Value::Fraction(n, d) => u32s(out, &[n, d]),
            Value::Choice { .. } | Value::Object { .. } => {}
        }
    }

    /// Append this value as a complete pod (header, body, padding to 8).
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        u32s(out, &[0, self.type_id()]);
        match self {
            Value::Choice { kind, values } => {
                let child_ty = values.first().map_or(ty::INT, Value::type_id);
                let mut one = Vec::new();
                if let Some(v) = values.first() {
                    v.scalar_body(&mut one);
                }
                u32s(out, &[*kind, 0, one.len() as u32, child_ty]);
                for v in values {
                    v.scalar_body(out);
                }
            }
            Value::Object {
                object_type,
                id,
                props,
            } => {
                u32s(out, &[*object_type, *id]);
                for (k, v) in props {
                    u32s(out, &[*k, 0]);
                    v.write(out);
                }
            }
            scalar => scalar.scalar_body(out),
        }
        let size = (out.len() - start - 8) as u32;
        out[start..start + 4].copy_from_slice(&size.to_ne_bytes());
        pad8(out);
    }

    /// This value as a standalone, 8-byte aligned pod.
    pub fn to_pod(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write(&mut v);
        v
    }
}

/// A pod in a byte buffer: (type, body), or `None` when it does not fit.
pub fn read_pod(buf: &[u8]) -> Option<(u32, &[u8])> {
    let size = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let ty = u32::from_ne_bytes(buf.get(4..8)?.try_into().ok()?);
    let body = buf.get(8..8usize.checked_add(size)?)?;
    Some((ty, body))
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parse a scalar or choice body into a [`Value`].
fn parse(ty_: u32, body: &[u8]) -> Option<Value> {
    Some(match ty_ {
        ty::ID => Value::Id(word(body, 0)?),
        ty::INT => Value::Int(word(body, 0)? as i32),
        ty::LONG => Value::Long(i64::from_ne_bytes(body.get(0..8)?.try_into().ok()?)),
        ty::RECTANGLE => Value::Rectangle(word(body, 0)?, word(body, 4)?),
        ty::FRACTION => Value::Fraction(word(body, 0)?, word(body, 4)?),
        ty::CHOICE => {
            let kind = word(body, 0)?;
            let child_size = word(body, 8)? as usize;
            let child_ty = word(body, 12)?;
            let mut values = Vec::new();
            if child_size > 0 {
                for chunk in body.get(16..)?.chunks_exact(child_size).take(64) {
                    values.push(parse(child_ty, chunk)?);
                }
            }
            Value::Choice { kind, values }
        }
        _ => return None,
    })
}

/// An object pod read back: (object type, param id, properties).
pub type Object = (u32, u32, Vec<(u32, Value)>);

/// The properties of an object pod: `(key, value)` for every property whose
/// value this reader understands (others are skipped). `None` when `pod` is
/// not an object.
pub fn object_props(pod: &[u8]) -> Option<Object> {
    let (t, body) = read_pod(pod)?;
    if t != ty::OBJECT {
        return None;
    }
    let (object_type, id) = (word(body, 0)?, word(body, 4)?);
    let mut props = Vec::new();
    let mut at = 8usize;
    while at + 16 <= body.len() {
        let k = word(body, at)?;
        let Some((vt, vbody)) = read_pod(&body[at + 8..]) else {
            break;
        };
        if let Some(v) = parse(vt, vbody) {
            props.push((k, v));
        }
        at += 8 + 8 + vbody.len().div_ceil(8) * 8;
    }
    Some((object_type, id, props))
}

/// A property's fixed value: the value itself, or the default of a choice.
pub fn fixed(v: &Value) -> Option<&Value> {
    match v {
        Value::Choice { values, .. } => values.first(),
        v => Some(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spa_pod_builder_add_object(Format, EnumFormat, mediaType Id(video),
    /// mediaSubtype Id(raw), format CHOICE_ENUM_Id(4, BGRx, BGRx, BGRA, RGBA),
    /// size CHOICE_RANGE_Rectangle(640x480, 1x1, 16384x16384), framerate
    /// CHOICE_RANGE_Fraction(0/1, 0/1, 1000/1))` from libspa 0.3.65.
    const C_ENUM_FORMAT: [u8; 224] = [
        0xd8, 0x00, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03, 0x00,
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00,
        0x00, 0x13, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x0c,
        0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x28, 0x00, 0x00, 0x00, 0x13, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x08, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x80, 0x02, 0x00, 0x00, 0xe0, 0x01,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00,
        0x40, 0x00, 0x00, 0x04, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00,
        0x13, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00,
        0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe8, 0x03, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    ];

    /// `(ParamBuffers, Buffers, buffers CHOICE_RANGE_Int(8, 2, 16), dataType
    /// CHOICE_FLAGS_Int((1<<MemFd)|(1<<MemPtr)))`.
    const C_BUFFERS: [u8; 104] = [
        0x60, 0x00, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x04, 0x00, 0x04, 0x00, 0x05, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x13, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04,
        0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
        0x00, 0x13, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// `(ParamMeta, Meta, type Id(Header), size Int(32))`.
    const C_META: [u8; 64] = [
        0x38, 0x00, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x05, 0x00, 0x04, 0x00, 0x06, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
    ];

    fn enum_format() -> Value {
        Value::Object {
            object_type: key::OBJECT_FORMAT,
            id: key::PARAM_ENUM_FORMAT,
            props: vec![
                (key::FORMAT_MEDIA_TYPE, Value::Id(key::MEDIA_TYPE_VIDEO)),
                (key::FORMAT_MEDIA_SUBTYPE, Value::Id(key::MEDIA_SUBTYPE_RAW)),
                (
                    key::VIDEO_FORMAT,
                    Value::Choice {
                        kind: choice::ENUM,
                        values: vec![Value::Id(8), Value::Id(8), Value::Id(12), Value::Id(11)],
                    },
                ),
                (
                    key::VIDEO_SIZE,
                    Value::Choice {
                        kind: choice::RANGE,
                        values: vec![
                            Value::Rectangle(640, 480),
                            Value::Rectangle(1, 1),
                            Value::Rectangle(16384, 16384),
                        ],
                    },
                ),
                (
                    key::VIDEO_FRAMERATE,
                    Value::Choice {
                        kind: choice::RANGE,
                        values: vec![
                            Value::Fraction(0, 1),
                            Value::Fraction(0, 1),
                            Value::Fraction(1000, 1),
                        ],
                    },
                ),
            ],
        }
    }

    #[test]
    fn enum_format_matches_libspa() {
        assert_eq!(enum_format().to_pod(), C_ENUM_FORMAT);
    }

    #[test]
    fn buffers_and_meta_match_libspa() {
        let bufs = Value::Object {
            object_type: key::OBJECT_PARAM_BUFFERS,
            id: key::PARAM_BUFFERS,
            props: vec![
                (
                    key::BUFFERS_BUFFERS,
                    Value::Choice {
                        kind: choice::RANGE,
                        values: vec![Value::Int(8), Value::Int(2), Value::Int(16)],
                    },
                ),
                (
                    key::BUFFERS_DATA_TYPE,
                    Value::Choice {
                        kind: choice::FLAGS,
                        values: vec![Value::Int(6)],
                    },
                ),
            ],
        };
        assert_eq!(bufs.to_pod(), C_BUFFERS);
        let meta = Value::Object {
            object_type: key::OBJECT_PARAM_META,
            id: key::PARAM_META,
            props: vec![
                (key::META_TYPE, Value::Id(1)),
                (key::META_SIZE, Value::Int(32)),
            ],
        };
        assert_eq!(meta.to_pod(), C_META);
    }

    #[test]
    fn reader_reads_back_what_libspa_wrote() {
        let (t, id, props) = object_props(&C_ENUM_FORMAT).unwrap();
        assert_eq!((t, id), (key::OBJECT_FORMAT, key::PARAM_ENUM_FORMAT));
        let Value::Object { props: want, .. } = enum_format() else {
            unreachable!()
        };
        assert_eq!(props, want);
        let size = props.iter().find(|p| p.0 == key::VIDEO_SIZE).unwrap();
        assert_eq!(fixed(&size.1), Some(&Value::Rectangle(640, 480)));
    }

    #[test]
    fn reader_survives_garbage() {
        assert!(object_props(&[]).is_none());
        assert!(object_props(&[1, 2, 3]).is_none());
        // a size past the end
        let mut bad = C_META.to_vec();
        bad[0] = 0xff;
        assert!(object_props(&bad).is_none());
        // every truncation parses or fails without panicking
        for n in 0..C_ENUM_FORMAT.len() {
            let _ = object_props(&C_ENUM_FORMAT[..n]);
        }
        // a choice claiming a zero-sized child
        let mut z = C_ENUM_FORMAT.to_vec();
        z[88] = 0;
        let _ = object_props(&z);
    }
}
