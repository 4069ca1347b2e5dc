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
    if p.cut {
        let rv = cluster.store.current_rv();
        let _ = send(&tx, gone(p.rv.unwrap_or(rv), rv)).await;
        return;
    }
    let mut watcher = Watcher {
        key: rt.key(),
        cluster,
        rt,
        p,
        encode,
        tx,
        first: true,
        last_rv: 0,
    };
    let Some((events, backlog)) = watcher.open().await else {
        return;
    };
    for event in backlog {
        if watcher.forward(&event).await.is_err() {
            return;
        }
    }
    watcher.follow(events).await;
}

/// One watch as it streams.
struct Watcher {
    cluster: Arc<Cluster>,
    rt: Arc<ResourceType>,
    /// The store key of the watched resource.
    key: String,
    p: WatchParams,
    encode: Encoder,
    tx: mpsc::Sender<Bytes>,
    /// No object frame sent yet (a Table watch's first row carries the column definitions).
    first: bool,
    /// The resourceVersion the watcher has seen up to, for bookmarks and the 410 on lag.
    last_rv: u64,
}

/// What ended a wait in a watch's main loop.
enum Next {
    Event(Result<Arc<Event>, broadcast::error::RecvError>),
    Bookmark,
}

impl Watcher {
    fn matches(&self, s: &Stored) -> bool {
        self.p.ns.as_deref().is_none_or(|ns| ns == &*s.namespace)
            && self.p.labels.matches(|k| s.label(k))
            && self.p.fields.matches(|f| s.field(f))
    }

    /// Starts the stream: from a resourceVersion, the events after it (the backlog); else the current objects
    /// as ADDED frames, then the initial-events-end bookmark when asked for. None when the watch already ended.
    async fn open(&mut self) -> Option<(broadcast::Receiver<Arc<Event>>, Vec<Arc<Event>>)> {
        match self.p.rv {
            Some(rv) if !self.p.send_initial_events => match self.cluster.store.subscribe(Some(rv)) {
                Ok((backlog, rx)) => {
                    self.last_rv = rv;
                    Some((rx, backlog))
                }
                Err(oldest) => {
                    let _ = send(&self.tx, gone(rv, oldest)).await;
                    None
                }
            },
            _ => {
                let (items, rv, rx) = self
                    .cluster
                    .store
                    .snapshot_and_subscribe(&self.key, self.p.ns.as_deref(), |s| self.matches(s));
                self.last_rv = rv;
                for item in items {
                    if send(&self.tx, frame("ADDED", (self.encode)(&item, self.first)))
                        .await
                        .is_err()
                    {
                        return None;
                    }
                    self.first = false;
                }
                if self.p.send_initial_events && self.p.bookmarks {
                    let _ = send(&self.tx, bookmark(&self.rt, rv, true)).await;
                }
                Some((rx, Vec::new()))
            }
        }
    }

    /// Sends the frame an event makes for this watcher, if any; Err when the client went away.
    async fn forward(&mut self, event: &Event) -> Result<(), ()> {
        self.last_rv = event.obj.rv;
        let frame = translate(
            &self.key,
            event,
            &|s: &Stored| self.matches(s),
            &self.encode,
            self.first,
        );
        if let Some(f) = frame {
            self.first = false;
            send(&self.tx, f).await?;
        }
        Ok(())
    }

    /// Streams events and periodic bookmarks until the client goes, the timeout passes, the store closes, or
    /// the watcher falls behind the broadcast (then a 410).
    async fn follow(&mut self, mut events: broadcast::Receiver<Arc<Event>>) {
        let deadline = self.p.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(self.p.bookmark_interval);
        ticker.tick().await;
        loop {
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                event = events.recv() => Next::Event(event),
                _ = ticker.tick(), if self.p.bookmarks => Next::Bookmark,
                _ = self.tx.closed() => return,
                _ = timeout => return,
            };
            match next {
                Next::Event(Ok(event)) => {
                    if self.forward(&event).await.is_err() {
                        return;
                    }
                }
                Next::Event(Err(broadcast::error::RecvError::Lagged(_))) => {
                    let _ = send(&self.tx, gone(self.last_rv, self.cluster.store.current_rv())).await;
                    return;
                }
                Next::Event(Err(broadcast::error::RecvError::Closed)) => return,
                Next::Bookmark => {
                    if send(&self.tx, bookmark(&self.rt, self.last_rv, false)).await.is_err() {
                        return;
                    }
                }
            }
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
