//! The two ways the classifier is hosted: an HTTP server (`--listen`) and the Lambda runtime.

use crate::Classifier;
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Serve the contract on every path (a Function URL forwards any path to the function).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    classifier: Arc<Classifier>,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |method: axum::http::Method, body: Bytes| {
        let c = classifier.clone();
        async move {
            let reply = if method == axum::http::Method::GET {
                c.health()
            } else {
                c.handle_body(&body).await
            };
            Response::builder()
                .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK))
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(reply.body.to_string()))
                .map(IntoResponse::into_response)
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Run under the Lambda runtime API; every event yields a Function URL style response.
pub async fn serve_lambda(classifier: Arc<Classifier>) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let c = classifier.clone();
            async move {
                Ok::<_, lambda_runtime::Error>(
                    c.handle_event(&event.payload).await.to_lambda_response(),
                )
            }
        },
    ))
    .await
}
