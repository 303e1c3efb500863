//! `redis.mode: cluster`: redis-rs's async cluster client (slot routing, MOVED/ASK), plus per-node health.
//!
//! # A partial outage
//!
//! Each master node gets its own small breaker (the same state machine and `breaker.*` settings as the
//! sidecar's). A call goes to the node that owns its key's slot:
//! - the node answers (or gives an application error such as CROSSSLOT or WRONGTYPE): the node is up;
//! - it fails or times out: the node's breaker counts a failure; after `breaker.failure_threshold` of them the
//!   node's circuit opens and calls for its slots fail fast, without waiting for a timeout, until a probe
//!   (sent by the health task after `breaker.recovery_timeout`) succeeds.
//!
//! While at least one other master is up, such a failure is a [`BackendError::ShardUnavailable`]: the caller
//! gets the fallback (cache, default or 503), and the sidecar-wide breaker does not count it, so keys on the
//! healthy shards keep being served from Redis. When no master is up any more, failures are plain
//! [`BackendError::Unavailable`] / [`BackendError::Timeout`] and the sidecar-wide breaker opens as in
//! standalone mode. (With Redis's default `cluster-require-full-coverage yes`, a shard without a master makes
//! every node answer CLUSTERDOWN after `cluster-node-timeout`: every node then counts as failing, and the whole
//! sidecar degrades, as the cluster itself does.)
//!
//! Keyed commands are routed to the master of their first key's slot, the first key being where the command table
//! says ([`crate::commands::first_key`]: EVAL's first declared key, XREAD's first stream); a multi-key command
//! whose keys are in different slots is sent there unchanged, and Redis's CROSSSLOT answer is an application
//! error (422), never a silent non-atomic split. Keyless commands (PING, EVAL with no keys) go to a node believed
//! up.
//!
//! # Connections of their own
//!
//! A blocking command or a subscription on the RESP socket cannot share the multiplexed connection to a node
//! ([`NodeConnector`]): a blocking command gets one to the master of its first key's slot, a subscriber one to a
//! master believed up (a message published on any node reaches the subscribers of every node). Connecting goes
//! through that node's breaker, like any call to it.
//!
//! # Metrics
//!
//! `redguard_redis_node_{up,circuit_open,failures_total,rejected_total}{node}` with `node` = "host:port" for the
//! first `redis.node_metrics_limit` masters seen, and `node="other"` summing the rest. Nodes that leave the
//! topology (e.g. a failed master replaced by its replica) free their label.
//!
//! # JSON
//!
//! [`Cluster::node_views`] gives the same figures per node, with the breaker's state, for the `nodes` array of
//! `GET /v1/breaker` and the circuit-breaker health route; it is bounded by the same limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisError, TlsCertificates, Value};
use serde::Serialize;

use super::{
    bounded, client_for, into_values, pipeline_slots, tcp_settings, with_settings, Backend, BackendError, Password,
    PubSubConnection, SlotReply,
};
use crate::breaker::{Breaker, Observer, Settings, State, Transition};
use crate::clock::SystemClock;
use crate::commands;
use crate::config::RedisConfig;
use crate::jitter::Jitter;
use crate::metrics::Metrics;

/// How often the health task runs: probes due nodes, checks nodes not known to be up.
const HEALTH_TICK: Duration = Duration::from_millis(500);
/// The slot map is re-read at least this often, and soon after any node failure.
const TOPOLOGY_MAX_AGE: Duration = Duration::from_secs(10);
/// The longest wait between failed reads of the slot map (see [`RefreshBackoff`]): a cluster that comes back is
/// seen within it, as a changed slot map is within [`TOPOLOGY_MAX_AGE`].
const TOPOLOGY_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Label for nodes past `redis.node_metrics_limit`.
const OTHER: &str = "other";

/// Hands out the bounded `node` label values: a node's own address while fewer than the limit are in use,
/// else "other". A label is given back when its node leaves the topology.
struct Labels(Vec<Option<String>>);

impl Labels {
    fn new(limit: usize) -> Labels {
        Labels(vec![None; limit])
    }

    fn take(&mut self, addr: &str) -> String {
        match self.0.iter_mut().find(|l| l.is_none()) {
            Some(free) => {
                *free = Some(addr.to_owned());
                addr.to_owned()
            }
            None => OTHER.to_owned(),
        }
    }

    fn give_back(&mut self, addr: &str) {
        if let Some(slot) = self.0.iter_mut().find(|l| l.as_deref() == Some(addr)) {
            *slot = None;
        }
    }
}

