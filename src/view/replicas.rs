//! Cluster mode: which replicas are alive. Each replica's sampler writes
//! its id with Redis's time into one sorted set every second; ids not
//! written for [`ALIVE`] drop out.

use std::time::Duration;

use crate::cluster::Cluster;

use super::model::ClusterInfo;

/// A replica that has not reported for this long is not listed.
pub const ALIVE: Duration = Duration::from_secs(5);

/// Reports this replica alive (when `beat`) and lists the live ones, on
/// Redis's clock.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], alive * 2)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - alive)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Redis's state and the live replicas; while Redis is lost, only this
/// one is known.
pub async fn info(cluster: &Cluster, beat: bool) -> ClusterInfo {
    let lost = || ClusterInfo {
        redis: "lost".into(),
        replicas: vec![cluster.replica().to_string()],
    };
    if !cluster.is_up() {
        return lost();
    }
    let script = redis::Script::new(SCRIPT);
    let mut call = script.prepare_invoke();
    call.key(cluster.key(&["replicas"]))
        .arg(cluster.replica())
        .arg(ALIVE.as_millis() as u64)
        .arg(if beat { "1" } else { "0" });
    match cluster.invoke::<Vec<String>>(&call).await {
        Ok(replicas) => ClusterInfo {
            redis: "up".into(),
            replicas,
        },
        Err(_) => lost(),
    }
}
