//! What both adapters share in reading messages: fields, patches and a conflict's server
//! fields travel as JSON object text; anything else in them is `invalid_request` (from a
//! client) or a protocol error (from a server).

use converge_core::Fields;

/// Why a message could not be read, said without the values it held.
pub(crate) type Invalid = String;

/// A JSON object from its text; `""` is `{}`.
pub(crate) fn fields_from_text(text: &str) -> Result<Fields, Invalid> {
    if text.is_empty() {
        return Ok(Fields::new());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("is not a JSON object".into()),
        Err(e) => Err(format!("is not JSON: {}", converge_core::model::json_error_without_values(&e))),
    }
}

/// A JSON object as text (never fails for a map of JSON values).
pub(crate) fn fields_to_text(fields: &Fields) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned())
}

/// A UUID from its text.
pub(crate) fn uuid(text: &str) -> Result<uuid::Uuid, Invalid> {
    uuid::Uuid::parse_str(text).map_err(|_| "is not a UUID".to_owned())
}
