//! The OpenAPI 3.1 document of the wire contract, generated from the handlers' annotations.

use converge_core::Limits;
use converge_core::hlc::{DEVICE_ID_PATTERN, HLC_PATTERN};
use converge_core::model::{ENTITY_PATTERN, MAX_FIELD_NAME_CHARS, MAX_VERSION, RECORD_ID_PATTERN};
use converge_core::wire::{CURSOR_PATTERN, IDEMPOTENCY_KEY_PATTERN, PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX};
use serde_json::{Value, json};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;
use crate::problem::Problem;

/// Adds the bearer security scheme the authenticated routes refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description = Some("A JWT (HS256) with `sub` (user), `tenant` and `exp`".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Converge sync API",
        version = "1",
        description = "Wire contract v1 of Converge, an offline-first sync engine. Every error is \
            `application/problem+json` (RFC 9457) with a stable `code`.",
    ),
    paths(
        handlers::push,
        handlers::changes,
        super::events::events,
        handlers::record,
        handlers::healthz,
        handlers::metrics,
        handlers::openapi_json,
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme),
    tags(
        (name = "sync", description = "Push mutations, pull the change feed, hear of changes, read a record"),
        (name = "ops", description = "Health, metrics and this document"),
    ),
)]
struct ApiDoc;

/// The OpenAPI 3.1 document served at `/openapi.json` by a server with the contract's default
/// limits.
pub fn openapi() -> Value {
    openapi_for(&Limits::default())
}

/// The OpenAPI 3.1 document of a server with these limits: every constraint the server enforces
/// on a request is in it, so a request the document calls valid is never refused for its shape.
pub fn openapi_for(limits: &Limits) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    exact(&mut doc, limits);
    doc
}

/// A string schema with a pattern and the lengths it implies (for generators that read those).
fn text(pattern: &str, max: usize, description: &str) -> Value {
    json!({ "type": "string", "pattern": pattern, "minLength": 1, "maxLength": max, "description": description })
}

/// Replaces the schema at `pointer`, keeping its description when the new one has none.
fn set(doc: &mut Value, pointer: &str, mut schema: Value) {
    let Some(slot) = doc.pointer_mut(pointer) else {
        debug_assert!(false, "no {pointer} in the OpenAPI document");
        return;
    };
    if let (Some(old), Some(new)) = (slot.get("description").cloned(), schema.as_object_mut()) {
        new.entry("description").or_insert(old);
    }
    *slot = schema;
}

/// Sets the schema of a route's parameter `name`.
fn param(doc: &mut Value, path: &str, name: &str, schema: Value) {
    let route = path.replace('~', "~0").replace('/', "~1");
    let Some(methods) = doc.pointer_mut(&format!("/paths/{route}")).and_then(Value::as_object_mut) else {
        debug_assert!(false, "no {path} in the OpenAPI document");
        return;
    };
    for op in methods.values_mut() {
        let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { continue };
        for p in params.iter_mut().filter(|p| p["name"] == name) {
            p["schema"] = schema.clone();
            p["required"] = json!(p["in"] == "path" || p.get("required") == Some(&json!(true)));
        }
    }
}

