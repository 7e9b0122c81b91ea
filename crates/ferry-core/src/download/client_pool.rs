//! HTTP clients by connection slot, shared per set of client options by every download in the
//! process, and keyed by [`ClientKey`]: the options that make two clients different.

use crate::error::Error;
use crate::source::{self, ClientOptions};
use reqwest::Client;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The options that make one client differ from another, in a form that can be hashed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    connect_timeout: Duration,
    /// Headers in their order, as (name, raw value): order matters for repeated names.
    headers: Vec<(String, Vec<u8>)>,
    user_agent: String,
    /// The custom TLS configuration's name (equal names mean equal configurations).
    tls: Option<String>,
}

impl ClientKey {
    /// The key of `opts`.
    pub(crate) fn of(opts: &ClientOptions) -> Self {
        ClientKey {
            connect_timeout: opts.connect_timeout,
            headers: opts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            user_agent: opts.user_agent.clone(),
            tls: opts.tls.as_ref().map(|t| t.key.clone()),
        }
    }
}

/// HTTP clients by connection slot: slot `w` of a download always uses client `w`, so the
/// connections of one download never share a TCP connection (not even over HTTP/2). Clients
/// are built on first use and shared, per set of client options, by every download in the
/// process: a list of 200 small files reuses warm keep-alive connections and builds its TLS
/// trust store a handful of times, not 1600.
#[derive(Clone)]
pub(crate) struct ClientPool {
    opts: ClientOptions,
    clients: SharedClients,
}

/// The clients of one set of options, by slot.
type SharedClients = Arc<Mutex<Vec<Client>>>;

impl ClientPool {
    /// The process-wide pool for `opts`.
    pub(crate) fn for_options(opts: &ClientOptions) -> Self {
        static POOLS: OnceLock<Mutex<HashMap<ClientKey, SharedClients>>> = OnceLock::new();
        let clients = POOLS
            .get_or_init(Default::default)
            .lock()
            .expect("client pools lock")
            .entry(ClientKey::of(opts))
            .or_default()
            .clone();
        ClientPool {
            opts: opts.clone(),
            clients,
        }
    }

    /// The client of slot `w`, built if it is the first use of that slot.
    pub(crate) fn get(&self, w: usize) -> Result<Client, Error> {
        let mut clients = self.clients.lock().expect("client pool lock");
        while clients.len() <= w {
            clients.push(source::build_download_client(&self.opts)?);
        }
        Ok(clients[w].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    #[test]
    fn keys_differ_exactly_when_options_matter() {
        let base = ClientOptions::default();
        assert_eq!(ClientKey::of(&base), ClientKey::of(&base.clone()));
        let mut other = base.clone();
        other.connect_timeout = Duration::from_secs(1);
        assert_ne!(ClientKey::of(&base), ClientKey::of(&other));
        let mut with_header = base.clone();
        with_header.headers.append(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        );
        assert_ne!(ClientKey::of(&base), ClientKey::of(&with_header));
        let mut value = base.clone();
        value.headers.append(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("2"),
        );
        assert_ne!(ClientKey::of(&with_header), ClientKey::of(&value));
    }
}
