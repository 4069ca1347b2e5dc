//! What the real control plane does after a write, asynchronously: garbage collection by ownerReferences
//! (background, foreground, orphan), namespace and CRD cleanup, the end of pods' grace periods, and
//! PodDisruptionBudget status, and Jobs (jobs.rs).
//!
//! ```text
//!   Store events ─▶ on_event ─▶ Cluster writes (which make more events)
//!   Kick::PodGrace ─▶ timer ─▶ remove the pod when its grace period ends
//! ```
//! A lagging event receiver triggers a full resync, so nothing is missed when writes burst.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::crd::CLEANUP_FINALIZER;
use crate::meta;
use crate::store::{Event, EventType, ObjRef};
use crate::verbs::{Cluster, DeleteOpts, Kick, WriteCtx};

fn gc_ctx() -> WriteCtx {
    WriteCtx::new("generic-garbage-collector")
}

/// Runs until the cluster's event stream closes (the server shut down).
pub(crate) async fn run(cluster: Arc<Cluster>, mut kicks: mpsc::UnboundedReceiver<Kick>) {
    let Ok((_, mut events)) = cluster.store.subscribe(None) else {
        return;
    };
    resync(&cluster);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                finish_terminating(&cluster);
                super::jobs::tick(&cluster);
            }
            event = events.recv() => match event {
                Ok(event) => on_event(&cluster, &event),
                Err(broadcast::error::RecvError::Lagged(_)) => resync(&cluster),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            kick = kicks.recv() => match kick {
                Some(Kick::PodGrace { ns, name, uid, seconds }) => {
                    if cluster.settings.external_kubelet {
                        continue;
                    }
                    let cluster = cluster.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(seconds.max(0) as u64)).await;
                        end_grace(&cluster, &ns, &name, &uid);
                    });
                }
                None => return,
            },
        }
    }
}

fn end_grace(cluster: &Cluster, ns: &str, name: &str, uid: &str) {
    let Some(pod) = cluster.store.get("pods", ns, name) else {
        return;
    };
    if &*pod.uid != uid {
        return;
    }
    let value = pod.value();
    if meta::is_deleting(&value)
        && meta::finalizers(&value).is_empty()
        && let Some(rt) = cluster.registry.by_key("pods")
    {
        let _ = cluster.remove(&rt, ns, name, Some(pod.rv));
    }
}

fn on_event(cluster: &Cluster, event: &Event) {
    let res = &*event.res;
    let ns = &*event.obj.namespace;
    if event.kind == EventType::Deleted {
        for dep in cluster.store.dependents(&event.obj.uid) {
            collect_dependent(cluster, &dep.0, &dep.1, &dep.2);
        }
        let obj = event.obj.value();
        // A foreground owner waits for this dependent.
        for owner in obj["metadata"]["ownerReferences"].as_array().into_iter().flatten() {
            if let Some((key, owner_ns, name)) = owner_ref(cluster, owner, ns) {
                process_deleting(cluster, &key, &owner_ns, &name);
            }
        }
        if !ns.is_empty() {
            finish_namespace(cluster, ns);
        }
        if let Some(rt) = cluster.registry.by_key(res)
            && let Some(custom) = &rt.custom
        {
            process_deleting(
                cluster,
                "apiextensions.k8s.io/customresourcedefinitions",
                "",
                &custom.crd_name.clone(),
            );
        }
    } else if event.obj.json.windows(19).any(|w| w == b"\"deletionTimestamp\"") {
        process_deleting(cluster, res, ns, &event.obj.name);
    }
    if res == "namespaces" && event.kind == EventType::Added {
        // The service account controller gives every namespace a `default` service account.
        if let Some(rt) = cluster.registry.by_key("serviceaccounts") {
            let sa = json!({"metadata": {"name": "default"}});
            let _ = cluster.create(
                &rt,
                Some(&event.obj.name),
                sa,
                &WriteCtx::new("kube-controller-manager"),
            );
        }
    }
    if res == "pods" || res == "policy/poddisruptionbudgets" {
        refresh_pdbs(cluster, ns);
    }
    // Only pods some Job owns are decoded: pod events are the busiest of all.
    let job_pod =
        res == "pods" && !event.obj.owners.is_empty() && event.obj.json.windows(12).any(|w| w == b"\"kind\":\"Job\"");
    if event.kind != EventType::Deleted && (job_pod || res == "batch/jobs") {
        super::jobs::on_change(cluster, res, ns, &event.obj.name, &event.obj.value());
    }
}

