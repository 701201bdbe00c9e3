//! Decoding of `application/vnd.kubernetes.protobuf` request bodies into JSON objects.
//! kubectl 1.32+ sends its typed-client writes (`kubectl create namespace|configmap|
//! secret|deployment…`, `auth can-i`) as protobuf only.
//!
//! The message layouts (field numbers, names, types) are Kubernetes' wire format, kept in
//! `proto_schema.txt` (one line per message: `name |num jsonName type [p]`; types `s`
//! string, `b` bytes, `i` varint integer, `f` bool, `d` double, `m:Msg` message, `map:T`
//! string-keyed map, a leading `r` for repeated; `p` marks Go pointer fields, whose zero
//! values are meaningful and kept). Zero values of other scalars are dropped, as Go's
//! `omitempty` JSON encoding would.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Map, Value};

const SCHEMA: &str = include_str!("proto_schema.txt");
/// Prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone)]
enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Double,
    Msg(String),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: Ty,
    repeated: bool,
    map: bool,
    pointer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the body does not start with the Kubernetes protobuf magic \"k8s\\0\"")]
    Magic,
    #[error("truncated or malformed protobuf at byte {at}")]
    Malformed { at: usize },
    #[error("protobuf bodies of {api_version}/{kind} are not understood; send application/json")]
    UnknownType { api_version: String, kind: String },
    #[error("protobuf body has content encoding {0:?}; send it unencoded")]
    Encoding(String),
}

/// The message table, parsed once per server.
pub struct Schema {
    msgs: HashMap<String, HashMap<u64, Field>>,
}

impl Default for Schema {
    fn default() -> Self {
        Self::new()
    }
}

