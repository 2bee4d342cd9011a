"""Checks deploy/k8s offline for tests/it/deploy.rs: every manifest against Kubernetes' own
schemas (kubernetes-validate, strict: unknown fields are errors), KEDA's ScaledObject (a CRD
those schemas do not hold) field by field against the worker Deployment and the queue's default
names, and the Helm values' JetStream settings. Prints each container's command line as one
JSON array per line, for the test to run through the strix binary, and each queue settings
file a ConfigMap holds as {"queue.toml": TEXT}. Exits 1 naming the problem."""
import glob
import json
import os
import sys

import kubernetes_validate
import yaml

VERSION = "1.30.0"


def fail(msg):
    sys.exit(f"deploy check: {msg}")


def main(deploy_dir, stream, consumer):
    docs = []
    for path in sorted(glob.glob(os.path.join(deploy_dir, "k8s", "*.yaml"))):
        if path.endswith("-values.yaml"):
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((path, doc))
    if not docs:
        fail(f"no manifests under {deploy_dir}/k8s")
    deployments = {}
    scaled = []
    for path, doc in docs:
        kind = doc.get("kind")
        if kind == "ScaledObject":
            scaled.append((path, doc))
            continue
        try:
            kubernetes_validate.validate(doc, VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{path}: {kind} {doc.get('metadata', {}).get('name')}: {e.message} at {list(e.path)}")
        if kind == "Deployment":
            deployments[doc["metadata"]["name"]] = doc
        if kind == "ConfigMap" and "queue.toml" in doc.get("data", {}):
            # For the test to parse as Strix's queue settings.
            print(json.dumps({"queue.toml": doc["data"]["queue.toml"]}))
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in d["spec"]["selector"]["matchLabels"].items()):
            fail(f"deployment {name}: its selector does not match its pods' labels")
        for c in d["spec"]["template"]["spec"]["containers"]:
            print(json.dumps(c.get("command", [])[1:] + c.get("args", [])))
    if not scaled:
        fail("no KEDA ScaledObject for the workers")
    for path, s in scaled:
        if s.get("apiVersion") != "keda.sh/v1alpha1":
            fail(f"{path}: ScaledObject apiVersion {s.get('apiVersion')}")
        target = s["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            fail(f"{path}: scales {target}, which is no Deployment here")
        args = deployments[target]["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[0] != "worker":
            fail(f"{path}: scales {target}, which runs {args[0]}, not strix worker")
        for t in s["spec"]["triggers"]:
            m = t["metadata"]
            if t["type"] != "nats-jetstream" or m.get("stream") != stream or m.get("consumer") != consumer:
                fail(f"{path}: trigger {t} is not the queue's consumer {stream}/{consumer}")
            if not m.get("natsServerMonitoringEndpoint") or int(m.get("lagThreshold", "0")) < 1:
                fail(f"{path}: trigger {t} lacks the monitoring endpoint or a lag threshold")
    with open(os.path.join(deploy_dir, "k8s", "nats-values.yaml")) as f:
        values = yaml.safe_load(f)
    if not values["config"]["jetstream"]["enabled"] or values["config"]["cluster"]["replicas"] < 3:
        fail("nats-values.yaml: JetStream off or fewer than three servers")


if __name__ == "__main__":
    main(*sys.argv[1:4])
