//! Storage buckets (bring-your-own S3, GCS, R2).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Value};

use super::Seg;
use crate::error::{detail, missing, no_content, ok, unprocessable, Reply};
use crate::state::{Bucket, USER_ID};
use crate::util::{hex_token, id, iso, now_ms};
use crate::validate::int::Bounds;
use crate::validate::query::Params;
use crate::validate::{at, slug, Body};
use crate::Shared;

pub(crate) fn bucket_not_found() -> axum::response::Response {
    detail(StatusCode::NOT_FOUND, "Bucket not found")
}

/// `GET /buckets`.
pub(crate) async fn list(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let mut params = Params::new(&q);
    let page = params.page(20);
    params.done()?;
    let inner = sim.lock();
    let total = inner.account.buckets.len();
    let buckets: Vec<Value> = inner
        .account
        .buckets
        .values()
        .skip(page.offset)
        .take(page.limit)
        .map(|b| json!(b))
        .collect();
    Ok(page.reply("buckets", buckets, total))
}

/// `POST /buckets`.
pub(crate) async fn create(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let mut body = Body::parse(&body)?;
    let name = body.str("name");
    let given = slug::given(&mut body);
    let provider = body.choice("provider", &["s3", "gcs", "r2"]);
    let bucket_name = body.str("bucket_name");
    let region = body.opt_str("region");
    let endpoint_url = body.opt_str("endpoint_url");
    body.done()?;
    // Documented: R2 needs an endpoint URL.
    if provider == "r2" && endpoint_url.is_none() {
        let issue = missing(&at("endpoint_url"), body.whole());
        body.push(issue);
    }
    let slug = match given {
        Some(slug) => slug,
        None => slug::derived(&mut body, &name),
    };
    body.done()?;
    let now = iso(now_ms());
    let bucket = Bucket {
        id: id("bkt_"),
        user_id: USER_ID.into(),
        name,
        slug: slug.clone(),
        provider,
        bucket_name,
        region,
        endpoint_url,
        has_credentials: false,
        created_at: now.clone(),
        updated_at: now,
    };
    let mut inner = sim.lock();
    if inner.account.buckets.contains_key(&slug) {
        return Err(detail(
            StatusCode::CONFLICT,
            format!("Bucket with slug '{slug}' already exists"),
        ));
    }
    let value = json!(bucket);
    inner.account.buckets.insert(slug, bucket);
    ok(value)
}

/// `GET /buckets/{slug}`.
pub(crate) async fn get(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    let inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    ok(json!(bucket))
}

/// `PATCH /buckets/{slug}`.
pub(crate) async fn patch(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let name = body.opt_str("name");
    let bucket_name = body.opt_str("bucket_name");
    let region = body.opt_str("region");
    let endpoint_url = body.opt_str("endpoint_url");
    body.done()?;
    let mut inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get_mut(&slug)
        .ok_or_else(bucket_not_found)?;
    if let Some(v) = name {
        bucket.name = v;
    }
    if let Some(v) = bucket_name {
        bucket.bucket_name = v;
    }
    if body.sent("region") {
        bucket.region = region;
    }
    if body.sent("endpoint_url") {
        bucket.endpoint_url = endpoint_url;
    }
    bucket.updated_at = iso(now_ms());
    ok(json!(bucket))
}

/// `DELETE /buckets/{slug}`: its mounts go too.
pub(crate) async fn delete(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    let mut inner = sim.lock();
    inner
        .account
        .buckets
        .remove(&slug)
        .ok_or_else(bucket_not_found)?;
    inner.account.mounts.retain(|m| m.bucket_slug != slug);
    no_content()
}

/// `POST /buckets/{slug}/credentials`.
pub(crate) async fn set_credentials(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let key_id = body.opt_str("access_key_id");
    let secret = body.opt_str("secret_access_key");
    let service_account = body.opt_str("service_account_json");
    body.done()?;
    // Either an access key pair (S3, R2) or a service account (GCS). Half a
    // pair names the missing half; nothing at all names the pair.
    let wanted: &[&str] = match (&key_id, &secret, &service_account) {
        (Some(_), None, _) => &["secret_access_key"],
        (None, Some(_), _) => &["access_key_id"],
        (None, None, None) => &["access_key_id", "secret_access_key"],
        _ => &[],
    };
    if !wanted.is_empty() {
        let whole = body.whole();
        return Err(unprocessable(
            wanted
                .iter()
                .map(|f| missing(&at(f), whole.clone()))
                .collect(),
        ));
    }
    let mut inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get_mut(&slug)
        .ok_or_else(bucket_not_found)?;
    bucket.has_credentials = true;
    bucket.updated_at = iso(now_ms());
    no_content()
}

/// `DELETE /buckets/{slug}/credentials`.
pub(crate) async fn delete_credentials(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
) -> Reply {
    let mut inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get_mut(&slug)
        .ok_or_else(bucket_not_found)?;
    bucket.has_credentials = false;
    no_content()
}

/// `POST /buckets/{slug}/test`: succeeds when credentials are set.
pub(crate) async fn test(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    let inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    let (success, message) = if bucket.has_credentials {
        (true, "Connection successful")
    } else {
        (false, "No credentials configured")
    };
    ok(json!({"success": success, "message": message, "latency_ms": 42}))
}

/// `POST /buckets/{slug}/upload-url` and `/download-url`: a fake presigned URL
/// on the provider's host (never fetched).
pub(crate) async fn presign(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let path = body.str("path");
    // Decision (the reference gives only the default, 3600): 1 s to 7 days,
    // the longest a presigned S3/GCS/R2 URL may live.
    let expires_in = body
        .opt_int("expires_in", Bounds::between(1, 604_800))
        .unwrap_or(3600);
    body.done()?;
    let method = if uri.path().ends_with("/upload-url") {
        "PUT"
    } else {
        "GET"
    };
    let inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    let url = format!(
        "https://{}.s3.amazonaws.com/{}?X-Amz-Expires={expires_in}&X-Amz-Signature={}",
        bucket.bucket_name,
        path.trim_start_matches('/'),
        hex_token(16)
    );
    ok(json!({"url": url, "expires_at": iso(now_ms() + expires_in * 1000), "method": method}))
}

/// `GET /buckets/{slug}/files?prefix=`: the simulated bucket is empty.
pub(crate) async fn files(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let inner = sim.lock();
    inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    ok(json!({"files": [], "prefix": q.get("prefix"), "truncated": false}))
}
