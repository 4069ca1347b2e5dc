//! The changes the demo's checker reads, in the order the API server made them: from the sandbox's own event
//! stream, or from watches on a real API server.
//!
//! ```text
//!   sandbox:  LocalApi::events() (one stream, already in order) ──────────────────────────────┐
//!   real:     a watcher per resource (nodes, pods, namespaces, GpuLeases, TenantPools, events) │
//!               ─▶ merge: each change held `HOLD`, then released by resourceVersion ──────────┴─▶ Feed ─▶ Checker
//! ```
//! A real server's watches are one stream per resource, so a node's change and a pod's can arrive in either
//! order; the checks compare them (a tenant pod and the lease on its node), so the merge puts them back in the
//! order of etcd's revisions, which every resourceVersion of one server shares. A watch that had to list again
//! (it fell too far behind) may have missed changes: that counts as missed, as a lagging sandbox stream does.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use sublet_sandbox::LocalApi;
use sublet_sandbox::store::EventType;
use tokio::sync::{broadcast, mpsc, watch};

use super::DemoError;

/// How long a change from a real server's watch waits for changes of other resources made before it.
pub const HOLD: Duration = Duration::from_millis(500);

/// One change to an object.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: EventType,
    /// The plural resource: `pods`, `nodes`, `gpuleases`, ...
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub obj: Value,
}

/// What a feed delivers.
#[derive(Debug)]
pub enum Item {
    Change(Change),
    /// Changes that were lost (a lagging stream, a watch that listed again).
    Missed(u64),
}

/// A stream of changes; [`Feed::close`] has it deliver what it holds and end.
pub struct Feed {
    pub rx: mpsc::UnboundedReceiver<Item>,
    stop: watch::Sender<bool>,
}

impl Feed {
    /// Asks the feed to deliver what it has and then end (the receiver then yields `None`).
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }
}

/// Every change the sandbox makes from now on.
pub fn local(local: &LocalApi) -> Feed {
    let mut events = local.events();
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        let forward = |ev: &sublet_sandbox::store::Event| {
            Item::Change(Change {
                kind: ev.kind,
                // Store keys are `resource` for the core group and `group/resource` otherwise.
                resource: ev.res.rsplit('/').next().unwrap_or("").to_string(),
                namespace: ev.obj.namespace.to_string(),
                name: ev.obj.name.to_string(),
                obj: ev.obj.value(),
            })
        };
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let item = match ev {
                        Ok(ev) => forward(&ev),
                        Err(broadcast::error::RecvError::Lagged(n)) => Item::Missed(n),
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if tx.send(item).is_err() {
                        return;
                    }
                }
                _ = stopped.wait_for(|s| *s) => {
                    while let Ok(ev) = events.try_recv() {
                        let _ = tx.send(forward(&ev));
                    }
                    return;
                }
            }
        }
    });
    Feed { rx, stop }
}

/// The resources the checker reads: (group, version, kind, plural).
const WATCHED: [(&str, &str, &str, &str); 6] = [
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "Node", "nodes"),
    ("", "v1", "Pod", "pods"),
    ("sublet.dev", "v1alpha1", "GpuLease", "gpuleases"),
    ("sublet.dev", "v1alpha1", "TenantPool", "tenantpools"),
    ("events.k8s.io", "v1", "Event", "events"),
];

