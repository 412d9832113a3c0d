//! Small shared types: [`Secret`], the wrapper that keeps credentials out of
//! logs, errors and debug output, and [`Peer`], the connection a request
//! came on.

use std::fmt;

/// A value that must never be printed: its `Debug` and `Display` show `*****`.
///
/// The only way to read it is [`Secret::expose`], which makes every use of
/// the real value easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Returns the real value. Call it only where the value leaves the
    /// process on purpose (the outbound `Authorization` header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("*****")
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Secret<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

/// The connection a request came on: held by the app's frame for each
/// connection, and in a request's extensions once the request waits.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The local address it arrived on: whether an absolute-form target
    /// names this gateway.
    pub local: std::net::SocketAddr,
    /// The client's address: the fairness identity of a client without a
    /// key, and the loopback check of `/admin/*`.
    pub remote: std::net::SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("cast_real_key".to_string());
        assert_eq!(format!("{s}"), "*****");
        assert_eq!(format!("{s:?}"), "*****");
        assert_eq!(format!("{:?}", Some(&s)), "Some(*****)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*****\"");
        assert_eq!(s.expose(), "cast_real_key");
    }
}
