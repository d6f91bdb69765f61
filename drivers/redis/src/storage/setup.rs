//! Opening the connection, and the checks made once at connect time: eviction and
//! durability, on the server or on every master of a cluster.

use std::collections::HashMap;
use std::time::Duration;

use queue_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError};

use crate::connection::Connection;
use crate::error::backend;
use crate::options::RedisOptions;

/// How many times the cluster client retries a command (after a redirect, a reconnect or
/// `TRYAGAIN`) before it fails it.
const CLUSTER_RETRIES: u32 = 5;

/// One server through a connection manager that reconnects by itself.
pub(super) async fn connect_single(
    client: &redis::Client,
    options: &RedisOptions,
) -> Result<ConnectionManager> {
    // One plain attempt first: a wrong password or an unreachable server is reported at
    // once instead of after the connection manager's retries.
    let probe = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(options.response_timeout);
    match tokio::time::timeout(
        options.connect_timeout,
        client.get_multiplexed_async_connection_with_config(&probe),
    )
    .await
    {
        Ok(Ok(_probe)) => {}
        Ok(Err(e)) => return Err(backend(e)),
        Err(_) => return Err(no_answer(options)),
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(options.response_timeout)
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(backend)
}

/// A cluster through the redis crate's async cluster client, which learns the slots from
/// the nodes given, keeps a connection per node, follows `MOVED`/`ASK` redirects and
/// reconnects by itself.
pub(super) async fn connect_cluster(
    nodes: &[redis::ConnectionInfo],
    options: &RedisOptions,
) -> Result<redis::cluster_async::ClusterConnection> {
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(options.connect_timeout)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(50)
        .max_retry_wait(2_000)
        .retry_wait_formula(100, 2);
    if let Some(timeout) = options.response_timeout {
        builder = builder.response_timeout(timeout);
    }
    let client = builder
        .build()
        .map_err(|e| Error::Config(format!("invalid redis cluster url: {e}")))?;
    match tokio::time::timeout(options.connect_timeout, client.get_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(backend(e)),
        Err(_) => Err(no_answer(options)),
    }
}

fn no_answer(options: &RedisOptions) -> Error {
    Error::backend(
        crate::DRIVER,
        format!("no answer within {:?}", options.connect_timeout),
    )
}

/// Refuses a server (on a cluster: any master) that may evict keys, unless allowed.
pub(super) async fn check_eviction(conn: &mut Connection, allow: bool) -> Result<()> {
    let policies = match server_config(conn, "maxmemory-policy").await {
        Ok(policies) => policies,
        Err(e) if is_connection_error(&e) => return Err(backend(e)),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not read the redis maxmemory-policy (is CONFIG disabled?): make sure it is `noeviction`, or jobs can vanish when the server runs out of memory"
            );
            return Ok(());
        }
    };
    let evicting = policies
        .into_iter()
        .find_map(|(node, policy)| policy.filter(|p| p != "noeviction").map(|p| (node, p)));
    let Some((node, policy)) = evicting else {
        return Ok(());
    };
    let server = if node.is_empty() {
        "the redis server's".to_owned()
    } else {
        format!("the redis cluster node {node}'s")
    };
    if allow {
        tracing::warn!(
            policy,
            node,
            "the redis maxmemory-policy lets the server evict keys: jobs can vanish under memory pressure (allowed by RedisOptions::allow_eviction)"
        );
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{server} maxmemory-policy is `{policy}`: when it runs out of memory it silently deletes keys, and with them jobs; \
             run `CONFIG SET maxmemory-policy noeviction` (and set it in redis.conf{every}), \
             or connect with RedisOptions::allow_eviction(true) to accept losing jobs",
            every = if node.is_empty() { "" } else { ", on every node" }
        )))
    }
}

/// Whether a push that returned survives a restart: only with an append-only file synced
/// on every write (on a cluster: on every master). Unknown (CONFIG disabled) counts as no.
pub(super) async fn is_durable(conn: &mut Connection) -> Result<bool> {
    let appendonly = server_config(conn, "appendonly").await;
    let fsync = server_config(conn, "appendfsync").await;
    match (appendonly, fsync) {
        (Ok(a), Ok(f)) => Ok(!a.is_empty()
            && a.iter().all(|(_, v)| v.as_deref() == Some("yes"))
            && !f.is_empty()
            && f.iter().all(|(_, v)| v.as_deref() == Some("always"))),
        (Err(e), _) | (_, Err(e)) if is_connection_error(&e) => Err(backend(e)),
        _ => Ok(false),
    }
}

/// A setting as each master has it (`CONFIG GET`): the node's address (empty on one
/// server) and its value.
async fn server_config(
    conn: &mut Connection,
    name: &str,
) -> Result<Vec<(String, Option<String>)>, RedisError> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    conn.on_every_master(&cmd)
        .await?
        .into_iter()
        .map(|(node, reply)| {
            let map = HashMap::<String, String>::from_redis_value(reply)?;
            Ok((node, map.get(name).cloned()))
        })
        .collect()
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}
