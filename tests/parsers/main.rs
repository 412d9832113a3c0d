//! Corpus and fuzz tests of the parsers on the request path (issue 19,
//! item 5): what the gateway reads from an untrusted client, run as
//! ordinary tests, the way Envoy runs its fuzz corpora in CI.
//!
//! | target | what is read | entry point | module |
//! |---|---|---|---|
//! | `path` | the raw request path | `upstream::path::ApiPath::parse`, `to_upstream_uri`, the app | `path` |
//! | `route` | `METHOD /api/v1/...` | `route::Route::read`, `cache::write_effect`, `keys::scope::authorize` | `route` |
//! | `headers` | `Authorization`, `X-API-Key`, `X-Request-Id`, `Prefer`, `Origin`/`Host` | `keys::token`, `Broker::admin_principal_in`, the app | `headers` |
//! | `invoke_body` | `POST /agents/{slug}/invoke` bodies (`session_id`) | the app | `invoke` |
//! | `key_create` | `POST /admin/keys` bodies | `keys::ops::NewKey`, `ops::mint`, the app | `keys` |
//! | `key_rotate` | `POST /admin/keys/{id}/rotate` bodies | the app | `keys` |
//! | `config` | the TOML file | `Config::from_toml`, `Config::validate`, `config::load` | `config` |
//!
//! "The app" is the production service (`build_app`) driven in process
//! with a stand-in upstream (`Hop::service`) that records what reaches it
//! (`gateway`): some readers are private (`routes::shaped::session_id`,
//! `keys::broker::presented`, `routes::gate::same_origin`,
//! `routes::keys::RotateBody`), so they are covered through the requests
//! that use them. `support` holds the corpus, the runners and the
//! mutations.
//!
//! Each target has two tests:
//! - `<target>_corpus` runs every file of `tests/corpus/<target>/` (plus a
//!   few long inputs its module makes, too big to commit) and checks that
//!   the reader never panics, answers `Ok` or a clear error, answers the
//!   same twice, and keeps the target's invariants (see each `*_case`);
//! - `<target>_fuzz` runs a fixed number of proptest cases: corpus seeds
//!   with byte flips, insertions (from a dictionary of hostile pieces),
//!   deletions, truncations and repeats, inputs of the target's own shape,
//!   and random input.
//!
//! Bugs these tests found are fixed, and each has a `regression_*` test
//! that pins the new behaviour on its seed (`cargo test --test parsers
//! regression`); the corpus and fuzz tests hold every input of the same
//! shape to it too. A new bug gets the same: its seed in the corpus, the
//! invariant in the `*_case`, a `regression_*` test once fixed.
//!
//! Adding a seed: drop a file in `tests/corpus/<target>/` (a raw path, a
//! `METHOD path` line, `Name: value` header lines where `$TOKEN` and
//! `$ADMIN` stand for the test's keys, a JSON body, a TOML file). Keep it
//! small: long inputs are made in the module's `long_inputs`. Every test
//! of the target picks it up; nothing to register.
//!
//! Reproducing a failure: the runs are deterministic (a fixed RNG seed per
//! target, no regression files), so `cargo test --test parsers <target>`
//! fails the same way again; proptest prints the shrunk input. Save it as
//! a seed to keep it. `PARSERS_SEED=<n> cargo test --test parsers` explores
//! another seed (`n` a `u64`, mixed into every target's seed), and the
//! same `n` fails the same way again.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod gateway;
mod support;

mod config;
mod headers;
mod invoke;
mod keys;
mod path;
mod route;
