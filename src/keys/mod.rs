//! The key broker: local keys, roles and scopes, budgets and the usage
//! ledger, kept in SQLite (one process) or Redis (cluster mode) behind
//! [`backend::KeyBackend`].

pub mod backend;
pub mod broker;
pub mod clock;
pub mod ledger;
pub mod model;
pub mod ops;
pub mod portable;
pub mod redis;
pub mod remote;
pub mod ring;
pub mod scope;
pub mod store;
pub mod token;
pub mod usage;