/// Terminating namespaces and CRDs move on even if the event that should have finished them raced with
/// another write; cheap, since only objects being deleted of these two kinds are looked at.
fn finish_terminating(cluster: &Cluster) {
    let deleting = |s: &crate::store::Stored| s.json.windows(19).any(|w| w == b"\"deletionTimestamp\"");
    for key in ["namespaces", "apiextensions.k8s.io/customresourcedefinitions"] {
        for s in cluster.store.list(key, None, None, None, deleting).items {
            process_deleting(cluster, key, "", &s.name);
        }
    }
}

/// Everything a missed event could have left undone.
fn resync(cluster: &Cluster) {
    for rt in cluster.registry.all() {
        if rt.create_only {
            continue;
        }
        let key = rt.key();
        let page = cluster.store.list(&key, None, None, None, |s| {
            !s.owners.is_empty() || s.json.windows(19).any(|w| w == b"\"deletionTimestamp\"")
        });
        for s in page.items {
            if s.owners.iter().all(|o| !cluster.store.uid_exists(o)) {
                collect_dependent(cluster, &key, &s.namespace, &s.name);
            } else {
                process_deleting(cluster, &key, &s.namespace, &s.name);
            }
        }
    }
    let namespaces: HashSet<String> = cluster
        .store
        .list("policy/poddisruptionbudgets", None, None, None, |_| true)
        .items
        .iter()
        .map(|s| s.namespace.to_string())
        .collect();
    for ns in namespaces {
        refresh_pdbs(cluster, &ns);
    }
}

/// Resolves an ownerReference to the owner's place in the store.
fn owner_ref(cluster: &Cluster, owner: &Value, dep_ns: &str) -> Option<(String, String, String)> {
    let api_version = owner["apiVersion"].as_str()?;
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let rt = cluster.registry.by_kind(group, owner["kind"].as_str()?)?;
    let ns = if rt.namespaced {
        dep_ns.to_string()
    } else {
        String::new()
    };
    Some((rt.key(), ns, owner["name"].as_str()?.to_string()))
}

