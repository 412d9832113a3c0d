//! Roles and agent scopes (being written).