/// One master node and its health.
struct Node {
    addr: String,
    host: String,
    port: u16,
    label: String,
    breaker: Breaker,
    up: AtomicBool,
    /// This node's own share of `redguard_redis_node_failures_total` / `_rejected_total` (a label may be
    /// `other`, shared by several nodes), for the JSON view.
    failures: AtomicU64,
    rejected: AtomicU64,
}

/// One master's own breaker as `GET /v1/breaker` and the circuit-breaker health route show it (the figures of
/// the per-node metrics, for one node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// "host:port", as in CLUSTER SLOTS.
    pub address: String,
    /// "closed", "open" or "half_open".
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// The last call or health check succeeded.
    pub up: bool,
    /// Failed calls and health checks since the node joined the slot map.
    pub failures_total: u64,
    /// Calls failed fast because the node's circuit was open.
    pub rejected_total: u64,
}

/// The slot map as last read from the cluster.
#[derive(Default)]
struct Topology {
    /// (first slot, last slot, index into `nodes`), sorted by first slot.
    ranges: Vec<(u16, u16, usize)>,
    nodes: Vec<Arc<Node>>,
    read_at: Option<Instant>,
}

impl Topology {
    fn node_for_slot(&self, slot: u16) -> Option<Arc<Node>> {
        let i = self.ranges.partition_point(|&(start, _, _)| start <= slot);
        let &(start, end, node) = self.ranges.get(i.checked_sub(1)?)?;
        (start..=end).contains(&slot).then(|| self.nodes[node].clone())
    }
}

struct Inner {
    conn: ClusterConnection,
    command_timeout: Duration,
    /// The settings of every node's breaker, new nodes' included; a reload replaces them.
    breaker: Mutex<Settings>,
    metrics: Arc<Metrics>,
    labels: Mutex<Labels>,
    /// `redis.node_metrics_limit`: the most nodes with a label of their own, and in [`Cluster::node_views`].
    node_limit: usize,
    topology: RwLock<Topology>,
    refresh_requested: AtomicBool,
    refresh_backoff: Mutex<RefreshBackoff>,
    /// Set when a node fails: the next health round checks every node, so a whole-cluster outage is told
    /// apart from one shard's within a tick even when all traffic goes to one shard.
    check_all: AtomicBool,
    next: AtomicUsize,
    /// A plain client per seed node (same credentials and TLS), only to say why the cluster cannot be used
    /// ([`Cluster::seed_error`]).
    seed_clients: Vec<(String, redis::Client)>,
    /// Opens connections of their own to one master ([`Backend::dedicated`], [`Backend::pubsub`]).
    connector: NodeConnector,
}

/// Opens a connection of its own to one master: a blocking command's, on the master of its key's slot, or a
/// subscriber's. The cluster client multiplexes every call onto one connection per node, where a blocking
/// command would stall the others and a subscription cannot live; these connections are made like the seed
/// nodes' (the first seed's credentials, TLS and TCP settings), to the master's address from the slot map.
pub(super) struct NodeConnector {
    /// The first seed node's settings; only the address is replaced.
    template: redis::ConnectionInfo,
    tls: Option<TlsCertificates>,
    /// `redis.connect_timeout`, no response timeout (a blocking command waits as long as it asked to), and
    /// the password provider, as in standalone mode.
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
}

impl NodeConnector {
    /// A client for the master at `host:port`, speaking TLS if the seeds do.
    fn client(&self, host: &str, port: u16) -> Result<redis::Client, RedisError> {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let info = self.template.clone().set_addr(addr);
        match &self.tls {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
            None => redis::Client::open(info),
        }
    }
}

/// A Redis Cluster, with a breaker per master node.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// Keeps a node's `circuit_open` gauge and the log in step with its breaker.
struct NodeObserver {
    addr: String,
    label: String,
    metrics: Arc<Metrics>,
}

impl Observer for NodeObserver {
    fn on_transition(&self, t: &Transition, last_error: Option<&str>) {
        let open = self.metrics.nodes.circuit_open.with_label_values(&[&self.label]);
        if t.from == State::Closed {
            open.inc();
        }
        if t.to == State::Closed {
            open.dec();
            tracing::info!(node = %self.addr, "cluster node circuit closed");
        } else {
            tracing::warn!(node = %self.addr, from = t.from.as_str(), to = t.to.as_str(), last_error, "cluster node circuit state changed");
        }
    }
}

/// What [`clients`] builds from the configuration.
pub(super) struct Clients {
    cluster: ClusterClient,
    /// One plain client per seed node, by address (for [`Cluster::seed_error`]).
    seeds: Vec<(String, redis::Client)>,
    connector: NodeConnector,
}

