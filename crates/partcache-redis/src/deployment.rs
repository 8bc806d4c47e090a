//! [`Deployment`]: the connections, routing and event subscriptions of one Redis /
//! Valkey deployment (a standalone server or a cluster), shared by its caches.

use std::sync::{Arc, OnceLock};

use partcache::{Error, Result};
use redis::Value;

use crate::connection::{ConnectSettings, Pool};
use crate::feed::Feed;
use crate::push::Routes;
use crate::routing::{Pools, Request, Router};
use crate::slots::SlotMap;
use crate::subscriber::{Subscriber, confirmed};
use crate::url::{DeploymentKind, DeploymentUrl};

/// Connections, routing and subscriptions of one deployment, shared by its caches.
pub(crate) struct Deployment {
    pub(crate) url: DeploymentUrl,
    pub(crate) router: Arc<Router>,
    pool: Pool,
    /// Connections that carry only (S)SUBSCRIBE: redis-rs takes a push the server sends
    /// on its own (the `sunsubscribe` of a slot that moved away) as the reply to the
    /// oldest request in flight, which on a data connection would shift every later
    /// reply by one (found by `tests/it/topology.rs`).
    subscriptions: Pool,
    replicas: Option<Pool>,
    subscriber: Subscriber,
    /// Set once the task that restores lost subscriptions runs
    /// (`events::start_resubscriber`).
    pub(crate) resubscriber: OnceLock<()>,
    /// See [`Deployment::origin`].
    origin: String,
    /// See [`Deployment::channel_suffix`].
    channel_suffix: String,
}

impl Deployment {
    pub(crate) fn new(url: DeploymentUrl) -> Deployment {
        let settings = ConnectSettings::from_url(&url);
        let router = match url.kind {
            DeploymentKind::Standalone => Router::standalone(
                &url.nodes[0],
                url.response_timeout,
                url.breaker.probe_interval,
            ),
            DeploymentKind::Cluster => Router::cluster(
                url.nodes.clone(),
                url.response_timeout,
                url.read_from_replicas,
                url.breaker.probe_interval,
            ),
        };
        let replicas = (url.kind == DeploymentKind::Cluster && url.read_from_replicas)
            .then(|| Pool::new(settings.clone(), None, true));
        let origin = random_origin();
        let routes = Routes::new(origin.clone());
        Deployment {
            subscriber: Subscriber::new(routes.clone(), router.is_cluster()),
            router: Arc::new(router),
            subscriptions: Pool::new(settings.clone(), Some(routes.clone()), false),
            pool: Pool::new(settings, Some(routes), false),
            replicas,
            resubscriber: OnceLock::new(),
            origin,
            channel_suffix: crate::layout::channel_suffix(url.db),
            url,
        }
    }

    pub(crate) fn describe(&self) -> String {
        let kind = match self.url.kind {
            DeploymentKind::Standalone => "redis",
            DeploymentKind::Cluster => "redis-cluster",
        };
        format!("{kind} {}", self.url.nodes.join(","))
    }

    /// The URL's `connect_timeout`; also how often a store that could not open
    /// (the deployment was unreachable) tries again.
    pub(crate) fn connect_timeout(&self) -> std::time::Duration {
        self.url.connect_timeout
    }

    /// The standalone server's database number (0 on a cluster).
    pub(crate) fn database(&self) -> i64 {
        self.url.db
    }

    /// The deployment's event subscriptions.
    pub(crate) fn subscriber(&self) -> &Subscriber {
        &self.subscriber
    }

    /// Subscribes `feed` to `channels` and waits for the confirmations; records, per
    /// partition, the node whose connection holds its subscription.
    pub(crate) async fn subscribe(
        &self,
        channels: &[(String, u16)],
        feed: &Arc<Feed>,
    ) -> Result<()> {
        let requests = self.subscriber.register(channels, feed);
        let (replies, nodes) = self.execute_subscriptions_on(requests).await?;
        confirmed(replies)?;
        for (partition, node) in (0u16..).zip(nodes) {
            feed.subscribed_on(partition, node);
        }
        Ok(())
    }

    /// The pools subscription commands go through: apart from the data connections on
    /// a cluster (see the `subscriptions` field); on a standalone server, whose plain
    /// channels the server never drops by itself, the data connections carry them.
    fn subscription_pools(&self) -> Pools<'_> {
        Pools {
            primary: if self.router.is_cluster() {
                &self.subscriptions
            } else {
                &self.pool
            },
            replicas: None,
        }
    }

    /// Runs `requests` on the subscription connections (see `subscription_pools`).
    pub(crate) async fn execute_subscriptions(&self, requests: Vec<Request>) -> Result<Vec<Value>> {
        self.router
            .execute(self.subscription_pools(), requests)
            .await
    }

    /// [`Self::execute_subscriptions`], with the node that answered each request.
    pub(crate) async fn execute_subscriptions_on(
        &self,
        requests: Vec<Request>,
    ) -> Result<(Vec<Value>, Vec<String>)> {
        self.router
            .execute_recording_nodes(self.subscription_pools(), requests)
            .await
    }

    /// Runs `requests` on the data connections.
    pub(crate) async fn execute(&self, requests: Vec<Request>) -> Result<Vec<Value>> {
        let pools = Pools {
            primary: &self.pool,
            replicas: self.replicas.as_ref(),
        };
        self.router.execute(pools, requests).await
    }

    /// [`Self::execute`], with the node that answered each request.
    pub(crate) async fn execute_on(
        &self,
        requests: Vec<Request>,
    ) -> Result<(Vec<Value>, Vec<String>)> {
        let pools = Pools {
            primary: &self.pool,
            replicas: None,
        };
        self.router.execute_recording_nodes(pools, requests).await
    }

    /// Marks the slot map as possibly outdated: the next call reads it again.
    pub(crate) fn mark_slots_stale(&self) {
        self.router.mark_stale();
    }

    /// What follows a partition's key prefix in its channel name, for every cache of
    /// this deployment (`layout::channel_suffix`).
    pub(crate) fn channel_suffix(&self) -> &str {
        &self.channel_suffix
    }

    /// This client's origin: a random id in every message its scripts publish, so that
    /// it can tell its own messages (whose events it already has from the replies).
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// The circuit breakers of the data connections' nodes (masters, and replicas
    /// with `read_from_replicas`), by address.
    pub(crate) fn breakers(&self) -> Vec<partcache::stats::BreakerStats> {
        let mut breakers = self.pool.breakers();
        if let Some(replicas) = &self.replicas {
            breakers.extend(replicas.breakers());
        }
        breakers
    }

    pub(crate) async fn slot_map(&self) -> Result<Arc<SlotMap>> {
        tokio::time::timeout(self.router.timeout(), self.router.slot_map(&self.pool))
            .await
            .map_err(|_| Error::Timeout(self.router.timeout()))?
    }
}

/// A random id for a deployment.
fn random_origin() -> String {
    format!("{:016x}", fastrand::u64(..))
}
