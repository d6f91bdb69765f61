//! The connection to Redis: one server through a [`ConnectionManager`], or a Redis Cluster
//! through the redis crate's async cluster client. Both answer [`ConnectionLike`], so every
//! script and command of the driver is written once; the few operations that would cross
//! hash slots ask [`Connection::is_cluster`] and take their split path (see `storage.rs`).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisFuture, Value};

/// The scheme of a cluster URL.
pub(crate) const CLUSTER_SCHEME: &str = "redis+cluster";

/// A shared connection, cheap to clone.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (or a primary behind a fixed address).
    Single(ConnectionManager),
    /// A Redis Cluster: commands go to the node that owns their keys' slot.
    Cluster(ClusterConnection),
}

impl Connection {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Sends `cmd` to every master (one server: to it) and returns each node's reply with
    /// its address.
    pub(crate) async fn on_every_master(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<Vec<(String, Value)>> {
        match self {
            Connection::Single(conn) => {
                let reply: Value = cmd.query_async(conn).await?;
                Ok(vec![(String::new(), reply)])
            }
            Connection::Cluster(conn) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match conn.route_command(cmd.clone(), routing).await? {
                    // Without a response policy the cluster client answers a map of
                    // node address to that node's reply.
                    Value::Map(replies) => Ok(replies
                        .into_iter()
                        .map(|(node, reply)| {
                            let node = match node {
                                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                                Value::SimpleString(s) => s,
                                other => format!("{other:?}"),
                            };
                            (node, reply)
                        })
                        .collect()),
                    other => Ok(vec![(String::new(), other)]),
                }
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What a URL names: one server, or the seed nodes of a cluster.
#[derive(Debug)]
pub(crate) enum Target {
    /// `redis://` or `redis+unix://`.
    Single(redis::Client),
    /// `redis+cluster://`: every node the URL lists (the first one first), with the URL's
    /// credentials.
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    /// Parses a URL; the message says what is wrong.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let Some(rest) = strip_scheme(url, CLUSTER_SCHEME) else {
            return redis::Client::open(url)
                .map(Target::Single)
                .map_err(|e| format!("invalid redis url: {e}"));
        };
        let (base, query) = match rest.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (rest, None),
        };
        let first = format!("redis://{base}")
            .into_connection_info()
            .map_err(|e| format!("invalid redis cluster url: {e}"))?;
        let db = first.redis_settings().db();
        if db != 0 {
            return Err(format!(
                "invalid redis cluster url: Redis Cluster has only database 0, not {db}"
            ));
        }
        let mut nodes = vec![first.clone()];
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name != "nodes" {
                return Err(format!(
                    "invalid redis cluster url: unknown option `{name}` (the only one is `nodes=host:port,host:port`)"
                ));
            }
            for node in value.split(',').filter(|n| !n.is_empty()) {
                let (host, port) = host_port(node).ok_or_else(|| {
                    format!("invalid redis cluster url: `{node}` in `nodes` is not host:port")
                })?;
                nodes.push(first.clone().set_addr(ConnectionAddr::Tcp(host, port)));
            }
        }
        Ok(Target::Cluster(nodes))
    }
}

/// `rest` of `scheme://rest`, the scheme compared without regard to case.
fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = url.split_once("://")?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 6379.
fn host_port(node: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ':']) && !node.starts_with('[') {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 6379,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(url: &str) -> Vec<(String, u16, Option<String>)> {
        match Target::parse(url).unwrap() {
            Target::Cluster(nodes) => nodes
                .into_iter()
                .map(|n| match n.addr() {
                    ConnectionAddr::Tcp(host, port) => (
                        host.clone(),
                        *port,
                        n.redis_settings().password().map(str::to_owned),
                    ),
                    other => panic!("{other:?}"),
                })
                .collect(),
            Target::Single(_) => panic!("not a cluster url: {url}"),
        }
    }

    #[test]
    fn cluster_urls() {
        assert_eq!(
            nodes("redis+cluster://127.0.0.1:7000?nodes=127.0.0.1:7001,127.0.0.1:7002"),
            [
                ("127.0.0.1".to_owned(), 7000, None),
                ("127.0.0.1".to_owned(), 7001, None),
                ("127.0.0.1".to_owned(), 7002, None),
            ]
        );
        assert_eq!(
            nodes("redis+cluster://:s%40cret@a.internal/?nodes=b.internal,[::1]:7001"),
            [
                ("a.internal".to_owned(), 6379, Some("s@cret".to_owned())),
                ("b.internal".to_owned(), 6379, Some("s@cret".to_owned())),
                ("::1".to_owned(), 7001, Some("s@cret".to_owned())),
            ]
        );
        assert_eq!(nodes("REDIS+CLUSTER://h:7000").len(), 1);
        for bad in [
            "redis+cluster://h:7000/2",
            "redis+cluster://h:7000?cluster=true",
            "redis+cluster://h:7000?nodes=h:x",
            "redis+cluster://h:7000?nodes=[::1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/2"),
            Ok(Target::Single(_))
        ));
    }
}
