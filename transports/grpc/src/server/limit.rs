//! The message size limit as the contract words it: a request message over the limit is
//! `body_too_large` (RESOURCE_EXHAUSTED with its `ErrorInfo`), where tonic's own decoder answers
//! a bare OUT_OF_RANGE.

use std::convert::Infallible;
use std::task::{Context, Poll};

use converge_core::{ApiError, Code};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::status::to_status;

/// Wraps a generated service: an OUT_OF_RANGE answer (only tonic's decoder gives one; the
/// adapter never does) becomes `body_too_large`.
#[derive(Debug, Clone)]
pub(crate) struct MessageLimit<S> {
    inner: S,
    max: usize,
}

impl<S> MessageLimit<S> {
    pub(crate) fn new(inner: S, max: usize) -> Self {
        MessageLimit { inner, max }
    }
}

impl<S> Service<http::Request<Body>> for MessageLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let max = self.max;
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            let out_of_range = resp
                .headers()
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == (tonic::Code::OutOfRange as i32).to_string().as_bytes());
            if !out_of_range {
                return Ok(resp);
            }
            tracing::debug!(code = %Code::BodyTooLarge, "request refused");
            let e = ApiError::new(Code::BodyTooLarge, format!("a request message is at most {max} bytes"));
            Ok(to_status(&e).into_http())
        })
    }
}

impl<S: NamedService> NamedService for MessageLimit<S> {
    const NAME: &'static str = S::NAME;
}