/// The cluster client, one plain client per seed node (for [`Cluster::seed_error`]) and the connector for
/// connections of their own, as configured; no connection is made. Also what the pre-flight check builds ([`super::check`]), so `check-config` refuses
/// exactly the settings this would.
pub(super) fn clients(
    cfg: &RedisConfig,
    tls: Option<TlsCertificates>,
    password: Option<Password>,
) -> Result<Clients, RedisError> {
    let seeds = cfg
        .nodes
        .iter()
        .map(|url| url.parse().map(|info| with_settings(info, cfg)))
        .collect::<Result<Vec<redis::ConnectionInfo>, _>>()?;
    let seed_clients = cfg
        .nodes
        .iter()
        .map(|url| {
            let client = client_for(url, cfg, tls.as_ref())?;
            Ok((client.get_connection_info().addr().to_string(), client))
        })
        .collect::<Result<Vec<_>, RedisError>>()?;
    let mut config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(None);
    if let Some(password) = password.clone() {
        config = config.set_credentials_provider(password);
    }
    let connector = NodeConnector {
        template: seeds
            .first()
            .cloned()
            .ok_or_else(|| RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed nodes")))?,
        tls: tls.clone(),
        config,
        connect_timeout: cfg.connect_timeout,
    };
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(cfg.connect_timeout)
        .response_timeout(cfg.command_timeout)
        .tcp_settings(tcp_settings())
        // Enough for a MOVED then an ASK; anything longer is cut by the command timeout anyway.
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(100);
    if let Some(certs) = tls {
        builder = builder.certs(certs);
    }
    if let Some(password) = password {
        builder = builder.set_credentials_provider(password);
    }
    Ok(Clients {
        cluster: builder.build()?,
        seeds: seed_clients,
        connector,
    })
}

impl Cluster {
    /// Sets up the cluster client lazily (no connection yet) and spawns the health task, which reads the slot
    /// map, checks nodes and probes failed ones. Must be called within a tokio runtime.
    pub(crate) fn new(
        cfg: &RedisConfig,
        tls: Option<TlsCertificates>,
        breaker: Settings,
        metrics: Arc<Metrics>,
        password: Option<Password>,
    ) -> Result<Self, RedisError> {
        let Clients {
            cluster: client,
            seeds: seed_clients,
            connector,
        } = clients(cfg, tls, password)?;
        let conn = client.get_pending_async_connection_with_config(redis::cluster::ClusterConfig::new());
        let inner = Arc::new(Inner {
            conn,
            command_timeout: cfg.command_timeout,
            breaker: Mutex::new(breaker),
            metrics,
            labels: Mutex::new(Labels::new(cfg.node_metrics_limit)),
            node_limit: cfg.node_metrics_limit,
            topology: RwLock::new(Topology::default()),
            refresh_requested: AtomicBool::new(true),
            refresh_backoff: Mutex::new(RefreshBackoff::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64,
            )),
            check_all: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            seed_clients,
            connector,
        });
        tokio::spawn(health_task(Arc::downgrade(&inner)));
        Ok(Cluster { inner })
    }

    /// Why the seed nodes cannot be used, found by connecting to each directly (bounded by the command
    /// timeout), or `None` if one of them answers. The cluster client reports a node that refuses the
    /// credentials only as "No connections found", which hides a wrong username or password; a plain
    /// connection says so (WRONGPASS, "authentication failed"), never with the password.
    pub async fn seed_error(&self) -> Option<String> {
        let mut first = None;
        for (addr, client) in &self.inner.seed_clients {
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<Value>(&mut conn).await
            };
            match bounded(self.inner.command_timeout, ping).await {
                Ok(_) => return None,
                Err(e) => {
                    let message = match e {
                        BackendError::Timeout => "timed out".to_owned(),
                        BackendError::Unavailable(m) | BackendError::ShardUnavailable(m) | BackendError::App(m) => m,
                    };
                    first.get_or_insert(format!("seed {addr}: {message}"));
                }
            }
        }
        first
    }

    /// Gives every node's breaker, and those of nodes that join later, reloaded settings (each keeps its state).
    pub(crate) fn reconfigure_breakers(&self, settings: &Settings) {
        let inner = &self.inner;
        *inner.breaker.lock().unwrap_or_else(|e| e.into_inner()) = settings.clone();
        let topo = inner.topology.read().unwrap_or_else(|e| e.into_inner());
        for node in &topo.nodes {
            node.breaker.reconfigure(settings.clone());
        }
    }

    /// The masters of the current slot map with their own breakers, sorted by address. At most
    /// `redis.node_metrics_limit` of them, like the metric labels; past it, masters whose circuit is not closed
    /// are kept first, so a failing shard is left out only when more masters fail than the limit.
    pub fn node_views(&self) -> Vec<NodeView> {
        let views = self.inner.topology().nodes.iter().map(|n| n.view()).collect();
        bounded_views(views, self.inner.node_limit)
    }
}