/// Every change on a real API server from now on (after the objects that exist, delivered as added). Answers
/// once every watch has listed, so that nothing written afterwards is missed; sublet's CRDs must be served.
pub async fn remote(client: Client) -> Result<Feed, DemoError> {
    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<(u64, Item)>();
    let (stop, stopped) = watch::channel(false);
    let (synced_tx, mut synced_rx) = mpsc::unbounded_channel::<()>();
    for (group, version, kind, plural) in WATCHED {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        tokio::spawn(watch_one(
            api,
            plural,
            raw_tx.clone(),
            synced_tx.clone(),
            stopped.clone(),
        ));
    }
    drop(raw_tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..WATCHED.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !matches!(tokio::time::timeout(left, synced_rx.recv()).await, Ok(Some(()))) {
            let _ = stop.send(true);
            return Err(DemoError::Setup(
                "the cluster's watches on nodes, pods, namespaces, events and sublet's resources did not list \
                 within 30 s"
                    .into(),
            ));
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(merge(raw_rx, tx));
    Ok(Feed { rx, stop })
}

fn resource_version(obj: &DynamicObject) -> u64 {
    obj.resource_version().and_then(|rv| rv.parse().ok()).unwrap_or(0)
}

/// Watches one resource, sending each change with its resourceVersion.
async fn watch_one(
    api: Api<DynamicObject>,
    plural: &'static str,
    tx: mpsc::UnboundedSender<(u64, Item)>,
    synced: mpsc::UnboundedSender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut listed: HashSet<(String, String)> = HashSet::new();
    let mut lists = 0u32;
    let change = |kind: EventType, obj: &DynamicObject| {
        let namespace = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let value = serde_json::to_value(obj).unwrap_or(Value::Null);
        Item::Change(Change {
            kind,
            resource: plural.to_string(),
            namespace,
            name,
            obj: value,
        })
    };
    // After the stop, changes made just before it are still on their way: watch `HOLD` longer.
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.wait_for(|s| *s), if until.is_none() => {
                until = Some(tokio::time::Instant::now() + HOLD);
                continue;
            }
            _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => return,
        };
        let Some(event) = event else { return };
        let sent = match event {
            Ok(watcher::Event::Init) => {
                lists += 1;
                listed.clear();
                // A second list means the watch could not resume: what changed in between is lost.
                if lists > 1 {
                    tx.send((0, Item::Missed(1)))
                } else {
                    Ok(())
                }
            }
            Ok(watcher::Event::InitApply(obj)) | Ok(watcher::Event::Apply(obj)) => {
                let key = (obj.namespace().unwrap_or_default(), obj.name_any());
                listed.insert(key.clone());
                let kind = if known.insert(key) {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                tx.send((resource_version(&obj), change(kind, &obj)))
            }
            Ok(watcher::Event::Delete(obj)) => {
                known.remove(&(obj.namespace().unwrap_or_default(), obj.name_any()));
                tx.send((resource_version(&obj), change(EventType::Deleted, &obj)))
            }
            Ok(watcher::Event::InitDone) => {
                known.retain(|k| listed.contains(k));
                if lists == 1 {
                    let _ = synced.send(());
                }
                Ok(())
            }
            Err(e) => {
                tracing::debug!(resource = plural, error = %e, "demo checker's watch failed; retrying");
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Holds each change [`HOLD`] and releases them in resourceVersion order; once every watch has ended, releases
/// what it still holds.
async fn merge(mut raw: mpsc::UnboundedReceiver<(u64, Item)>, tx: mpsc::UnboundedSender<Item>) {
    use tokio::time::Instant;
    let mut held: BTreeMap<(u64, u64), (Instant, Item)> = BTreeMap::new();
    let mut seq = 0u64;
    loop {
        // Only the lowest resourceVersion can be released: the others wait behind it.
        let wake = held
            .first_key_value()
            .map_or(Instant::now() + HOLD, |(_, (at, _))| *at + HOLD);
        tokio::select! {
            item = raw.recv() => match item {
                Some((rv, item)) => {
                    seq += 1;
                    held.insert((rv, seq), (Instant::now(), item));
                }
                None => {
                    for (_, (_, item)) in std::mem::take(&mut held) {
                        let _ = tx.send(item);
                    }
                    return;
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        while let Some(entry) = held.first_entry() {
            if entry.get().0.elapsed() < HOLD {
                break;
            }
            let (_, item) = entry.remove();
            if tx.send(item).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str) -> Item {
        Item::Change(Change {
            kind: EventType::Added,
            resource: "pods".into(),
            namespace: "ml".into(),
            name: name.into(),
            obj: Value::Null,
        })
    }

    fn name(item: Item) -> String {
        match item {
            Item::Change(c) => c.name,
            Item::Missed(n) => format!("missed {n}"),
        }
    }

    #[tokio::test]
    async fn the_merge_releases_changes_by_resource_version_and_flushes_at_the_end() {
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // A later change arrives first (another resource's watch was quicker); both are queued before the
        // merge first runs (a single-threaded runtime), so it holds both.
        raw_tx.send((12, change("b"))).unwrap();
        raw_tx.send((10, change("a"))).unwrap();
        tokio::spawn(merge(raw_rx, tx));
        assert_eq!(name(rx.recv().await.unwrap()), "a");
        assert_eq!(name(rx.recv().await.unwrap()), "b");
        raw_tx.send((20, change("c"))).unwrap();
        // Every watch has ended: what is held goes out at once.
        drop(raw_tx);
        assert_eq!(name(rx.recv().await.unwrap()), "c");
        assert!(rx.recv().await.is_none(), "the feed ends after its flush");
    }
}