impl Schema {
    pub fn new() -> Schema {
        let mut msgs = HashMap::new();
        for line in SCHEMA.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split(" |");
            let Some(name) = parts.next() else { continue };
            let mut fields = HashMap::new();
            for f in parts {
                let w: Vec<&str> = f.split_whitespace().collect();
                if w.len() < 3 {
                    continue;
                }
                let Ok(num) = w[0].parse::<u64>() else {
                    continue;
                };
                let (map, t) = match w[2].strip_prefix("map:") {
                    Some(t) => (true, t),
                    None => (false, w[2]),
                };
                let (repeated, t) = match t.strip_prefix('r') {
                    Some(rest) if !map && (rest.starts_with("m:") || rest.len() == 1) => {
                        (true, rest)
                    }
                    _ => (false, t),
                };
                let ty = match t {
                    "s" => Ty::Str,
                    "b" => Ty::Bytes,
                    "i" => Ty::Int,
                    "f" => Ty::Bool,
                    "d" => Ty::Double,
                    m => Ty::Msg(m.trim_start_matches("m:").to_string()),
                };
                fields.insert(
                    num,
                    Field {
                        name: w[1].to_string(),
                        ty,
                        repeated,
                        map,
                        pointer: w.get(3) == Some(&"p"),
                    },
                );
            }
            msgs.insert(name.to_string(), fields);
        }
        Schema { msgs }
    }

    /// Decodes a whole request body (magic + runtime.Unknown envelope) into a JSON object.
    pub fn decode_body(&self, body: &[u8]) -> Result<Value, ProtoError> {
        let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::Magic)?;
        let mut api_version = String::new();
        let mut kind = String::new();
        let mut raw: &[u8] = &[];
        let mut r = Reader { b: rest, pos: 0 };
        while !r.done() {
            let (num, wt) = r.key()?;
            match (num, wt) {
                (1, 2) => {
                    let tm = r.bytes()?;
                    let mut t = Reader { b: tm, pos: 0 };
                    while !t.done() {
                        let (n, w) = t.key()?;
                        match (n, w) {
                            (1, 2) => {
                                api_version = String::from_utf8_lossy(t.bytes()?).into_owned()
                            }
                            (2, 2) => kind = String::from_utf8_lossy(t.bytes()?).into_owned(),
                            _ => t.skip(w)?,
                        }
                    }
                }
                (2, 2) => raw = r.bytes()?,
                (3, 2) => {
                    let enc = String::from_utf8_lossy(r.bytes()?).into_owned();
                    if !enc.is_empty() {
                        return Err(ProtoError::Encoding(enc));
                    }
                }
                _ => r.skip(wt)?,
            }
        }
        let msg = message_name(&api_version, &kind);
        if !self.msgs.contains_key(&msg) {
            return Err(ProtoError::UnknownType { api_version, kind });
        }
        let mut v = self.message(&msg, raw)?;
        if let Value::Object(m) = &mut v {
            m.insert("apiVersion".into(), json!(api_version));
            m.insert("kind".into(), json!(kind));
        }
        Ok(v)
    }

    fn message(&self, name: &str, b: &[u8]) -> Result<Value, ProtoError> {
        match name {
            "meta.v1.Time" | "meta.v1.MicroTime" => {
                let (mut secs, mut nanos) = (0i64, 0i64);
                let mut r = Reader { b, pos: 0 };
                while !r.done() {
                    let (n, w) = r.key()?;
                    match (n, w) {
                        (1, 0) => secs = r.varint()? as i64,
                        (2, 0) => nanos = r.varint()? as i64,
                        _ => r.skip(w)?,
                    }
                }
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
                let s = crate::meta::rfc3339(t);
                return Ok(if name == "meta.v1.MicroTime" {
                    json!(s.replace('Z', &format!(".{:06}Z", nanos / 1000)))
                } else {
                    json!(s)
                });
            }
            "IntOrString" => {
                let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
                let mut r = Reader { b, pos: 0 };
                while !r.done() {
                    let (n, w) = r.key()?;
                    match (n, w) {
                        (1, 0) => ty = r.varint()?,
                        (2, 0) => i = r.varint()? as i64,
                        (3, 2) => s = String::from_utf8_lossy(r.bytes()?).into_owned(),
                        _ => r.skip(w)?,
                    }
                }
                return Ok(if ty == 1 { json!(s) } else { json!(i as i32) });
            }
            "Quantity" => {
                let mut r = Reader { b, pos: 0 };
                let mut s = String::new();
                while !r.done() {
                    let (n, w) = r.key()?;
                    match (n, w) {
                        (1, 2) => s = String::from_utf8_lossy(r.bytes()?).into_owned(),
                        _ => r.skip(w)?,
                    }
                }
                return Ok(json!(s));
            }
            "RawExtension" | "meta.v1.FieldsV1" => {
                let mut r = Reader { b, pos: 0 };
                let mut v = Value::Null;
                while !r.done() {
                    let (n, w) = r.key()?;
                    match (n, w) {
                        (1, 2) => v = serde_json::from_slice(r.bytes()?).unwrap_or(Value::Null),
                        _ => r.skip(w)?,
                    }
                }
                return Ok(v);
            }
            _ => {}
        }
        let Some(fields) = self.msgs.get(name) else {
            // Not in the table: nothing to decode it with.
            return Ok(json!({}));
        };
        let mut out = Map::new();
        let mut r = Reader { b, pos: 0 };
        while !r.done() {
            let (num, wt) = r.key()?;
            let Some(f) = fields.get(&num) else {
                tracing::debug!(
                    message = name,
                    field = num,
                    "unknown protobuf field skipped"
                );
                r.skip(wt)?;
                continue;
            };
            if f.map {
                let entry = r.bytes()?;
                let mut e = Reader { b: entry, pos: 0 };
                let (mut k, mut v) = (String::new(), None);
                while !e.done() {
                    let (n, w) = e.key()?;
                    match n {
                        1 => k = String::from_utf8_lossy(e.bytes()?).into_owned(),
                        2 => v = Some(self.scalar_or_msg(&f.ty, &mut e, w)?),
                        _ => e.skip(w)?,
                    }
                }
                let v = v.unwrap_or_else(|| zero(&f.ty));
                let m = out.entry(f.name.clone()).or_insert_with(|| json!({}));
                if let Value::Object(m) = m {
                    m.insert(k, v);
                }
                continue;
            }
            if f.repeated {
                let arr = out.entry(f.name.clone()).or_insert_with(|| json!([]));
                let mut items = Vec::new();
                // Packed scalars arrive as one length-delimited run.
                if wt == 2 && matches!(f.ty, Ty::Int | Ty::Bool) {
                    let run = r.bytes()?;
                    let mut p = Reader { b: run, pos: 0 };
                    while !p.done() {
                        items.push(self.scalar_or_msg(&f.ty, &mut p, 0)?);
                    }
                } else {
                    items.push(self.scalar_or_msg(&f.ty, &mut r, wt)?);
                }
                if let Value::Array(a) = arr {
                    a.extend(items);
                }
                continue;
            }
            let v = self.scalar_or_msg(&f.ty, &mut r, wt)?;
            let is_zero = matches!(&v, Value::String(s) if s.is_empty())
                || v == json!(0)
                || v == json!(false)
                || v.is_null()
                // A zero metav1.Time is JSON null.
                || (matches!(&f.ty, Ty::Msg(m) if m == "meta.v1.Time") && v == json!("1970-01-01T00:00:00Z"));
            if is_zero && (!f.pointer || v.is_null()) {
                continue;
            }
            out.insert(f.name.clone(), v);
        }
        Ok(Value::Object(out))
    }

    fn scalar_or_msg(&self, ty: &Ty, r: &mut Reader<'_>, wt: u8) -> Result<Value, ProtoError> {
        Ok(match ty {
            Ty::Str => json!(String::from_utf8_lossy(r.bytes()?)),
            Ty::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
            Ty::Int => json!(r.varint()? as i64),
            Ty::Bool => json!(r.varint()? != 0),
            Ty::Double => {
                if wt != 1 {
                    return Err(ProtoError::Malformed { at: r.pos });
                }
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                json!(f64::from_le_bytes(a))
            }
            Ty::Msg(m) => {
                let b = r.bytes()?;
                self.message(m, b)?
            }
        })
    }
}