impl Node {
    fn view(&self) -> NodeView {
        let s = self.breaker.snapshot();
        NodeView {
            address: self.addr.clone(),
            state: s.state.as_str(),
            consecutive_failures: s.consecutive_failures,
            up: self.up.load(Ordering::Relaxed),
            failures_total: self.failures.load(Ordering::Relaxed),
            rejected_total: self.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Cluster {
    /// The master owning `slot`, or with no slot one believed up; an error when the slot map names none (a
    /// refresh is requested).
    fn master(&self, slot: Option<u16>) -> Result<Arc<Node>, BackendError> {
        let (node, _) = self.target(slot);
        node.ok_or_else(|| {
            self.inner.refresh_requested.store(true, Ordering::Relaxed);
            BackendError::Unavailable(
                "no cluster master is known for this command yet (the slot map is being read)".into(),
            )
        })
    }

    /// The node owning `slot` (with a slot-map refresh requested if none is known) and the route to it; with
    /// no slot, a node believed up.
    fn target(&self, slot: Option<u16>) -> (Option<Arc<Node>>, SingleNodeRoutingInfo) {
        let inner = &self.inner;
        match slot {
            Some(slot) => {
                let node = inner.topology().node_for_slot(slot);
                if node.is_none() {
                    inner.refresh_requested.store(true, Ordering::Relaxed);
                }
                (
                    node,
                    SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)),
                )
            }
            None => {
                let node = inner.pick_up_node();
                let routing = match &node {
                    Some(n) => SingleNodeRoutingInfo::ByAddress {
                        host: n.host.clone(),
                        port: n.port,
                    },
                    None => SingleNodeRoutingInfo::Random,
                };
                (node, routing)
            }
        }
    }
}

impl Backend for Cluster {
    async fn query(&self, cmd: &Cmd) -> Result<Value, BackendError> {
        let (node, routing) = self.target(commands::slot(cmd));
        let routing = RoutingInfo::SingleNode(routing);
        self.inner
            .call(
                node,
                |mut conn| async move { route(&mut conn, cmd.clone(), routing).await },
            )
            .await
    }

    /// A pipeline goes to one node in one round trip, so all its keys must hash to one slot (use hash tags,
    /// `{user:1}:a` and `{user:1}:b`); otherwise it is refused with CROSSSLOT before anything is sent.
    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        let slot = pipeline_slot(pipe)?;
        let (node, routing) = self.target(slot);
        let mut pipe = pipe.clone();
        pipe.ignore_errors();
        let len = pipe.len();
        // A transaction answers OK, QUEUED.. and then EXEC's array of replies: only that last one is wanted.
        let (offset, count) = if pipe.is_transaction() { (len + 1, 1) } else { (0, len) };
        let replies = self
            .inner
            .call(node, |mut conn| async move {
                conn.route_pipeline(pipe, offset, count, routing).await
            })
            .await;
        let values = match replies {
            Ok(mut values) if offset > 0 => values.pop().map_or_else(
                || Err(BackendError::Unavailable("no EXEC reply to a transaction".into())),
                into_values,
            ),
            other => other,
        };
        pipeline_slots(len, values)
    }

    /// The command and its probes as separate routed commands, sent together: in a pipeline, redis-rs does not
    /// follow a slot's ASK redirect (a migrating slot), so a plain GET would fail where it works alone. Each
    /// follows its own redirects; the command is submitted first, so both reach the node in that order unless
    /// a redirect reorders them (a probe sent to a node that no longer holds the key answers "no key", and
    /// nothing is cached).
    async fn query_then(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        let mut cmds = pipe.cmd_iter();
        let Some(first) = cmds.next() else {
            return Ok(Vec::new());
        };
        let mut probes = redis::pipe();
        cmds.for_each(|cmd| {
            probes.add_command(cmd.clone());
        });
        let (first, probed) = match probes.len() {
            1 => {
                let probe = probes.cmd_iter().next().expect("one probe");
                let (first, probe) = tokio::join!(self.query(first), self.query(probe));
                (first, Ok(vec![app_error_in_slot(probe)]))
            }
            _ => tokio::join!(self.query(first), self.pipeline(&probes)),
        };
        let mut slots = Vec::with_capacity(1 + probes.len());
        slots.push(match first {
            Ok(value) => Ok(value),
            Err(BackendError::App(message)) => Err(message),
            Err(failure) => return Err(failure),
        });
        // A probe that failed leaves its key's expiry unknown (nothing is cached); the command's answer stands.
        match probed {
            Ok(probed) => slots.extend(probed),
            Err(e) => slots.extend((0..probes.len()).map(|_| Err(format!("{e:?}")))),
        }
        Ok(slots)
    }

