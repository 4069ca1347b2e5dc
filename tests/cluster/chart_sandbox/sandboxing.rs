//! Tenant sandboxing through the real kubectl, on the sandbox and on the real kube-apiserver with its whole
//! admission chain: the rendered chart applied, a tenant namespace and an internal one, and the attacks of a
//! tenant who rents one node on what lies around it (issue "Tenant sandboxing": Services, cached images and
//! tokens, lease limits and keys, what tenants see, the network).

use std::time::Duration;

use serde_json::{Value, json};

use super::deploy_yaml;
use crate::support::chart;
use crate::support::real::Backend;
use crate::support::sandbox::{TestCluster, eventually};

/// The rendered chart applied to `backend` (RBAC on), a tenant namespace and an internal one (unique names on
/// the real control plane), once the policies deny what they deny.
struct Chart {
    cluster: TestCluster,
    acme: String,
    ml: String,
}

impl Chart {
    fn on(backend: Backend) -> Chart {
        let chart::Installed { cluster, acme, ml } = chart::install(backend);
        let chart = Chart { cluster, acme, ml };
        // kube-apiserver creates a namespace's default ServiceAccount, which a pod needs, and loads new
        // policies, each a moment later.
        for ns in [&chart.acme, &chart.ml] {
            eventually(Duration::from_secs(30), "the default ServiceAccount", || {
                chart
                    .cluster
                    .run(&["get", "serviceaccount", "default", "-n", ns])
                    .status
                    .success()
            });
        }
        let probe = chart.service("probe", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        eventually(Duration::from_secs(30), "the policies loaded", || {
            let out = chart
                .cluster
                .run_with_input(&["create", "--dry-run=server", "-n", &chart.acme, "-f", "-"], &probe);
            !out.status.success()
        });
        chart
    }

    /// A Service named `name` with `spec`, as JSON for kubectl.
    fn service(&self, name: &str, spec: Value) -> String {
        let mut spec = spec;
        spec["selector"] = json!({"app": "x"});
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}).to_string()
    }

    /// A tenant pod of `ns` that passes every policy and Pod Security `restricted`, with `extra` merged into its
    /// spec and `container` into its container.
    fn pod(&self, ns: &str, name: &str, extra: Value, container: Value) -> String {
        let mut c = json!({"name": "main", "image": "registry.internal/trainer:1", "imagePullPolicy": "Always",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
        c.as_object_mut()
            .unwrap()
            .extend(container.as_object().unwrap().clone());
        let lease = format!("{ns}.job");
        let mut spec = json!({
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "nodeSelector": {"sublet.dev/lease": lease},
            "tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": lease, "effect": "NoExecute"}],
            "containers": [c],
        });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}).to_string()
    }

    /// Creates `manifest` in `ns`; must succeed.
    fn admitted(&self, ns: &str, manifest: &str) {
        self.cluster.ok_stdin(&["create", "-n", ns, "-f", "-"], manifest);
    }

    /// Creates `manifest` in `ns`; must be denied by the policy `policy` with a message containing `message`.
    fn denied(&self, ns: &str, manifest: &str, policy: &str, message: &str) {
        let err = self.cluster.fails_stdin(&["create", "-n", ns, "-f", "-"], manifest);
        assert!(
            err.contains(&format!(
                "ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request"
            )) && err.contains(message),
            "{policy}: {err}"
        );
    }
}

