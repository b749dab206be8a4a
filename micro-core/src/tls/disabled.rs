//! [`ServerTls`] and [`ClientTls`] in a build without the cargo feature `tls`: the types
//! exist, so every signature that takes one is the same in every build, but none can be
//! built. `from_env` refuses the `MICRO_TLS_*` variables instead of ignoring them, so a
//! program never serves or calls in plaintext when TLS was asked for.

use std::{convert::Infallible, io};

use super::{
    CA_ENV, CERT_ENV, CLIENT_AUTH_ENV, CLIENT_CA_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV, KEY_ENV,
    Lookup, ProcessEnv, SERVER_NAME_ENV, TlsError, env_string,
};
use crate::io::BoxIo;

/// A server's TLS configuration. This build has no cargo feature `tls`: none can be built.
#[derive(Debug, Clone)]
pub struct ServerTls {
    never: Infallible,
}

impl ServerTls {
    /// `Ok(None)` when no server `MICRO_TLS_*` variable is set.
    ///
    /// # Errors
    /// [`TlsError::NotCompiled`] naming the first of `MICRO_TLS_CERT`, `MICRO_TLS_KEY`,
    /// `MICRO_TLS_CLIENT_CA`, `MICRO_TLS_CLIENT_AUTH` that is set: this build cannot serve
    /// TLS.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        refuse(
            &ProcessEnv,
            &[CERT_ENV, KEY_ENV, CLIENT_CA_ENV, CLIENT_AUTH_ENV],
        )
    }

    pub(crate) fn start_polling(&self) {
        match self.never {}
    }

    pub(crate) fn unreachable(&self) -> ! {
        match self.never {}
    }
}

/// A client's TLS configuration. This build has no cargo feature `tls`: none can be built.
#[derive(Debug, Clone)]
pub struct ClientTls {
    never: Infallible,
}

impl ClientTls {
    /// `Ok(None)` when no client `MICRO_TLS_*` variable is set.
    ///
    /// # Errors
    /// [`TlsError::NotCompiled`] naming the first of `MICRO_TLS_CA`,
    /// `MICRO_TLS_CLIENT_CERT`, `MICRO_TLS_CLIENT_KEY`, `MICRO_TLS_SERVER_NAME` that is set:
    /// this build cannot dial TLS.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        refuse(
            &ProcessEnv,
            &[CA_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV, SERVER_NAME_ENV],
        )
    }

    pub(crate) async fn connect(&self, _io: BoxIo, _address: &str) -> io::Result<BoxIo> {
        match self.never {}
    }
}

fn refuse<T>(env: &dyn Lookup, vars: &[&'static str]) -> Result<Option<T>, TlsError> {
    for &var in vars {
        if env_string(env, var)?.is_some() {
            return Err(TlsError::NotCompiled { var });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn tls_variables_are_refused_naming_the_feature() {
        let env = HashMap::from([(CERT_ENV, "node.crt"), (KEY_ENV, "node.key")]);
        let err = refuse::<ServerTls>(&env, &[CERT_ENV, KEY_ENV]).unwrap_err();
        assert!(matches!(err, TlsError::NotCompiled { var } if var == CERT_ENV));
        assert!(err.to_string().contains("features = [\"tls\"]"), "{err}");
        let env = HashMap::from([(CA_ENV, "  ")]);
        assert!(refuse::<ClientTls>(&env, &[CA_ENV]).unwrap().is_none());
        let env: HashMap<&str, &str> = HashMap::new();
        assert!(refuse::<ClientTls>(&env, &[CA_ENV]).unwrap().is_none());
    }
}