    /// On the master of `slot` (any master for a keyless command), through that node's breaker.
    async fn dedicated(&self, slot: Option<u16>) -> Result<MultiplexedConnection, BackendError> {
        let node = self.master(slot)?;
        let connector = &self.inner.connector;
        let connect = async {
            let client = connector
                .client(&node.host, node.port)
                .map_err(|e| super::classify(&e))?;
            bounded(
                connector.connect_timeout,
                client.get_multiplexed_async_connection_with_config(&connector.config),
            )
            .await
        };
        self.inner.on_node(&node, connect).await
    }

    /// On the master of `slot` (a shard channel's), or a master believed up, through that node's breaker.
    async fn pubsub<P: AsyncPushSender>(&self, slot: Option<u16>, pushes: P) -> Result<PubSubConnection, BackendError> {
        let node = self.master(slot)?;
        let connector = &self.inner.connector;
        let connect = async {
            let client = connector
                .client(&node.host, node.port)
                .map_err(|e| super::classify(&e))?;
            let command_timeout = self.inner.command_timeout;
            super::open_pubsub(&client, &connector.config, command_timeout, pushes).await
        };
        let conn = self.inner.on_node(&node, connect).await?;
        Ok(PubSubConnection {
            conn,
            node: Some(node.addr.clone()),
        })
    }

    fn master_of(&self, slot: u16) -> Option<String> {
        self.target(Some(slot)).0.map(|node| node.addr.clone())
    }

    fn nodes(&self) -> Option<Vec<NodeView>> {
        Some(self.node_views())
    }
}

/// One command's outcome as a pipeline slot: any error is the slot's.
fn app_error_in_slot(result: Result<Value, BackendError>) -> SlotReply {
    result.map_err(|e| match e {
        BackendError::App(message) => message,
        other => format!("{other:?}"),
    })
}

/// The one slot every keyed command of `pipe` uses, or CROSSSLOT (an application error) if they differ.
fn pipeline_slot(pipe: &Pipeline) -> Result<Option<u16>, BackendError> {
    let mut slots = pipe.cmd_iter().filter_map(commands::slot);
    let first = slots.next();
    match first {
        Some(slot) if slots.any(|s| s != slot) => Err(BackendError::App(
            "CROSSSLOT the pipeline's keys hash to different slots; in cluster mode every command of a pipeline \
             must use keys of one slot (use hash tags such as {user:1})"
                .into(),
        )),
        _ => Ok(first),
    }
}

impl Inner {
    fn topology(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A node believed up, round-robin; else any known node; else none (route at random).
    fn pick_up_node(&self) -> Option<Arc<Node>> {
        let topo = self.topology();
        let n = topo.nodes.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &topo.nodes[(start + i) % n])
            .find(|node| node.up.load(Ordering::Relaxed) && node.breaker.state() == State::Closed)
            .or_else(|| topo.nodes.get(start % n))
            .cloned()
    }

    /// Whether any master other than `except` is up with a closed circuit.
    fn others_up(&self, except: &str) -> bool {
        self.topology()
            .nodes
            .iter()
            .any(|n| n.addr != except && n.up.load(Ordering::Relaxed) && n.breaker.state() == State::Closed)
    }

