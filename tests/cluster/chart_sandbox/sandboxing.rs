//! Tenant sandboxing through the real kubectl, on the sandbox and on the real kube-apiserver with its whole
//! admission chain: the rendered chart applied, a tenant namespace and an internal one, and the attacks of a
//! tenant who rents one node on what lies around it (issue "Tenant sandboxing": Services, cached images and
//! tokens, lease limits and keys, what tenants see, the network).

use std::time::Duration;

use serde_json::{Value, json};
use sublet_sandbox::SandboxConfig;

use super::deploy_yaml;
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
        let cluster = TestCluster::on(
            backend,
            SandboxConfig {
                rbac: true,
                ..Default::default()
            },
        );
        cluster.ok_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &deploy_yaml(),
        );
        let acme = cluster.namespace("acme");
        cluster.ok(&["label", "namespace", &acme, "sublet.dev/tenant=true"]);
        let ml = cluster.namespace("ml");
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