#[test]
fn tenants_open_no_node_port_load_balancer_or_external_ip() {
    for backend in crate::support::real::clusters() {
        let chart = Chart::on(backend);
        let (acme, ml) = (chart.acme.as_str(), chart.ml.as_str());
        let policy = "sublet-tenant-services";
        for (name, spec, message) in [
            (
                "node-port",
                json!({"type": "NodePort", "ports": [{"port": 22}]}),
                "tenant Services may not be of type NodePort",
            ),
            (
                "load-balancer",
                json!({"type": "LoadBalancer", "ports": [{"port": 443}]}),
                "tenant Services may not be of type LoadBalancer",
            ),
            (
                // A man in the middle: kube-proxy would send the cluster's traffic for 10.0.0.53 to the tenant.
                "mitm",
                json!({"ports": [{"port": 53}], "externalIPs": ["10.0.0.53"]}),
                "tenant Services may not set externalIPs",
            ),
        ] {
            chart.denied(acme, &chart.service(name, spec), policy, message);
        }
        // A ClusterIP Service is the tenant's own business, and stays one: an update to NodePort is denied too.
        chart.admitted(acme, &chart.service("web", json!({"ports": [{"port": 80}]})));
        let err = chart.cluster.fails(&[
            "patch",
            "service",
            "web",
            "-n",
            acme,
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"NodePort"}}"#,
        ]);
        assert!(err.contains("tenant Services may not be of type NodePort"), "{err}");
        let err = chart.cluster.fails(&[
            "patch",
            "service",
            "web",
            "-n",
            acme,
            "--type=merge",
            "-p",
            r#"{"spec":{"externalIPs":["10.0.0.9"]}}"#,
        ]);
        assert!(err.contains("tenant Services may not set externalIPs"), "{err}");
        // Internal namespaces are the platform's business.
        chart.admitted(
            ml,
            &chart.service("ssh", json!({"type": "NodePort", "ports": [{"port": 22}]})),
        );
        chart.admitted(
            ml,
            &chart.service("vip", json!({"ports": [{"port": 80}], "externalIPs": ["10.0.0.80"]})),
        );
    }
}

