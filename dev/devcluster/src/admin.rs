//! Admin endpoints for tests and demos (system:masters only): request counts and faults.

use bytes::Bytes;
use http::{Method, Response};
use serde_json::json;

use crate::faults::FaultRequest;
use crate::server::{Body, Shared, error_response, json_response};
use crate::status::ApiError;

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &Bytes) -> Response<Body> {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/_devcluster/requests") => {
            let rows = shared.requests.snapshot();
            json_response(200, &serde_json::to_value(rows).unwrap_or(json!([])), &[])
        }
        ("DELETE", "/_devcluster/requests") => {
            shared.requests.reset();
            json_response(200, &json!({"status": "reset"}), &[])
        }
        ("GET", "/_devcluster/faults") => json_response(
            200,
            &serde_json::to_value(shared.faults.config()).unwrap_or(json!({})),
            &[],
        ),
        ("POST", "/_devcluster/faults") => {
            let req: FaultRequest = if body.is_empty() {
                FaultRequest::default()
            } else {
                match serde_json::from_slice(body) {
                    Ok(r) => r,
                    Err(e) => {
                        return error_response(&ApiError::bad_request(format!(
                            "invalid fault request: {e}"
                        )));
                    }
                }
            };
            shared.faults.apply_request(req);
            json_response(
                200,
                &serde_json::to_value(shared.faults.config()).unwrap_or(json!({})),
                &[],
            )
        }
        (_, "/_devcluster/requests") | (_, "/_devcluster/faults") => {
            error_response(&ApiError::method_not_allowed())
        }
        _ => error_response(&ApiError::not_found_path()),
    }
}