fn zero(ty: &Ty) -> Value {
    match ty {
        Ty::Str | Ty::Bytes => json!(""),
        Ty::Int => json!(0),
        Ty::Bool => json!(false),
        Ty::Double => json!(0.0),
        Ty::Msg(_) => json!({}),
    }
}

/// `apps/v1` + `Deployment` → `apps.v1.Deployment`; `v1` + `Pod` → `core.v1.Pod`.
fn message_name(api_version: &str, kind: &str) -> String {
    let (g, v) = skiff_api::kinds::split_api_version(api_version);
    let pkg = if g.is_empty() {
        "core"
    } else {
        g.split('.').next().unwrap_or(g)
    };
    format!("{pkg}.{v}.{kind}")
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .b
                .get(self.pos)
                .ok_or(ProtoError::Malformed { at: self.pos })?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed { at: self.pos })
    }
    fn key(&mut self) -> Result<(u64, u8), ProtoError> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(ProtoError::Malformed { at: self.pos })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.varint()? as usize;
        self.take(n)
    }
    fn skip(&mut self, wt: u8) -> Result<(), ProtoError> {
        match wt {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            _ => Err(ProtoError::Malformed { at: self.pos }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kubectl_configmap() {
        // kubectl 1.33 `create configmap x --from-literal=a=b`, as sent on the wire.
        let body: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1b\x0a\x11\x0a\x01x\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x22\x00";
        let v = Schema::new().decode_body(body).expect("decodes");
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let s = Schema::new();
        assert!(s.decode_body(b"nope").is_err());
        assert!(s.decode_body(b"k8s\x00\x0a\xff\xff\xff").is_err());
        assert!(s.decode_body(b"k8s\x00\x12\x05abc").is_err());
    }
}
