//! The OpenAPI 3.1 document of the wire contract, generated from the handlers' annotations.

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

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
