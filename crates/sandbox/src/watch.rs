//! Watches: one task per watch turns store events into newline-delimited JSON frames.
//!
//! ```text
//!   Store (snapshot | history after rv) ─▶ filter (namespace, name, selectors) ─▶ encode ─▶ mpsc ─▶ HTTP body
//!                      broadcast events ─┘            bookmarks, timeout, 410 on lag ─┘
//! ```
//! Frames are the stored bytes between a static prefix and suffix, sent as separate pieces, so a thousand
//! watchers of one object share its serialization without copying it; only Table watches build a row per
//! watcher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::error::status_body;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, EventType, Stored};
use super::verbs::Cluster;

/// Encodes one object for a watch frame: as is, or as a Table row.
pub(crate) type Encoder = Arc<dyn Fn(&Stored, bool) -> Bytes + Send + Sync>;

pub(crate) struct WatchParams {
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// None: start with the current objects as ADDED events.
    pub rv: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub timeout: Option<Duration>,
    /// Cut the watch at once with a 410 (fault injection).
    pub cut: bool,
    /// Deliver every frame this late (fault injection).
    pub lag: Option<Duration>,
}

/// One watch event as three pieces: a static prefix, the object's bytes (shared, not copied), a static suffix.
type Frame = [Bytes; 3];

fn frame(kind: &str, object: Bytes) -> Frame {
    let prefix: &'static [u8] = match kind {
        "ADDED" => b"{\"type\":\"ADDED\",\"object\":",
        "MODIFIED" => b"{\"type\":\"MODIFIED\",\"object\":",
        "DELETED" => b"{\"type\":\"DELETED\",\"object\":",
        "BOOKMARK" => b"{\"type\":\"BOOKMARK\",\"object\":",
        _ => b"{\"type\":\"ERROR\",\"object\":",
    };
    [Bytes::from_static(prefix), object, Bytes::from_static(b"}\n")]
}

/// Sends a frame; Err when the client went away.
async fn send(tx: &mpsc::Sender<Bytes>, frame: Frame) -> Result<(), ()> {
    for piece in frame {
        tx.send(piece).await.map_err(|_| ())?;
    }
    Ok(())
}

fn gone(rv: u64, oldest: u64) -> Frame {
    let status = status_body(
        410,
        "Expired",
        &format!("too old resource version: {rv} ({oldest})"),
        None,
    );
    frame("ERROR", Bytes::from(status.to_string()))
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Frame {
    let mut obj =
        json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    frame("BOOKMARK", Bytes::from(obj.to_string()))
}

/// Starts a watch; frames arrive on the receiver until the watch ends or the receiver is dropped.
pub(crate) fn start(
    cluster: Arc<Cluster>,
    rt: Arc<ResourceType>,
    params: WatchParams,
    encode: Encoder,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(256);
    match params.lag {
        None => {
            tokio::spawn(run(cluster, rt, params, encode, tx));
        }
        Some(lag) => {
            let (inner_tx, inner_rx) = mpsc::channel(256);
            tokio::spawn(run(cluster, rt, params, encode, inner_tx));
            tokio::spawn(lagged(inner_rx, tx, lag));
        }
    }
    rx
}

/// Forwards each frame `lag` after it was sent, in order.
async fn lagged(mut from: mpsc::Receiver<Bytes>, to: mpsc::Sender<Bytes>, lag: Duration) {
    // Frames are stamped as they come, so a burst is delayed by `lag` once, not once per frame.
    let (stamped_tx, mut stamped) = mpsc::unbounded_channel::<(tokio::time::Instant, Bytes)>();
    let stamp = async move {
        while let Some(piece) = from.recv().await {
            if stamped_tx.send((tokio::time::Instant::now() + lag, piece)).is_err() {
                return;
            }
        }
    };
    let forward = async move {
        while let Some((due, piece)) = stamped.recv().await {
            tokio::time::sleep_until(due).await;
            if to.send(piece).await.is_err() {
                return;
            }
        }
    };
    // When the client goes the source is dropped at once; when the source ends, what it sent still goes out.
    let mut forward = std::pin::pin!(forward);
    tokio::select! {
        _ = &mut forward => return,
        _ = stamp => {}
    }
    forward.await;
}

async fn run(cluster: Arc<Cluster>, rt: Arc<ResourceType>, p: WatchParams, encode: Encoder, tx: mpsc::Sender<Bytes>) {
    let key = rt.key();
    let matches = |s: &Stored| {
        p.ns.as_deref().is_none_or(|ns| ns == &*s.namespace)
            && p.labels.matches(|k| s.label(k))
            && p.fields.matches(|f| s.field(f))
    };
    if p.cut {
        let rv = cluster.store.current_rv();
        let _ = send(&tx, gone(p.rv.unwrap_or(rv), rv)).await;
        return;
    }
    let mut first = true;
    let (mut events, backlog, mut last_rv) = match p.rv {
        Some(rv) if !p.send_initial_events => match cluster.store.subscribe(Some(rv)) {
            Ok((backlog, rx)) => (rx, backlog, rv),
            Err(oldest) => {
                let _ = send(&tx, gone(rv, oldest)).await;
                return;
            }
        },
        _ => {
            let (items, rv, rx) = cluster
                .store
                .snapshot_and_subscribe(&key, p.ns.as_deref(), |s| matches(s));
            for item in items {
                if send(&tx, frame("ADDED", encode(&item, first))).await.is_err() {
                    return;
                }
                first = false;
            }
            if p.send_initial_events && p.bookmarks {
                let _ = send(&tx, bookmark(&rt, rv, true)).await;
            }
            (rx, Vec::new(), rv)
        }
    };
    for event in backlog {
        last_rv = event.obj.rv;
        if let Some(f) = translate(&key, &event, &matches, &encode, first) {
            first = false;
            if send(&tx, f).await.is_err() {
                return;
            }
        }
    }
    let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticker = tokio::time::interval(p.bookmark_interval);
    ticker.tick().await;
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    last_rv = event.obj.rv;
                    if let Some(f) = translate(&key, &event, &matches, &encode, first) {
                        first = false;
                        if send(&tx, f).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = send(&tx, gone(last_rv, cluster.store.current_rv())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if p.bookmarks => {
                if send(&tx, bookmark(&rt, last_rv, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = timeout => return,
        }
    }
}

/// The frame a watcher sees for an event: objects entering or leaving the selection become ADDED/DELETED.
fn translate(
    key: &str,
    event: &Event,
    matches: &impl Fn(&Stored) -> bool,
    encode: &Encoder,
    first: bool,
) -> Option<Frame> {
    if &*event.res != key {
        return None;
    }
    let now = matches(&event.obj);
    let kind = match event.kind {
        EventType::Added if now => EventType::Added,
        EventType::Deleted if now => EventType::Deleted,
        EventType::Modified => match (event.prev.as_deref().is_some_and(matches), now) {
            (true, true) => EventType::Modified,
            (false, true) => EventType::Added,
            (true, false) => EventType::Deleted,
            (false, false) => return None,
        },
        _ => return None,
    };
    Some(frame(kind.as_str(), encode(&event.obj, first)))
}

/// The plain encoder: the stored bytes themselves.
pub(crate) fn raw_encoder() -> Encoder {
    Arc::new(|s: &Stored, _first: bool| s.json.clone())
}

/// Parses `resourceVersion` of a watch: None for "" and "0" (start from the current state).
pub(crate) fn parse_rv(rv: Option<&str>) -> Result<Option<u64>, String> {
    match rv {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid resource version: {v}")),
    }
}
