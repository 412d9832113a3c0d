//! The key broker: local keys, roles and scopes, budgets and the usage
//! ledger.

pub mod clock;
pub mod model;
pub mod scope;
pub mod store;