/// A dependent whose owner went away: deleted when no owner is left, else its dangling references dropped.
fn collect_dependent(cluster: &Cluster, key: &str, ns: &str, name: &str) {
    let Some(dep) = cluster.store.get(key, ns, name) else {
        return;
    };
    let Some(rt) = cluster.registry.by_key(key) else { return };
    let alive: Vec<bool> = dep.owners.iter().map(|o| cluster.store.uid_exists(o)).collect();
    if alive.iter().any(|a| *a) {
        cluster.system_update(key, ns, name, |obj| {
            let mut obj = obj.clone();
            let refs: Vec<Value> = obj["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["uid"].as_str().is_some_and(|u| cluster.store.uid_exists(u)))
                .cloned()
                .collect();
            obj["metadata"]["ownerReferences"] = json!(refs);
            Some(obj)
        });
        return;
    }
    let _ = cluster.delete(
        &rt,
        ns,
        name,
        &DeleteOpts {
            propagation: Some("Background".into()),
            ..Default::default()
        },
        &gc_ctx(),
    );
}

/// Progress for an object with a deletionTimestamp: foreground and orphan finalizers, namespaces, CRDs.
fn process_deleting(cluster: &Cluster, key: &str, ns: &str, name: &str) {
    let Some(stored) = cluster.store.get(key, ns, name) else {
        return;
    };
    let obj = stored.value();
    if !meta::is_deleting(&obj) {
        return;
    }
    let fins = meta::finalizers(&obj);
    let dependents = cluster.store.dependents(&stored.uid);
    if fins.iter().any(|f| f == "orphan") {
        orphan(cluster, &stored.uid, &dependents);
        drop_finalizer(cluster, key, ns, name, "orphan");
    } else if fins.iter().any(|f| f == "foregroundDeletion") {
        if dependents.is_empty() {
            drop_finalizer(cluster, key, ns, name, "foregroundDeletion");
        } else {
            delete_in_foreground(cluster, &dependents);
        }
    }
    if key == "namespaces" {
        empty_namespace(cluster, name);
        finish_namespace(cluster, name);
    }
    if key == "apiextensions.k8s.io/customresourcedefinitions" && fins.iter().any(|f| f == CLEANUP_FINALIZER) {
        clean_up_crd(cluster, key, ns, name, &obj);
    }
}

/// Takes the owner reference to `owner` off each of its dependents, which stay.
fn orphan(cluster: &Cluster, owner: &str, dependents: &[ObjRef]) {
    for (dkey, dns, dname) in dependents {
        cluster.system_update(dkey, dns, dname, |d| {
            let mut d = d.clone();
            let refs: Vec<Value> = d["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["uid"].as_str() != Some(owner))
                .cloned()
                .collect();
            d["metadata"]["ownerReferences"] = json!(refs);
            Some(d)
        });
    }
}

/// Deletes the dependents in the foreground too: their owner goes once they are gone.
fn delete_in_foreground(cluster: &Cluster, dependents: &[ObjRef]) {
    for (dkey, dns, dname) in dependents {
        if let Some(rt) = cluster.registry.by_key(dkey) {
            let opts = DeleteOpts {
                propagation: Some("Foreground".into()),
                ..Default::default()
            };
            let _ = cluster.delete(&rt, dns, dname, &opts, &gc_ctx());
        }
    }
}

/// Deletes whatever in a terminating namespace is not being deleted yet.
fn empty_namespace(cluster: &Cluster, name: &str) {
    for (dkey, dns, dname) in cluster.store.in_namespace(name) {
        if let Some(rt) = cluster.registry.by_key(&dkey) {
            let deleting = cluster
                .store
                .get(&dkey, &dns, &dname)
                .is_some_and(|s| meta::is_deleting(&s.value()));
            if !deleting {
                let _ = cluster.delete(
                    &rt,
                    &dns,
                    &dname,
                    &DeleteOpts::default(),
                    &WriteCtx::new("namespace-controller"),
                );
            }
        }
    }
}

/// A CRD's cleanup: deletes its custom objects, and drops the finalizer once none is left.
fn clean_up_crd(cluster: &Cluster, key: &str, ns: &str, name: &str, obj: &Value) {
    let (Some(group), Some(plural)) = (
        obj["spec"]["group"].as_str(),
        obj["status"]["acceptedNames"]["plural"].as_str(),
    ) else {
        drop_finalizer(cluster, key, ns, name, CLEANUP_FINALIZER);
        return;
    };
    let res = format!("{group}/{plural}");
    let objects = cluster.store.list(&res, None, None, None, |_| true).items;
    if objects.is_empty() {
        drop_finalizer(cluster, key, ns, name, CLEANUP_FINALIZER);
    } else if let Some(rt) = cluster.registry.by_key(&res) {
        for o in objects {
            if !meta::is_deleting(&o.value()) {
                let _ = cluster.delete(
                    &rt,
                    &o.namespace,
                    &o.name,
                    &DeleteOpts::default(),
                    &WriteCtx::new("apiextensions-controller"),
                );
            }
        }
    }
}

fn drop_finalizer(cluster: &Cluster, key: &str, ns: &str, name: &str, finalizer: &str) {
    cluster.system_update(key, ns, name, |obj| {
        let fins: Vec<String> = meta::finalizers(obj).into_iter().filter(|f| f != finalizer).collect();
        let mut obj = obj.clone();
        obj["metadata"]["finalizers"] = json!(fins);
        Some(obj)
    });
}

/// Removes a terminating namespace once nothing is left in it.
fn finish_namespace(cluster: &Cluster, ns: &str) {
    let Some(namespace) = cluster.store.get("namespaces", "", ns) else {
        return;
    };
    if !meta::is_deleting(&namespace.value()) || !cluster.store.in_namespace(ns).is_empty() {
        return;
    }
    if let Some(rt) = cluster.registry.by_key("namespaces") {
        let _ = cluster.remove(&rt, "", ns, Some(namespace.rv));
    }
}

/// Writes the status of every PDB in a namespace whose numbers changed.
fn refresh_pdbs(cluster: &Cluster, ns: &str) {
    let pdbs = cluster
        .store
        .list("policy/poddisruptionbudgets", Some(ns), None, None, |_| true)
        .items;
    for pdb in pdbs {
        cluster.system_update("policy/poddisruptionbudgets", ns, &pdb.name, |obj| {
            let status = super::pdb::compute_status(cluster, obj);
            let same = [
                "disruptionsAllowed",
                "currentHealthy",
                "desiredHealthy",
                "expectedPods",
                "observedGeneration",
            ]
            .iter()
            .all(|k| obj["status"][k] == status[k]);
            if same {
                return None;
            }
            let mut obj = obj.clone();
            obj["status"] = status;
            Some(obj)
        });
    }
}