#[test]
fn tenant_pods_pull_their_images_and_mount_no_token() {
    for backend in crate::support::real::clusters() {
        let chart = Chart::on(backend);
        let (acme, ml) = (chart.acme.as_str(), chart.ml.as_str());
        let policy = "sublet-tenant-isolation";
        let pull = "tenant pods must pull their images: set imagePullPolicy: Always on every container";
        let token = "tenant pods must set automountServiceAccountToken: false";
        for (name, extra, container, message) in [
            // Attack 10: the previous holder's private image, from the node's cache, without its credentials.
            ("cached", json!({}), json!({"imagePullPolicy": "Never"}), pull),
            (
                "if-not-present",
                json!({}),
                json!({"imagePullPolicy": "IfNotPresent"}),
                pull,
            ),
            // The server's default for a tagged image is IfNotPresent.
            ("defaulted", json!({}), json!({"imagePullPolicy": null}), pull),
            (
                "init",
                json!({"initContainers": [{"name": "init", "image": "registry.internal/setup:1",
                    "imagePullPolicy": "IfNotPresent", "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}}}]}),
                json!({}),
                pull,
            ),
            ("token", json!({"automountServiceAccountToken": true}), json!({}), token),
            (
                "token-default",
                json!({"automountServiceAccountToken": null}),
                json!({}),
                token,
            ),
            (
                "projected",
                json!({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}),
                json!({"volumeMounts": [{"name": "t", "mountPath": "/var/run/t"}]}),
                "tenant pods may not mount a projected serviceAccountToken",
            ),
        ] {
            let mut manifest: Value = serde_json::from_str(&chart.pod(acme, name, extra, container)).unwrap();
            strip_nulls(&mut manifest);
            chart.denied(acme, &manifest.to_string(), policy, message);
        }
        // A pod that pulls and mounts no token is admitted; an untagged image defaults to Always and passes.
        chart.admitted(acme, &chart.pod(acme, "good", json!({}), json!({})));
        let mut untagged: Value = serde_json::from_str(&chart.pod(
            acme,
            "untagged",
            json!({}),
            json!({"image": "trainer", "imagePullPolicy": null}),
        ))
        .unwrap();
        strip_nulls(&mut untagged);
        chart.admitted(acme, &untagged.to_string());
        let policy_of = chart.cluster.ok(&[
            "get",
            "pod",
            "untagged",
            "-n",
            acme,
            "-o",
            "jsonpath={.spec.containers[0].imagePullPolicy}",
        ]);
        assert_eq!(policy_of, "Always");
        // Internal pods keep the node's cache and their tokens.
        let mut internal: Value = serde_json::from_str(&chart.pod(
            ml,
            "train",
            json!({"automountServiceAccountToken": null, "nodeSelector": null, "tolerations": null}),
            json!({"imagePullPolicy": "IfNotPresent"}),
        ))
        .unwrap();
        strip_nulls(&mut internal);
        chart.admitted(ml, &internal.to_string());
    }
}

/// Drops the keys whose value is null (a way to leave a field of the default pod out).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[test]
fn gpu_leases_need_a_namespace_of_at_most_52_characters() {
    for backend in crate::support::real::clusters() {
        let chart = Chart::on(backend);
        let pad = |len: usize| "t".repeat(len - chart.cluster.prefix.len());
        let lease = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "metadata": {"name": "job"},
            "spec": {"pool": "a100", "gpus": 8}})
        .to_string();
        let long = chart.cluster.namespace(&pad(53));
        chart.denied(
            &long,
            &lease,
            "sublet-lease-limits",
            &format!("namespace {long} has 53 characters: sublet serves GpuLeases only in namespaces of at most 52"),
        );
        let longest = chart.cluster.namespace(&pad(52));
        chart.admitted(&longest, &lease);
    }
}

/// The lease key of sublet before it refused collisions: a 32-bit FNV-1a hash in hex after a dash, which a
/// second lease could take by name.
fn old_lease_key(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    let hash = full
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let head = full[..54].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash:08x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keys_are_not_shared_long_namespaces_wait_and_tenants_read_their_notices() {
    for backend in crate::support::real::clusters() {
        keys_namespaces_and_notices(backend).await;
    }
}

async fn keys_namespaces_and_notices(backend: Backend) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use kube::api::PostParams;
    use sublet::api::{GpuLease, LeasePhase};

    use crate::support::cluster::{TestEnv, create_lease, create_pool, eventually_seen, gpu_pod};

    let env = TestEnv::with_rbac(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let admin_kubectl = AdminKubectl::of(&env, dir.path());
    let apply = ["apply", "--server-side", "--force-conflicts", "-f", "-"]
        .map(String::from)
        .to_vec();
    admin_kubectl.run(apply, Some(deploy_yaml())).await;
    // A lease from before the policy "-lease-limits" (or with it in Warn): the controller holds alone.
    let unbind = [
        "delete",
        "validatingadmissionpolicybinding",
        "sublet-lease-limits",
        "--ignore-not-found",
    ];
    admin_kubectl.run(unbind.map(String::from).to_vec(), None).await;

    let admin = env.client.clone();
    let (acme, ml) = (env.acme.clone(), env.ml.clone());
    let long = env.name(&"l".repeat(53 - env.name("").len()));
    assert_eq!(long.len(), 53);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let labels = json!({"sublet.dev/tenant": "true", crate::support::real::OWNED: "true"});
    let ns = serde_json::from_value(json!({"metadata": {"name": long, "labels": labels}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    for base in ["gpu-1", "gpu-2", "gpu-3"] {
        env.gpu_node(base, 8).await;
    }
    let pool = env.name("a100");
    create_pool(
        &admin,
        &pool,
        env.pool_spec(json!({"mode": "Enforce", "idle": {"forSeconds": 0},
            "reclaim": {"noticeSeconds": 30, "cooldownSeconds": 0}, "pricing": {"defaultPerGpuHour": 3.6}})),
    )
    .await;
    let controller = env.controller("sublet-0", false);

    // Attack 12: a lease named after another's shortened key took that key (and its nodes, and its bill).
    let first = format!("train-{}", "x".repeat(70));
    let taker = old_lease_key(&acme, &first)
        .strip_prefix(&format!("{acme}."))
        .unwrap()
        .to_string();
    create_lease(&admin, &acme, &first, json!({"pool": pool, "gpus": 8})).await;
    create_lease(&admin, &acme, &taker, json!({"pool": pool, "gpus": 8})).await;
    // kube-apiserver drops the unbound policy a moment later.
    let in_long: Api<GpuLease> = Api::namespaced(admin.clone(), &long);
    let job: GpuLease = serde_json::from_value(json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
        "metadata": {"name": "job"}, "spec": {"pool": pool, "gpus": 8}}))
    .unwrap();
    eventually_seen(30, "the lease in the long namespace created", || async {
        in_long
            .create(&PostParams::default(), &job)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let leases: Api<GpuLease> = Api::namespaced(admin.clone(), &acme);
    let bound = |name: String| {
        let leases = leases.clone();
        async move {
            eventually_seen(30, &format!("lease {name} bound"), || async {
                let status = leases
                    .get(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .ok_or("no status")?;
                match (status.phase, status.nodes.len()) {
                    (LeasePhase::Bound, 1) => Ok(status),
                    seen => Err(format!("{seen:?}: {:?}", status.reason)),
                }
            })
            .await
        }
    };
    let (a, b) = (bound(first.clone()).await, bound(taker.clone()).await);
    assert_ne!(a.nodes, b.nodes, "the two leases share a node");
    let (ka, kb) = (
        &a.node_selector["sublet.dev/lease"],
        &b.node_selector["sublet.dev/lease"],
    );
    assert_ne!(ka, kb);
    assert!(
        ka.starts_with(&format!("{acme}.")) && ka.len() == 63 && ka.contains('_'),
        "{ka}"
    );
    assert_eq!(kb, &format!("{acme}.{taker}"));

    // A namespace of 53 characters: the lease waits and says why (its key would lose the namespace).
    eventually_seen(30, "the long namespace's lease refused", || async {
        let status = in_long
            .get("job")
            .await
            .map_err(|e| e.to_string())?
            .status
            .ok_or("no status")?;
        let reason = status.reason.clone().unwrap_or_default();
        match (
            status.phase,
            reason.contains("has 53 characters: sublet serves leases only in namespaces of at most 52"),
        ) {
            (LeasePhase::Pending, true) => Ok(()),
            seen => Err(format!("{seen:?}: {reason}")),
        }
    })
    .await;

    // Attack 11 and 12: internal demand takes a leased node back; the tenant, with the chart's tenant role only,
    // reads the notice with the README's command (core/v1 events), and it names the node, not the demand.
    admin_kubectl
        .run(
            [
                "create",
                "rolebinding",
                "gpu-leases",
                "-n",
                &acme,
                "--clusterrole=sublet-tenant",
                "--user=tenant-acme",
            ]
            .map(String::from)
            .to_vec(),
            None,
        )
        .await;
    env.tenant_pod("worker-a", 8, &a, &a.nodes[0]).await;
    env.tenant_pod("worker-b", 8, &b, &b.nodes[0]).await;
    gpu_pod(&admin, &ml, "train", 16, None, json!({})).await;
    let notices = eventually_seen(30, "the tenant to read a ReclaimNotice", || async {
        let args = [
            "get",
            "events",
            "-n",
            &acme,
            "--field-selector",
            "reason=ReclaimNotice",
            "--as=tenant-acme",
            "-o",
            "jsonpath={range .items[*]}{.note}{.message}{\"\\n\"}{end}",
        ];
        let out = admin_kubectl.run(args.map(String::from).to_vec(), None).await;
        if out.contains("is needed back for internal work") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(!notices.contains("pending") && !notices.contains("GPUs"), "{notices}");
    let (_, denied) = admin_kubectl
        .try_run(args(&["get", "events", "-n", &ml, "--as=tenant-acme"]), String::new())
        .await;
    assert!(denied.contains("forbidden"), "{denied}");
    controller.stop().await;
}

/// The value of `--NAME=` among the chart's container arguments.
fn chart_arg(name: &str) -> Option<String> {
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&deploy_yaml())
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let prefix = format!("--{name}=");
    args.iter()
        .find_map(|a| a.as_str()?.strip_prefix(&prefix).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_namespaces_keep_sublets_network_policy_and_tenants_cannot_open_it() {
    for backend in crate::support::real::clusters() {
        network_policy(backend).await;
    }
}

async fn network_policy(backend: Backend) {
    use super::rbac::{install_on, replica_config};
    use crate::support::cluster::{TestEnv, create_pool, eventually_seen};

    let env = TestEnv::with_rbac(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = install_on(&env, dir.path()).await;
    let admin_kubectl = AdminKubectl::of(&env, dir.path());
    let (acme, ml) = (env.acme.clone(), env.ml.clone());

    // The controller as the chart's ServiceAccount, with the chart's network arguments.
    let denied: Vec<String> = chart_arg("tenant-denied-cidrs")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let labels: Vec<String> = chart_arg("tenant-dns-labels")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    assert_eq!(chart_arg("tenant-network-policy").as_deref(), Some("true"));
    let network =
        sublet::controller::TenantNetwork::new(&denied, chart_arg("tenant-dns-namespace").as_deref(), &labels).unwrap();
    let config = sublet::controller::Config {
        tenant_network: Some(network),
        ..replica_config("sublet-0")
    };
    create_pool(
        &env.client,
        &env.name("a100"),
        env.pool_spec(json!({"mode": "Enforce", "idle": {"forSeconds": 0}})),
    )
    .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sublet::controller::run(sa, config, async move {
        let _ = stopped.await;
    }));

    // The tenant namespace holds it (the real server validated it), the internal one does not.
    let get = args(&[
        "get",
        "networkpolicy",
        "sublet-tenant-network",
        "-n",
        &acme,
        "-o",
        "json",
        "--ignore-not-found",
    ]);
    let policy: Value = eventually_seen(30, "sublet's NetworkPolicy in the tenant namespace", || async {
        let out = admin_kubectl.run(get.clone(), None).await;
        serde_json::from_str(&out).map_err(|_| format!("`{out}`"))
    })
    .await;
    let spec = &policy["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]), "{spec}");
    assert_eq!(spec["podSelector"], json!({}), "{spec}");
    assert_eq!(
        spec["ingress"],
        json!([{"from": [{"podSelector": {}}]}]),
        "ingress from own pods only: {spec}"
    );
    let egress = spec["egress"].as_array().unwrap();
    let internet = &egress.last().unwrap()["to"];
    let v4 = &internet[0]["ipBlock"];
    assert_eq!(v4["cidr"], "0.0.0.0/0", "{spec}");
    for cidr in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "169.254.169.254/32",
    ] {
        assert!(
            v4["except"].as_array().unwrap().contains(&json!(cidr)),
            "{cidr}: {spec}"
        );
    }
    assert_eq!(internet[1]["ipBlock"]["cidr"], "::/0", "{spec}");
    assert!(
        internet[1]["ipBlock"]["except"]
            .as_array()
            .unwrap()
            .contains(&json!("fd00:ec2::254/128"))
    );
    assert_eq!(egress[1]["ports"][0], json!({"protocol": "UDP", "port": 53}), "{spec}");
    let none = admin_kubectl
        .run(args(&["get", "networkpolicy", "-n", &ml, "-o", "name"]), None)
        .await;
    assert!(none.trim().is_empty(), "{none}");

    // A tenant with an edit-like role over NetworkPolicies can neither remove it nor add one that opens more.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "edit-network", "namespace": acme},
        "rules": [{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["*"]}]});
    admin_kubectl
        .run(args(&["apply", "-f", "-"]), Some(role.to_string()))
        .await;
    admin_kubectl
        .run(
            args(&[
                "create",
                "rolebinding",
                "edit-network",
                "-n",
                &acme,
                "--role=edit-network",
                "--user=tenant-acme",
            ]),
            None,
        )
        .await;
    let open = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all", "namespace": acme},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}})
    .to_string();
    let tenant_message = "NetworkPolicies in tenant namespaces are sublet's";
    let attempts = [
        args(&[
            "delete",
            "networkpolicy",
            "sublet-tenant-network",
            "-n",
            &acme,
            "--as=tenant-acme",
        ]),
        args(&["create", "-f", "-", "--as=tenant-acme"]),
        args(&[
            "patch",
            "networkpolicy",
            "sublet-tenant-network",
            "-n",
            &acme,
            "--as=tenant-acme",
            "--type=merge",
            "-p",
            r#"{"spec":{"egress":[{}]}}"#,
        ]),
    ];
    for attempt in attempts {
        let (ok, err) = admin_kubectl.try_run(attempt.clone(), open.clone()).await;
        assert!(
            !ok && err.contains("ValidatingAdmissionPolicy 'sublet-tenant-network'") && err.contains(tenant_message),
            "{attempt:?}: {err}"
        );
    }
    // sublet's own token writes that one policy in tenant namespaces only.
    let as_sublet = "--as=system:serviceaccount:sublet-system:sublet";
    let elsewhere = open.replace(&format!("\"namespace\":\"{acme}\""), &format!("\"namespace\":\"{ml}\""));
    let (ok, err) = admin_kubectl
        .try_run(args(&["create", "-f", "-", as_sublet]), elsewhere)
        .await;
    assert!(
        !ok && err.contains("sublet may write only the NetworkPolicy sublet-tenant-network"),
        "{err}"
    );
    let (ok, err) = admin_kubectl
        .try_run(args(&["create", "-f", "-", as_sublet]), open.clone())
        .await;
    assert!(
        !ok && err.contains("sublet may write only the NetworkPolicy sublet-tenant-network"),
        "{err}"
    );

    // Removed anyway (the policy unbound), it is put back.
    admin_kubectl
        .run(
            args(&["delete", "validatingadmissionpolicybinding", "sublet-tenant-network"]),
            None,
        )
        .await;
    eventually_seen(30, "the guard unbound", || async {
        let (ok, err) = admin_kubectl
            .try_run(
                args(&["delete", "networkpolicy", "sublet-tenant-network", "-n", &acme]),
                String::new(),
            )
            .await;
        if ok { Ok(()) } else { Err(err) }
    })
    .await;
    eventually_seen(30, "sublet's NetworkPolicy back", || async {
        let out = admin_kubectl.run(get.clone(), None).await;
        serde_json::from_str::<Value>(&out)
            .map(|_| ())
            .map_err(|_| format!("`{out}`"))
    })
    .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// `kubectl` with `args` as owned strings.
fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The real kubectl with the admin's kubeconfig of a test's cluster, off the async runtime.
struct AdminKubectl {
    kubeconfig: std::path::PathBuf,
    home: std::path::PathBuf,
}

impl AdminKubectl {
    fn of(env: &crate::support::cluster::TestEnv, dir: &std::path::Path) -> AdminKubectl {
        let kubeconfig = match &env.sandbox {
            Some(sandbox) => {
                let path = dir.join("admin.kubeconfig");
                sandbox.write_kubeconfig(&path).unwrap();
                path
            }
            None => crate::support::real::real().kubeconfig.clone(),
        };
        AdminKubectl {
            kubeconfig,
            home: dir.to_path_buf(),
        }
    }

    /// Runs kubectl; fails the test when it fails.
    async fn run(&self, args: Vec<String>, stdin: Option<String>) -> String {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::rbac::kubectl(&self.kubeconfig, &self.home, &args, stdin.as_deref()).await
    }

    /// Runs kubectl: whether it succeeded, and its standard error.
    async fn try_run(&self, args: Vec<String>, stdin: String) -> (bool, String) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = super::rbac::kubectl_output(&self.kubeconfig, &self.home, &args, Some(&stdin)).await;
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_callers_the_api_server_vouches_for() {
    for backend in crate::support::real::clusters() {
        metrics_auth(backend).await;
    }
}

async fn metrics_auth(backend: Backend) {
    use super::rbac::{http_status_as, install_on, replica_config};
    use crate::support::cluster::{TestEnv, eventually};

    let env = TestEnv::with_rbac(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = install_on(&env, dir.path()).await;
    let admin_kubectl = AdminKubectl::of(&env, dir.path());
    assert_eq!(chart_arg("metrics-auth").as_deref(), Some("true"));
    // The controller's own NetworkPolicy (the real server validated it): the metrics port, from no tenant
    // namespace.
    let policy = admin_kubectl
        .run(
            args(&["get", "networkpolicy", "sublet", "-n", "sublet-system", "-o", "json"]),
            None,
        )
        .await;
    let policy: Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]), "{policy}");
    let ingress = &policy["spec"]["ingress"][0];
    assert_eq!(
        ingress["ports"],
        json!([{"port": "metrics", "protocol": "TCP"}]),
        "{policy}"
    );
    assert_eq!(
        ingress["from"],
        json!([{"namespaceSelector": {"matchExpressions": [
            {"key": "sublet.dev/tenant", "operator": "NotIn", "values": ["true"]}]}}]),
        "{policy}"
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let config = sublet::controller::Config {
        metrics_addr: addr,
        metrics_auth: true,
        ..replica_config("sublet-0")
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sublet::controller::run(sa, config, async move {
        let _ = stopped.await;
    }));
    eventually(30, "the probes open to all", || async {
        (http_status_as(addr, "/livez", None).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(http_status_as(addr, "/metrics", None).await, Some(401));
    assert_eq!(http_status_as(addr, "/metrics", Some("forged")).await, Some(401));
    // A tenant's own ServiceAccount token is a valid credential, but not a reader's; Prometheus' is.
    let ns = env.acme.clone();
    let mut tokens = Vec::new();
    for sa in ["curious", "prometheus"] {
        admin_kubectl
            .run(args(&["create", "serviceaccount", sa, "-n", &ns]), None)
            .await;
        let token = admin_kubectl.run(args(&["create", "token", sa, "-n", &ns]), None).await;
        tokens.push(token.trim().to_string());
    }
    let binding = env.name("prometheus-reads-sublet");
    admin_kubectl
        .run(
            args(&[
                "create",
                "clusterrolebinding",
                &binding,
                "--clusterrole=sublet-metrics-reader",
                &format!("--serviceaccount={ns}:prometheus"),
            ]),
            None,
        )
        .await;
    assert_eq!(http_status_as(addr, "/metrics", Some(&tokens[0])).await, Some(403));
    assert_eq!(http_status_as(addr, "/metrics", Some(&tokens[1])).await, Some(200));
    admin_kubectl
        .run(args(&["delete", "clusterrolebinding", &binding]), None)
        .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