/// The constraints utoipa's annotations cannot say: patterns from core, the batch limit this
/// server runs with, and each op's rule for `base_version` and `patch`.
fn exact(doc: &mut Value, limits: &Limits) {
    let entity =
        || text(ENTITY_PATTERN, 64, "The entity type, e.g. `notes`: a letter, then letters, digits, `_` or `-`.");
    let record_id = || text(RECORD_ID_PATTERN, 128, "The record id (a UUIDv7 made on the device fits).");
    let cursor = |pattern: &str, min: usize, also: &str| {
        json!({
            "type": "string", "pattern": pattern, "minLength": min, "maxLength": 38,
            "description": format!("Opaque: pass back what a page or a notice gave{also}. Any other \
                string is 400 `invalid_request`; one of this shape that this server's feed never reached \
                (e.g. from before a restore) is 410 `cursor_expired`.")
        })
    };
    // As a parameter, an empty cursor is the same as none: the start of the feed.
    let inner = CURSOR_PATTERN.trim_start_matches('^').trim_end_matches('$');
    let param_cursor = || cursor(&format!("^({inner})?$"), 0, "; empty or absent for the start");
    let schemas = "/components/schemas";
    set(doc, &format!("{schemas}/PushBatch/properties/device_id"), text(DEVICE_ID_PATTERN, 64, "The sending device."));
    if let Some(m) = doc.pointer_mut(&format!("{schemas}/PushBatch/properties/mutations")) {
        m["maxItems"] = json!(limits.max_batch);
        // Equal items share their op id; items that differ but share one are refused the same way.
        m["uniqueItems"] = json!(true);
        m["description"] = json!(format!(
            "The mutations, applied in order: at most {} (more is 413 `batch_too_large`). Each op id \
            appears once: a batch that names one twice is 400 `invalid_request`.",
            limits.max_batch
        ));
    }
    let mutation = format!("{schemas}/Mutation");
    set(doc, &format!("{mutation}/properties/entity"), entity());
    set(doc, &format!("{mutation}/properties/record_id"), record_id());
    set(
        doc,
        &format!("{mutation}/properties/hlc"),
        json!({ "type": "string", "pattern": HLC_PATTERN, "minLength": 20, "maxLength": 83,
            "example": "1764064800000-0000-ios-7f3a",
            "description": "The hybrid logical clock of the write: 13 digits of Unix ms, 4 lowercase hex digits, a device id." }),
    );
    set(
        doc,
        &format!("{mutation}/properties/base_version"),
        json!({ "type": "integer", "minimum": 0, "maximum": MAX_VERSION,
            "description": "The server version this change was made on: 0 for a create, at least 1 otherwise." }),
    );
    set(
        doc,
        &format!("{mutation}/properties/patch"),
        json!({ "type": "object", "propertyNames": { "minLength": 1, "maxLength": MAX_FIELD_NAME_CHARS },
            "description": "The changed fields only; `null` removes a field. Empty for a delete. Field names are 1-256 characters." }),
    );
    if let Some(m) = doc.pointer_mut(&mutation).and_then(Value::as_object_mut) {
        m.insert(
            "oneOf".into(),
            json!([
                { "properties": { "op": { "const": "create" }, "base_version": { "const": 0 } } },
                { "properties": { "op": { "const": "update" }, "base_version": { "minimum": 1 } } },
                { "properties": { "op": { "const": "delete" }, "base_version": { "minimum": 1 },
                    "patch": { "maxProperties": 0 } } },
            ]),
        );
    }
    for notice in ["PullResponse", "Notice"] {
        if doc.pointer(&format!("{schemas}/{notice}/properties/cursor")).is_some() {
            set(doc, &format!("{schemas}/{notice}/properties/cursor"), cursor(CURSOR_PATTERN, 2, ""));
        }
    }

    param(
        doc,
        super::PUSH_PATH,
        "Idempotency-Key",
        json!({
        "type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "minLength": 1, "maxLength": 255 }),
    );
    param(doc, super::CHANGES_PATH, "cursor", param_cursor());
    param(
        doc,
        super::CHANGES_PATH,
        "limit",
        json!({
        "type": "integer", "minimum": 1, "maximum": u32::MAX,
        "description": format!("Page size: default {PULL_LIMIT_DEFAULT}. Above {PULL_LIMIT_MAX} the page holds at most {PULL_LIMIT_MAX}.") }),
    );
    param(doc, super::EVENTS_PATH, "cursor", param_cursor());
    param(doc, super::EVENTS_PATH, "Last-Event-ID", param_cursor());
    // Each event of the stream (OpenAPI 3.2's `itemSchema`, which 3.1 tools read as an extension).
    let events =
        format!("/paths/{}/get/responses/200/content/text~1event-stream", super::EVENTS_PATH.replace('/', "~1"));
    set(
        doc,
        &events,
        json!({ "itemSchema": {
            "type": "object", "required": ["id", "event", "data"],
            "properties": {
                "id": cursor(CURSOR_PATTERN, 2, ""),
                "event": { "const": "changes" },
                "data": { "type": "string", "contentMediaType": "application/json",
                    "contentSchema": { "type": "object", "required": ["cursor"], "additionalProperties": false,
                        "properties": { "cursor": cursor(CURSOR_PATTERN, 2, "") } } },
            },
        } }),
    );
    param(doc, super::RECORD_PATH, "entity", entity());
    param(doc, super::RECORD_PATH, "record_id", record_id());
}
