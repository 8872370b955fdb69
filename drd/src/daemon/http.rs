//! `/` (the status page), `/healthz` (the scheduler is alive), `/readyz` (every store reachable, every stack's newest
//! point within its RPO), `/metrics` (OpenMetrics or Prometheus text, as the scraper asks).

use super::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics))
        .route("/", axum::routing::get(page))
        .with_state(shared);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|v| *v).await;
        })
        .await;
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let now = s.clock.now().timestamp_millis();
    let beat = s
        .metrics
        .heartbeat_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let age = (now - beat).max(0);
    let ok = beat > 0 && age < 10_000;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"alive": ok, "heartbeat_age_ms": age})),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let stacks = s.stacks.read().await.clone();
    let backend = s.backend.read().await.clone();
    let now = s.clock.now().timestamp_millis() as f64 / 1000.0;
    let mut rows = vec![];
    let mut ready = true;
    for (stack, rpo) in stacks {
        let reachable = match backend.stacks.get(&stack) {
            Some(ctx) => matches!(
                tokio::time::timeout(Duration::from_secs(3), ctx.store.point_ids()).await,
                Ok(Ok(_))
            ),
            None => false,
        };
        let age = s.metrics.newest_point(&stack).map(|t| (now - t).max(0.0));
        let within = age.is_some_and(|a| a <= rpo.as_secs_f64());
        ready &= reachable && within;
        rows.push(json!({
            "stack": stack,
            "store_reachable": reachable,
            "rpo_seconds": rpo.as_secs(),
            "newest_point_age_seconds": age,
            "within_rpo": within,
        }));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(json!({"ready": ready, "stacks": rows}))).into_response()
}

/// The status page (server-rendered HTML; see `page`).
async fn page(State(s): State<Arc<Shared>>) -> Response {
    // One gathering at a time (others wait for it), reused while fresh.
    let mut cached = s.page.lock().await;
    let html = match cached.as_ref() {
        Some((at, html)) if at.elapsed() < super::page::PAGE_TTL => html.clone(),
        _ => {
            let views = super::page::gather(&s).await;
            let html = super::page::render(&views, s.clock.now());
            *cached = Some((std::time::Instant::now(), html.clone()));
            html
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// OpenMetrics when the scraper asks for it (Prometheus does by default), else text 0.0.4.
async fn metrics(State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let stacks: Vec<String> = s
        .stacks
        .read()
        .await
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let now = s.clock.now().timestamp_millis() as f64 / 1000.0;
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        s.metrics.render(now, &stacks, openmetrics),
    )
        .into_response()
}
