//! `allowed_outbound_hosts`: which network addresses a component may reach.
//!
//! Entries are `scheme://host[:port]`, where each part may be `*`, the host
//! may be `*.domain`, a CIDR block or a literal, and the port a number, a
//! range `a..b` (end excluded) or absent (the scheme's well-known port). A
//! component with no entries reaches nothing. Entries may be templates over
//! application variables; they are rendered once the variables are resolved.
//! A Postgres address is checked host by host, as Spin checks it: every host
//! of a multi-host connection string must be allowed.

use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;

/// An entry of `allowed_outbound_hosts` that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allowed_outbound_hosts entry {entry:?}: {reason}")]
pub struct AllowedHostError {
    pub entry: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    Any,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored with the leading dot.
    Subdomain(String),
    /// `self`: relative requests, which only outbound HTTP uses.
    ToSelf,
    Domain(String),
    Ip(IpAddr),
    Cidr(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    One(u16),
    Range(Range<u16>),
}

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Scheme,
    host: HostPattern,
    port: PortPattern,
}

/// The port a scheme uses when an address names none.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one entry.
    pub fn parse(entry: &str) -> Result<Self, AllowedHostError> {
        let err = |reason: &str| AllowedHostError {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = entry.trim();
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| err("it has no scheme (e.g. 'postgres://' or '*://')"))?;
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port.split_once('/') {
            Some((_, path)) if !path.is_empty() => return Err(err("it has a path")),
            Some((port, _)) => port,
            None => port,
        };

        let port = if port.is_empty() {
            PortPattern::One(
                well_known_port(scheme)
                    .ok_or_else(|| err("no port, and the scheme has no well-known port"))?,
            )
        } else if port == "*" {
            PortPattern::Any
        } else if let Some((start, end)) = port.split_once("..") {
            let start = start.parse().map_err(|_| err("bad port range"))?;
            let end = end.parse().map_err(|_| err("bad port range"))?;
            PortPattern::Range(start..end)
        } else {
            PortPattern::One(port.parse().map_err(|_| err("port is not a number"))?)
        };

        let scheme = if scheme == "*" {
            Scheme::Any
        } else if scheme.is_empty() || !scheme.chars().all(char::is_alphabetic) {
            return Err(err("the scheme must be '*' or letters only"));
        } else {
            Scheme::Named(scheme.to_owned())
        };

        let host = host.trim();
        let host = if host == "*" {
            HostPattern::Any
        } else if host == "self" || host == "self.alt" {
            HostPattern::ToSelf
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostPattern::Cidr(net.trunc())
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else {
            let host = host.trim_end_matches('/');
            if host.contains('/') {
                return Err(err("the host must not include a path"));
            }
            if let Some(domain) = host.strip_prefix("*.") {
                if domain.contains('*') {
                    return Err(err("wildcards are allowed only as a '*.' prefix"));
                }
                HostPattern::Subdomain(format!(".{}", domain.to_ascii_lowercase()))
            } else if host.contains('*') {
                return Err(err("wildcards are allowed only as a '*.' prefix"));
            } else {
                match url::Host::parse(host).map_err(|e| err(&e.to_string()))? {
                    url::Host::Domain(d) => HostPattern::Domain(d),
                    url::Host::Ipv4(ip) => HostPattern::Ip(ip.into()),
                    url::Host::Ipv6(ip) => HostPattern::Ip(ip.into()),
                }
            }
        };
        Ok(Self { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &url::Host<String>, port: Option<u16>) -> bool {
        let scheme_ok = match &self.scheme {
            Scheme::Any => true,
            Scheme::Named(s) => s == scheme,
        };
        let host_ok = match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Subdomain(suffix), url::Host::Domain(d)) => d.ends_with(suffix.as_str()),
            (HostPattern::Domain(literal), url::Host::Domain(d)) => literal == d,
            (HostPattern::Ip(ip), url::Host::Ipv4(v4)) => *ip == IpAddr::from(*v4),
            (HostPattern::Ip(ip), url::Host::Ipv6(v6)) => *ip == IpAddr::from(*v6),
            (HostPattern::Cidr(net), url::Host::Ipv4(v4)) => net.contains(&IpAddr::from(*v4)),
            (HostPattern::Cidr(net), url::Host::Ipv6(v6)) => net.contains(&IpAddr::from(*v6)),
            _ => false,
        };
        let port_ok = match &self.port {
            PortPattern::Any => true,
            listed => match port.or_else(|| well_known_port(scheme)) {
                None => false,
                Some(p) => match listed {
                    PortPattern::One(one) => *one == p,
                    PortPattern::Range(r) => r.contains(&p),
                    PortPattern::Any => true,
                },
            },
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's resolved `allowed_outbound_hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

/// Why a Postgres address may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    #[error("{0}")]
    Unparseable(String),
    #[error("address postgres://{0} is not permitted")]
    NotPermitted(String),
    #[error("Unix sockets are not supported on WebAssembly")]
    UnixSocket,
}

impl AllowedHosts {
    /// Parses rendered entries. Spin refuses the old `insecure:allow-all`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowedHostError> {
        if entries.len() == 1 && entries[0].as_ref() == "insecure:allow-all" {
            return Err(AllowedHostError {
                entry: "insecure:allow-all".to_owned(),
                reason: "use '*://*:*' to allow all outbound traffic".to_owned(),
            });
        }
        let entries = entries
            .iter()
            .map(|e| AllowedHost::parse(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Whether `scheme://host:port` may be reached.
    pub fn allows_url(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Ok(host) = url::Host::parse(host) else {
            return false;
        };
        self.entries.iter().any(|e| e.allows(scheme, &host, port))
    }

    /// Checks a Postgres connection string (URL or key=value form): every
    /// TCP host in it, each with its port, must be allowed.
    pub fn check_postgres(&self, address: &str) -> Result<(), AddressRefused> {
        let config: tokio_postgres::Config = address
            .parse()
            .map_err(|e: tokio_postgres::Error| AddressRefused::Unparseable(e.to_string()))?;
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            match host {
                tokio_postgres::config::Host::Tcp(name) => {
                    // A port list pairs with the host list; one port applies to all.
                    let port = ports
                        .get(i)
                        .or_else(|| (ports.len() == 1).then(|| &ports[0]))
                        .copied();
                    let authority = match port {
                        Some(p) => format!("{name}:{p}"),
                        None => name.clone(),
                    };
                    let host_only = name.trim_start_matches('[').trim_end_matches(']');
                    let parsed_host = if host_only.contains(':') {
                        format!("[{host_only}]")
                    } else {
                        host_only.to_owned()
                    };
                    if !self.allows_url("postgres", &parsed_host, port) {
                        return Err(AddressRefused::NotPermitted(authority));
                    }
                }
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(_) => return Err(AddressRefused::UnixSocket),
            }
        }
        Ok(())
    }
}

/// Outbound HTTP from a component (`wasi:http/outgoing-handler`), allowed
/// only to `allowed_outbound_hosts`, as Spin allows it. The project's
/// components make no such requests; this keeps a component that tries from
/// reaching anything Spin would refuse.
pub struct OutboundHttp {
    allowed: std::sync::Arc<AllowedHosts>,
}

impl OutboundHttp {
    pub fn new(allowed: std::sync::Arc<AllowedHosts>) -> Self {
        Self { allowed }
    }
}

type IoFuture = Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

impl wasmtime_wasi_http::WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    IoFuture,
                )>,
            > + Send,
    > {
        let uri = request.uri();
        let permitted = uri.host().is_some_and(|host| {
            self.allowed
                .allows_url(uri.scheme_str().unwrap_or("https"), host, uri.port_u16())
        });
        if !permitted {
            tracing::warn!("outbound HTTP request to {uri} is not permitted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    #[test]
    fn postgres_default_port_is_5432() {
        let h = hosts(&["postgres://db.example.com"]);
        assert!(h.check_postgres("postgres://u@db.example.com/app").is_ok());
        assert!(
            h.check_postgres("postgres://u@db.example.com:5432/app")
                .is_ok()
        );
        assert_eq!(
            h.check_postgres("postgres://u@db.example.com:6543/app"),
            Err(AddressRefused::NotPermitted("db.example.com:6543".into()))
        );
    }

    #[test]
    fn explicit_port_and_ip() {
        let h = hosts(&["postgres://127.0.0.1:5433"]);
        assert!(
            h.check_postgres("postgres://postgres@127.0.0.1:5433/x?sslmode=disable")
                .is_ok()
        );
        assert!(
            h.check_postgres("postgres://postgres@127.0.0.2:5433/x")
                .is_err()
        );
        assert!(h.check_postgres("host=127.0.0.1 port=5433 user=u").is_ok());
    }

    #[test]
    fn wildcards_ranges_and_cidr() {
        let h = hosts(&["postgres://*.example.com:*", "*://10.0.0.0/8:5000..5100"]);
        assert!(h.check_postgres("postgres://u@a.example.com:1/x").is_ok());
        assert!(h.check_postgres("postgres://u@example.com:1/x").is_err());
        assert!(h.check_postgres("postgres://u@10.1.2.3:5050/x").is_ok());
        assert!(h.check_postgres("postgres://u@10.1.2.3:5100/x").is_err());
    }

    #[test]
    fn scheme_must_match_and_nothing_is_allowed_by_default() {
        assert!(
            hosts(&["mysql://db:5432"])
                .check_postgres("postgres://u@db:5432/x")
                .is_err()
        );
        assert!(
            AllowedHosts::default()
                .check_postgres("postgres://u@localhost/x")
                .is_err()
        );
        assert!(
            hosts(&["*://*:*"])
                .check_postgres("postgres://u@anything:1/x")
                .is_ok()
        );
    }

    #[test]
    fn every_host_of_a_multi_host_string_is_checked() {
        let h = hosts(&["postgres://a:5432"]);
        assert!(h.check_postgres("host=a,b port=5432 user=u").is_err());
        assert!(h.check_postgres("host=a,a port=5432 user=u").is_ok());
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "db.example.com",
            "postgres://db/path",
            "foo://db",
            "postgres://a*b",
            "postgres://db:x",
        ] {
            assert!(
                AllowedHost::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(AllowedHosts::parse(&["insecure:allow-all"]).is_err());
    }

    #[test]
    fn http_urls_are_checked_with_their_default_ports() {
        let h = hosts(&["https://api.example.com", "http://localhost:8080"]);
        assert!(h.allows_url("https", "api.example.com", None));
        assert!(h.allows_url("https", "api.example.com", Some(443)));
        assert!(!h.allows_url("http", "api.example.com", None));
        assert!(h.allows_url("http", "localhost", Some(8080)));
        assert!(!h.allows_url("http", "localhost", None));
    }
}
