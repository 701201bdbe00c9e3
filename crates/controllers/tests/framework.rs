//! The shared machinery against the real API server: an informer sees creates, updates
//! and deletes through the in-process client, and a reconciler fed by its handler runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{eventually, Cluster};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, PostParams};
use skiff_controllers::informer::{key_of, Change};
use skiff_controllers::{Action, Informers, Queue, Reconciler};
use tokio_util::sync::CancellationToken;

struct Count {
    seen: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Reconciler for Count {
    type Error = std::convert::Infallible;
    fn name(&self) -> &'static str {
        "count"
    }
    async fn reconcile(&self, _key: &str) -> Result<Action, Self::Error> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(Action::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informer_feeds_a_reconciler_from_the_real_server() {
    let c = Cluster::server_only().await;
    let informers = Informers::new(c.controller_client());
    let cms = informers.informer::<ConfigMap>();
    let queue = Queue::new();
    let deleted = Arc::new(AtomicUsize::new(0));
    {
        let (q, d) = (queue.clone(), deleted.clone());
        cms.on_change(move |ch| {
            if matches!(ch, Change::Deleted(_)) {
                d.fetch_add(1, Ordering::SeqCst);
            }
            q.add(key_of(&**ch.object()));
        });
    }
    let stop = CancellationToken::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let ready = {
        let cms = cms.clone();
        async move { cms.synced().await }
    };
    let h = skiff_controllers::runner::spawn(
        Arc::new(Count { seen: seen.clone() }),
        queue,
        2,
        ready,
        stop.clone(),
    );
    informers.start(&stop);
    let api = c.api::<ConfigMap>("default");
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "one"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    eventually("the informer to cache the ConfigMap", || async {
        cms.get("default", "one")
    })
    .await;
    eventually("a reconcile", || async {
        (seen.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    api.delete("one", &DeleteParams::default()).await.unwrap();
    eventually("the delete to reach the handler", || async {
        (deleted.load(Ordering::SeqCst) == 1 && cms.get("default", "one").is_none()).then_some(())
    })
    .await;
    stop.cancel();
    h.await.unwrap();
}
