//! The collector's HTTP endpoint: `/metrics` (OpenMetrics text) and `/healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube_ipam_store::LeaseStore;
use tokio::net::TcpListener;

use super::exporter::{Metrics, PassState};
use crate::{Error, Result};

/// How long `/healthz` waits for the store: below a kubelet probe's default 1 s timeout
/// would be too tight for etcd, well below its period.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` now, so a taken port is an error of the command, and serves until the
/// process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Arc<dyn LeaseStore>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| Error::Io {
        path: format!("--metrics-address {addr}"),
        reason: e.to_string(),
    })?;
    let bound = listener.local_addr().map_err(|e| Error::Io {
        path: format!("--metrics-address {addr}"),
        reason: e.to_string(),
    })?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: pass, and take the next one.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(req, metrics.clone(), store.clone()));
                // A client that hangs up mid-answer is its own business.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    store: Arc<dyn LeaseStore>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => match metrics.encode() {
            Ok(body) => text(StatusCode::OK, OPENMETRICS, body),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                PLAIN,
                "cannot encode metrics\n".into(),
            ),
        },
        "/healthz" => match health(&metrics, store.as_ref()).await {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics or /healthz\n".into(),
        ),
    })
}

/// Healthy while the last pass went well and the store answers now. Before the first pass
/// ends only the store counts: a first pass over a large pool can outlast a liveness probe's
/// patience, and restarting would only start it over.
async fn health(metrics: &Metrics, store: &dyn LeaseStore) -> std::result::Result<(), String> {
    if let PassState::Failed(why) = metrics.state() {
        return Err(format!("last pass failed: {why}"));
    }
    match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            metrics.store_error(&e);
            Err(e.to_string())
        }
        Err(_) => Err(format!("store did not answer within {PING_TIMEOUT:?}")),
    }
}
