//! JSON ⇄ MessagePack for people and tools: contract arguments given as JSON become
//! MessagePack (what contracts receive), and MessagePack results are shown as JSON.
//!
//! Floats never enter: a JSON number with a fraction or exponent is refused. Byte strings
//! (`bin`) are shown as `"0x…"` hex strings.

use rmpv::Value;
use serde_json::Value as Json;

/// Why a JSON document could not become MessagePack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// A number that is not an integer.
    #[error("{0} is not an integer: consensus values hold no floats")]
    Float(String),
}

/// Deepest nesting shown (deeper values are not displayed as JSON).
const MAX_DEPTH: usize = 128;

fn to_value(json: &Json) -> Result<Value, JsonError> {
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                return Err(JsonError::Float(n.to_string()));
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(to_value).collect::<Result<_, _>>()?),
        Json::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Ok((Value::from(k.as_str()), to_value(v)?)))
                .collect::<Result<_, JsonError>>()?,
        ),
    })
}

/// MessagePack of a JSON document given as text.
pub fn json_text_to_msgpack(text: &str) -> Result<Vec<u8>, JsonError> {
    let json: Json = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    json_to_msgpack(&json)
}

/// MessagePack of a JSON value (object keys in the order serde_json keeps them: sorted).
pub fn json_to_msgpack(json: &Json) -> Result<Vec<u8>, JsonError> {
    let value = to_value(json)?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).expect("writing to a Vec cannot fail");
    Ok(out)
}

fn from_value(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(s)) => Json::from(s),
            _ => Json::Null,
        },
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => match s.as_str() {
            Some(s) => Json::String(s.to_string()),
            None => Json::String(format!("0x{}", hex::encode(s.as_bytes()))),
        },
        Value::Binary(b) => Json::String(format!("0x{}", hex::encode(b))),
        Value::Array(items) => Json::Array(items.iter().map(from_value).collect()),
        Value::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let key = match k {
                    Value::String(s) => s.as_str().map(str::to_string),
                    _ => None,
                }
                .unwrap_or_else(|| from_value(k).to_string());
                map.insert(key, from_value(v));
            }
            Json::Object(map)
        }
        Value::Ext(tag, data) => {
            serde_json::json!({ "ext": tag, "data": format!("0x{}", hex::encode(data)) })
        }
    }
}

/// A MessagePack value shown as JSON; `None` if the bytes are not one complete value.
pub fn msgpack_to_json(bytes: &[u8]) -> Option<Json> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH).ok()?;
    reader.is_empty().then(|| from_value(&value))
}
