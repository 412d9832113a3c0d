//! HTTP endpoints.
//!
//! | path | handler |
//! |---|---|
//! | `/api/v1/*` (any method) | [`proxy::proxy`]: forwarded upstream |
//! | `GET /healthz` | [`health::healthz`]: the process is alive |
//! | `GET /readyz` | [`health::readyz`]: config loaded, upstream reachable recently |
//! | `GET /metrics` | [`health::metrics`]: Prometheus text |
//! | `GET /openapi.json` | [`openapi::description`]: the OpenAPI description of all of this |
//! | `GET /admin/queue` | [`admin::queue`]: the shaper's queues, loopback clients only |
//! | `GET`, `DELETE /admin/cache` | [`admin::cache_summary`], [`admin::cache_purge`]: the response cache, loopback clients only |
//! | `GET`, `POST /admin/keys`, `DELETE /admin/keys/{id}`, `POST /admin/keys/{id}/rotate` | [`keys`]: local keys, admin key required |
//! | `GET /admin/usage` | [`keys::usage`]: the usage ledger, JSON or CSV, admin key required |
//! | `GET /`, `/ui`, `/ui/app.js`, `/ui/app.css`, `/ui/favicon.svg` | [`page`]: the operator page's files |
//! | `GET /ui/session`, `POST /ui/login`, `POST /ui/logout` | [`login`]: the page's login session |
//! | `GET /admin/events`, `GET /admin/snapshot` | [`events`]: the live picture, as server-sent events or JSON |
//! | `POST /ui/actions/{revoke,purge,reload}` | [`actions`]: the page's actions |
//! | anything else | 404, Castari-shaped |
//!
//! Who may see the page's data and act: `gate.rs`.

pub mod actions;
pub mod admin;
mod brokered;
mod cached;
mod call;
pub mod events;
mod forward;
mod gate;
mod guard;
pub mod health;
pub mod keys;
pub mod login;
pub mod openapi;
pub mod page;
pub mod proxy;
mod reply;
mod shaped;

pub use shaped::QUEUE_WAIT_HEADER;

#[cfg(test)]
mod tests;
