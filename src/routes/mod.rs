//! HTTP endpoints.
//!
//! | path | handler |
//! |---|---|
//! | `/api/v1/*` (any method) | [`proxy::proxy`]: forwarded upstream |
//! | `GET /healthz` | [`health::healthz`]: the process is alive |
//! | `GET /readyz` | [`health::readyz`]: config loaded, upstream reachable recently |
//! | `GET /metrics` | [`health::metrics`]: Prometheus text |
//! | `GET /admin/queue` | [`admin::queue`]: the shaper's queues, loopback clients only |
//! | `GET`, `DELETE /admin/cache` | [`admin::cache_summary`], [`admin::cache_purge`]: the response cache, loopback clients only |
//! | `GET`, `POST /admin/keys`, `DELETE /admin/keys/{id}`, `POST /admin/keys/{id}/rotate` | [`keys`]: local keys, admin key required |
//! | `GET /admin/usage` | [`keys::usage`]: the usage ledger, JSON or CSV, admin key required |
//! | anything else | 404, Castari-shaped |

pub mod admin;
mod brokered;
mod cached;
mod call;
mod forward;
pub mod health;
pub mod keys;
pub mod proxy;
mod shaped;

pub use shaped::QUEUE_WAIT_HEADER;

#[cfg(test)]
mod tests;