    /// Sends one request through the node's breaker (if the node is known) and records the outcome.
    async fn call<T, F, Fut>(&self, node: Option<Arc<Node>>, send: F) -> Result<T, BackendError>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let sent = bounded(self.command_timeout, send(self.conn.clone()));
        match node {
            Some(node) => self.on_node(&node, sent).await,
            None => sent.await,
        }
    }

    /// Runs `attempt` (bounded already) against `node`, through its breaker: failed fast while its circuit is
    /// open, and its outcome counted.
    async fn on_node<T>(
        &self,
        node: &Arc<Node>,
        attempt: impl std::future::Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let permit = match node.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.metrics.nodes.rejected.with_label_values(&[&node.label]).inc();
                node.rejected.fetch_add(1, Ordering::Relaxed);
                let message = match rejected.retry_after {
                    Some(wait) => format!(
                        "cluster node {} is failing; its circuit is open (next probe in {} ms)",
                        node.addr,
                        wait.as_millis()
                    ),
                    None => format!("cluster node {} is failing; its circuit is forced open", node.addr),
                };
                return Err(self.degrade(node, BackendError::Unavailable(message)));
            }
        };
        let result = attempt.await;
        match &result {
            Ok(_) | Err(BackendError::App(_)) => {
                permit.success();
                self.set_up(node, true);
                result
            }
            Err(err) => {
                let message = match err {
                    BackendError::Timeout => "timed out".to_owned(),
                    BackendError::Unavailable(m) | BackendError::ShardUnavailable(m) | BackendError::App(m) => {
                        m.clone()
                    }
                };
                permit.failure(&message);
                self.metrics.nodes.failures.with_label_values(&[&node.label]).inc();
                node.failures.fetch_add(1, Ordering::Relaxed);
                self.set_up(node, false);
                self.refresh_requested.store(true, Ordering::Relaxed);
                self.check_all.store(true, Ordering::Relaxed);
                Err(self.degrade(node, err.clone()))
            }
        }
    }

    /// A failure on one node is a shard outage while another master is up, else Redis's outage.
    fn degrade(&self, node: &Node, err: BackendError) -> BackendError {
        if !self.others_up(&node.addr) {
            return err;
        }
        let message = match err {
            BackendError::Timeout => "timed out".to_owned(),
            BackendError::Unavailable(m) | BackendError::ShardUnavailable(m) | BackendError::App(m) => m,
        };
        if message.starts_with("cluster node ") {
            BackendError::ShardUnavailable(message)
        } else {
            BackendError::ShardUnavailable(format!("cluster node {}: {message}", node.addr))
        }
    }

    fn set_up(&self, node: &Node, up: bool) {
        if node.up.swap(up, Ordering::Relaxed) != up {
            let gauge = self.metrics.nodes.up.with_label_values(&[&node.label]);
            if up {
                gauge.inc();
            } else {
                gauge.dec();
                tracing::warn!(node = %node.addr, "cluster node failing");
            }
        }
    }

    /// Reads CLUSTER SLOTS (from a node believed up, else any) and rebuilds the slot map, keeping the health of
    /// nodes that stay and freeing the metric labels of nodes that left.
    async fn refresh_topology(&self) -> Result<(), BackendError> {
        let mut last = BackendError::Unavailable("no cluster node answered CLUSTER SLOTS".to_owned());
        for _ in 0..3 {
            let node = self.pick_up_node();
            let routing = match &node {
                Some(n) if n.up.load(Ordering::Relaxed) => RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: n.host.clone(),
                    port: n.port,
                }),
                _ => RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            };
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SLOTS");
            match bounded(self.command_timeout, route(&mut conn, cmd, routing)).await {
                Ok(value) => match parse_slots(&value) {
                    Some(ranges) if !ranges.is_empty() => {
                        self.install(ranges);
                        return Ok(());
                    }
                    _ => last = BackendError::App(format!("unexpected CLUSTER SLOTS reply: {value:?}")),
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn install(&self, ranges: Vec<(u16, u16, String)>) {
        let mut topo = self.topology.write().unwrap_or_else(|e| e.into_inner());
        let old: HashMap<String, Arc<Node>> = topo.nodes.drain(..).map(|n| (n.addr.clone(), n)).collect();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut new_ranges = Vec::with_capacity(ranges.len());
        for (start, end, addr) in ranges {
            let i = *index.entry(addr.clone()).or_insert_with(|| {
                nodes.push(old.get(&addr).cloned().unwrap_or_else(|| self.new_node(&addr)));
                nodes.len() - 1
            });
            new_ranges.push((start, end, i));
        }
        new_ranges.sort_unstable();
        for (addr, gone) in old.iter().filter(|(addr, _)| !index.contains_key(*addr)) {
            tracing::info!(node = %addr, "cluster node left the slot map");
            self.forget(gone);
        }
        if old.is_empty() || nodes.len() != old.len() || index.keys().any(|a| !old.contains_key(a)) {
            let list: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
            tracing::info!(masters = %list.join(","), "cluster slot map read");
        }
        *topo = Topology {
            ranges: new_ranges,
            nodes,
            read_at: Some(Instant::now()),
        };
    }

    fn new_node(&self, addr: &str) -> Arc<Node> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
            .unwrap_or_else(|| (addr.to_owned(), 6379));
        let label = self.labels.lock().unwrap_or_else(|e| e.into_inner()).take(addr);
        let m = &self.metrics.nodes;
        // Show the node from the start: down until it answers, no failures yet.
        m.up.with_label_values(&[&label]);
        m.circuit_open.with_label_values(&[&label]);
        m.failures.with_label_values(&[&label]);
        m.rejected.with_label_values(&[&label]);
        let observer = Arc::new(NodeObserver {
            addr: addr.to_owned(),
            label: label.clone(),
            metrics: self.metrics.clone(),
        });
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ u64::from(port);
        Arc::new(Node {
            addr: addr.to_owned(),
            host,
            port,
            label,
            breaker: Breaker::new(
                self.breaker.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                Arc::new(SystemClock),
                seed,
                vec![observer],
            ),
            up: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// Drops a node's share of its label's gauges, and the label itself if it was the node's own.
    fn forget(&self, node: &Node) {
        let m = &self.metrics.nodes;
        if node.label == OTHER {
            if node.up.load(Ordering::Relaxed) {
                m.up.with_label_values(&[OTHER]).dec();
            }
            if node.breaker.state() != State::Closed {
                m.circuit_open.with_label_values(&[OTHER]).dec();
            }
            return;
        }
        let label = [node.label.as_str()];
        let _ = m.up.remove_label_values(&label);
        let _ = m.circuit_open.remove_label_values(&label);
        let _ = m.failures.remove_label_values(&label);
        let _ = m.rejected.remove_label_values(&label);
        self.labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(&node.addr);
    }

    /// One health round: re-read the slot map when asked or stale, then PING (concurrently) every node that is
    /// not known to be up, or every node after a failure or when the map was stale. A node's breaker admits
    /// the PING only when due, so an open node is probed once per recovery period.
    async fn health_round(self: &Arc<Self>) {
        let stale = self.topology().read_at.is_none_or(|t| t.elapsed() >= TOPOLOGY_MAX_AGE);
        if stale || self.refresh_requested.swap(false, Ordering::Relaxed) {
            let now = Instant::now();
            let allowed = self
                .refresh_backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allows(now);
            if !allowed {
                self.refresh_requested.store(true, Ordering::Relaxed); // kept for when the wait is over
            } else if let Err(e) = self.refresh_topology().await {
                self.refresh_requested.store(true, Ordering::Relaxed);
                let wait = self
                    .refresh_backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failed(now);
                tracing::debug!(error = ?e, next_try_in_seconds = wait.as_secs_f64(), "cannot read the cluster slot map");
            } else {
                self.refresh_backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .succeeded();
            }
        }
        let all = stale || self.check_all.swap(false, Ordering::Relaxed);
        let check: Vec<Arc<Node>> = {
            let topo = self.topology();
            topo.nodes
                .iter()
                .filter(|n| all || !n.up.load(Ordering::Relaxed) || n.breaker.state() != State::Closed)
                .filter(|n| {
                    n.breaker.state() != State::Open || n.breaker.snapshot().until_half_open.is_none_or(|d| d.is_zero())
                })
                .cloned()
                .collect()
        };
        let mut pings = tokio::task::JoinSet::new();
        for node in check {
            let inner = self.clone();
            pings.spawn(async move {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                let ping = redis::cmd("PING");
                let _ = inner
                    .call(
                        Some(node),
                        |mut conn| async move { route(&mut conn, ping, routing).await },
                    )
                    .await;
            });
        }
        while pings.join_next().await.is_some() {}
    }
}

/// At most `limit` views, those whose circuit is not closed first, sorted by address.
fn bounded_views(mut views: Vec<NodeView>, limit: usize) -> Vec<NodeView> {
    views.sort_by(|a, b| {
        (a.state == "closed")
            .cmp(&(b.state == "closed"))
            .then(a.address.cmp(&b.address))
    });
    views.truncate(limit);
    views.sort_by(|a, b| a.address.cmp(&b.address));
    views
}

/// Sends one routed command. The cluster client hands server errors (CROSSSLOT, CLUSTERDOWN ...) back as a
/// `Value::ServerError` reply; they are turned into errors here so they are classified like everywhere else.
async fn route(conn: &mut ClusterConnection, cmd: Cmd, routing: RoutingInfo) -> Result<Value, RedisError> {
    match conn.route_command(cmd, routing).await? {
        Value::ServerError(err) => Err(err.into()),
        value => Ok(value),
    }
}

async fn health_task(inner: Weak<Inner>) {
    loop {
        match inner.upgrade() {
            Some(inner) => inner.health_round().await,
            None => return,
        }
        tokio::time::sleep(HEALTH_TICK).await;
    }
}

/// When the slot map may be read again after failed reads. Each read goes through redis-rs's cluster client,
/// which reconnects to every seed and retries, so one failed read is about nine connection attempts. Without a
/// wait, a cluster that is down or refuses the credentials got 18 connections a second from every sidecar, and
/// a fleet met a recovering cluster with a storm. After `n` failures in a row the wait is the health tick times
/// 2^n, capped at [`TOPOLOGY_BACKOFF_MAX`], with "equal jitter" (a random half of it) so that sidecars which
/// failed together do not retry together. A successful read resets it.
struct RefreshBackoff {
    failures: u32,
    not_before: Option<Instant>,
    jitter: Jitter,
}

impl RefreshBackoff {
    fn new(seed: u64) -> RefreshBackoff {
        RefreshBackoff {
            failures: 0,
            not_before: None,
            jitter: Jitter::new(seed),
        }
    }

    fn allows(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Records a failed read at `now`; returns the wait before the next one.
    fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = HEALTH_TICK
            .saturating_mul(1u32 << self.failures.min(16))
            .min(TOPOLOGY_BACKOFF_MAX);
        let wait = base / 2 + (base / 2).mul_f64(self.jitter.unit());
        self.not_before = Some(now + wait);
        wait
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }
}

/// Parses CLUSTER SLOTS into (first slot, last slot, "host:port" of the master).
fn parse_slots(value: &Value) -> Option<Vec<(u16, u16, String)>> {
    let Value::Array(entries) = value else {
        return None;
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                return None;
            };
            let int = |v: &Value| match v {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            let (start, end) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let port = match master.get(1)? {
                Value::Int(n) => *n,
                _ => return None,
            };
            Some((start, end, format!("{host}:{port}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_slot_map_reads_back_off_with_jitter_up_to_the_cap() {
        let start = Instant::now();
        let mut b = RefreshBackoff::new(42);
        assert!(b.allows(start), "the first read is not held back");
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = b.failed(now);
            assert!(
                !b.allows(now + wait - Duration::from_millis(1)),
                "held back until the wait is over"
            );
            assert!(b.allows(now + wait));
            waits.push(wait);
            now += wait;
        }
        // Base 1 s, 2 s, 4 s, 8 s, then capped at 10 s; each wait is in [base / 2, base].
        let bases = [1, 2, 4, 8, 10, 10, 10, 10].map(Duration::from_secs);
        for (wait, base) in waits.iter().zip(bases) {
            assert!(
                *wait >= base / 2 && *wait <= base,
                "{wait:?} not within [{:?}, {base:?}]",
                base / 2
            );
        }
        b.succeeded();
        assert!(b.allows(now), "a successful read resets the wait");
        assert!(b.failed(now) <= Duration::from_secs(1), "and the doubling starts over");

        // Sidecars that fail together spread their next reads over the jitter window.
        let spread: std::collections::BTreeSet<Duration> = (0..100u64)
            .map(|seed| RefreshBackoff::new(seed * 7919).failed(start))
            .collect();
        assert!(
            spread.len() > 90,
            "only {} distinct waits among 100 sidecars",
            spread.len()
        );
    }

    #[test]
    fn labels_are_bounded_and_given_back() {
        let mut labels = Labels::new(2);
        assert_eq!(labels.take("a:1"), "a:1");
        assert_eq!(labels.take("b:2"), "b:2");
        assert_eq!(labels.take("c:3"), "other");
        assert_eq!(labels.take("d:4"), "other");
        labels.give_back("a:1");
        labels.give_back("c:3"); // never had its own label: no effect
        assert_eq!(labels.take("e:5"), "e:5");
        assert_eq!(labels.take("f:6"), "other");
    }

    #[test]
    fn node_views_are_bounded_keeping_failing_nodes_and_sorted_by_address() {
        let view = |address: &str, state: &'static str| NodeView {
            address: address.to_owned(),
            state,
            consecutive_failures: 0,
            up: state == "closed",
            failures_total: 0,
            rejected_total: 0,
        };
        let views = vec![
            view("10.0.0.4:6379", "closed"),
            view("10.0.0.3:6379", "open"),
            view("10.0.0.1:6379", "closed"),
            view("10.0.0.2:6379", "half_open"),
        ];
        let addresses = |v: Vec<NodeView>| v.into_iter().map(|v| v.address).collect::<Vec<_>>();
        assert_eq!(
            addresses(bounded_views(views.clone(), 16)),
            ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379", "10.0.0.4:6379"]
        );
        assert_eq!(
            addresses(bounded_views(views.clone(), 3)),
            ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]
        );
        assert_eq!(
            addresses(bounded_views(views, 1)),
            ["10.0.0.2:6379"],
            "failing nodes first, then by address"
        );
    }

    #[test]
    fn slot_ranges_find_their_node() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![Value::BulkString(b"127.0.0.1".to_vec()), Value::Int(7000)]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![Value::BulkString(b"127.0.0.1".to_vec()), Value::Int(7001)]),
            ]),
        ]);
        let ranges = parse_slots(&reply).unwrap();
        assert_eq!(
            ranges,
            [
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 16383, "127.0.0.1:7001".to_owned())
            ]
        );
        assert_eq!(parse_slots(&Value::Nil), None);
    }
}
