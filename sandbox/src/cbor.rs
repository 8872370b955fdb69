//! CloudWatch over RPC-v2 CBOR, served by moto's JSON 1.0 protocol (docs/emulator-gaps.md).
//!
//! The Rust SDK's CloudWatch client speaks Smithy RPC v2 CBOR (`POST
//! /service/GraniteServiceVersion20100801/operation/<Op>`, `smithy-protocol: rpc-v2-cbor`, a CBOR
//! body); moto 5.2.1 parses only the query and JSON 1.0 protocols. The region gate translates: the
//! CBOR request becomes the same document as JSON with `X-Amz-Target:
//! GraniteServiceVersion20100801.<Op>`, and moto's JSON answer becomes CBOR again, members named
//! `...Timestamp` as CBOR epoch-time tags (tag 1), as the protocol encodes timestamps.

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

pub const PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";

fn to_json(v: &Cbor) -> Json {
    match v {
        Cbor::Integer(i) => {
            let n: i128 = (*i).into();
            Json::from(n as i64)
        }
        Cbor::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Cbor::Text(s) => Json::String(s.clone()),
        Cbor::Bool(b) => Json::Bool(*b),
        Cbor::Null => Json::Null,
        Cbor::Tag(1, inner) => to_json(inner),
        Cbor::Tag(_, inner) => to_json(inner),
        Cbor::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Cbor::Map(m) => Json::Object(
            m.iter()
                .filter_map(|(k, v)| k.as_text().map(|k| (k.to_string(), to_json(v))))
                .collect(),
        ),
        Cbor::Bytes(b) => Json::String(base64_encode(b)),
        _ => Json::Null,
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn to_cbor(key: Option<&str>, v: &Json) -> Cbor {
    let timestamp = key.is_some_and(|k| k.ends_with("Timestamp"));
    match v {
        Json::Null => Cbor::Null,
        Json::Bool(b) => Cbor::Bool(*b),
        Json::Number(n) if timestamp => {
            Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or(0.0))))
        }
        Json::Number(n) => match n.as_i64() {
            Some(i) => Cbor::Integer(i.into()),
            None => Cbor::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) if timestamp => match humantime::parse_rfc3339_weak(s) {
            Ok(t) => Cbor::Tag(
                1,
                Box::new(Cbor::Float(
                    t.duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64(),
                )),
            ),
            Err(_) => Cbor::Text(s.clone()),
        },
        Json::String(s) => Cbor::Text(s.clone()),
        Json::Array(a) => Cbor::Array(a.iter().map(|x| to_cbor(key, x)).collect()),
        Json::Object(o) => Cbor::Map(
            o.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), to_cbor(Some(k), v)))
                .collect(),
        ),
    }
}

/// The JSON 1.0 request for a CBOR one: (`X-Amz-Target`, body).
pub fn request(path: &str, body: &[u8]) -> Result<(String, Vec<u8>), String> {
    let op = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("{path} is not a CloudWatch RPC-v2 path"))?;
    let doc = if body.is_empty() {
        Json::Object(Default::default())
    } else {
        let v: Cbor = ciborium::de::from_reader(body).map_err(|e| format!("CBOR body: {e}"))?;
        to_json(&v)
    };
    Ok((
        format!("GraniteServiceVersion20100801.{op}"),
        serde_json::to_vec(&doc).expect("serializes"),
    ))
}

/// Where a request goes and with which body: a CloudWatch RPC-v2 CBOR request is rewritten
/// for moto in place (`X-Amz-Target`, JSON 1.0 content type, no `smithy-protocol`; `true`), any
/// other goes as it came (`false`).
pub fn route(
    h: &mut axum::http::HeaderMap,
    uri: &axum::http::Uri,
    body: axum::body::Bytes,
) -> Result<(String, axum::body::Bytes, bool), String> {
    if !uri.path().starts_with(PREFIX) {
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        return Ok((pq.to_string(), body, false));
    }
    let (target, json) = request(uri.path(), &body)?;
    h.remove("smithy-protocol");
    h.remove("accept");
    h.insert(
        "x-amz-target",
        target
            .parse()
            .map_err(|_| "a bad operation name".to_string())?,
    );
    h.insert(
        "content-type",
        "application/x-amz-json-1.0"
            .parse()
            .expect("a header value"),
    );
    Ok(("/".to_string(), axum::body::Bytes::from(json), true))
}

/// The CBOR answer for moto's JSON one (an empty body stays empty).
/// A body that is not JSON (an emulator's HTML error page) is passed through unchanged, so the
/// caller still sees what went wrong; `None` says so (the reply must not claim to be CBOR).
pub fn reply(json: &[u8]) -> Option<Vec<u8>> {
    if json.is_empty() {
        return Some(vec![]);
    }
    let v: Json = serde_json::from_slice(json).ok()?;
    let mut out = vec![];
    ciborium::ser::into_writer(&to_cbor(None, &v), &mut out).expect("CBOR encodes");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_cross_both_ways_and_timestamps_become_tags() {
        let mut body = vec![];
        let req = Cbor::Map(vec![(
            Cbor::Text("AlarmNames".into()),
            Cbor::Array(vec![Cbor::Text("a".into())]),
        )]);
        ciborium::ser::into_writer(&req, &mut body).unwrap();
        let (target, json) = request(&format!("{PREFIX}DescribeAlarms"), &body).unwrap();
        assert_eq!(target, "GraniteServiceVersion20100801.DescribeAlarms");
        assert_eq!(
            serde_json::from_slice::<Json>(&json).unwrap(),
            serde_json::json!({"AlarmNames": ["a"]})
        );
        let out = reply(
            br#"{"MetricAlarms":[{"StateValue":"ALARM","StateUpdatedTimestamp":1700000000.5}]}"#,
        )
        .unwrap();
        let v: Cbor = ciborium::de::from_reader(&out[..]).unwrap();
        let alarm = &v.as_map().unwrap()[0].1.as_array().unwrap()[0];
        let m = alarm.as_map().unwrap();
        assert!(m
            .iter()
            .any(|(k, v)| k.as_text() == Some("StateValue") && v.as_text() == Some("ALARM")));
        assert!(m
            .iter()
            .any(|(k, v)| k.as_text() == Some("StateUpdatedTimestamp")
                && matches!(v, Cbor::Tag(1, _))));
        // An emulator's HTML error page is not turned into CBOR null: it passes unchanged.
        assert_eq!(reply(b"<html>500 Internal Server Error</html>"), None);
        assert_eq!(reply(b""), Some(vec![]));
    }
}
