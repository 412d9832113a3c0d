//! The key broker: local keys, roles and scopes, budgets and the usage
//! ledger.

pub mod broker;
pub mod clock;
pub mod ledger;
pub mod model;
pub mod ops;
pub mod ring;
pub mod scope;
pub mod store;
pub mod token;
