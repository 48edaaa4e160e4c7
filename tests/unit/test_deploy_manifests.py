"""The shipped Kubernetes manifests (deploy/kubernetes/), validated offline: every
built-in kind against the Kubernetes 1.32 OpenAPI schemas (kubernetes-validate, strict:
unknown fields are errors), the NetworkAttachmentDefinition against the Multus CRD's
schema, its CNI configuration through tapvirt-cni's own parser, the domain XML in the
ConfigMaps through tapvirt's, and the security properties the docs promise."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

kv = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.32.0"

# The openAPIV3Schema of network-attachment-definitions.k8s.cni.cncf.io (Multus,
# deployments/multus-daemonset.yml), as a JSON schema of the whole object.
NAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
        "kind": {"const": "NetworkAttachmentDefinition"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string",
                                             "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}},
        "spec": {"type": "object", "additionalProperties": False,
                 "properties": {"config": {"type": "string"}}},
    },
}


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out.append((path.name, doc))
    return out


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _docs() if d["kind"] == kind]


def test_every_manifest_is_valid_for_kubernetes_1_32() -> None:
    kinds = set()
    for _file, doc in _docs():
        kinds.add(doc["kind"])
        if doc["kind"] == "NetworkAttachmentDefinition":
            jsonschema.validate(doc, NAD_SCHEMA)
        else:
            kv.validate(doc, K8S_VERSION, strict=True)  # raises on any error
    assert kinds == {"ConfigMap", "Pod", "Deployment", "DaemonSet",
                     "NetworkAttachmentDefinition"}


def test_the_validator_really_rejects_a_broken_pod() -> None:
    pod = copy.deepcopy(_by_kind("Pod")[0])
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalaton"] = False
    with pytest.raises(kv.ValidationError):
        kv.validate(pod, K8S_VERSION, strict=True)
    pod = copy.deepcopy(_by_kind("Pod")[0])
    pod["spec"]["securityContext"]["runAsUser"] = "107"
    with pytest.raises(kv.ValidationError):
        kv.validate(pod, K8S_VERSION, strict=True)


def _pod_specs() -> list[dict[str, Any]]:
    return [*(p["spec"] for p in _by_kind("Pod")),
            *(d["spec"]["template"]["spec"] for d in _by_kind("Deployment"))]


def test_launchers_run_as_107_without_capabilities_or_privilege_escalation() -> None:
    specs = _pod_specs()
    assert len(specs) == 2
    for spec in specs:
        assert spec["securityContext"]["runAsUser"] == 107
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
            assert sc["runAsUser"] == 107 and not sc.get("privileged")
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "/dev/net/tun" in mounts and "/etc/tapvirt" in mounts
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tun"]["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}
        assert "configMap" in volumes["domain"]
        assert spec["terminationGracePeriodSeconds"] > 60  # > run's --shutdown-timeout


def test_the_domain_xml_in_the_configmaps_names_cni_made_devices_unmanaged() -> None:
    from tapvirt.conf.model import InterfaceType
    from tapvirt.conf.parse import parse_domain

    nets = {}
    for spec, meta in ((p["spec"], p["metadata"]) for p in _by_kind("Pod")):
        nets[meta["name"]] = (spec, meta["annotations"])
    for d in _by_kind("Deployment"):
        t = d["spec"]["template"]
        nets[d["metadata"]["name"] + "-deployment"] = (t["spec"], t["metadata"]["annotations"])
    maps = {m["metadata"]["name"]: m["data"]["domain.xml"] for m in _by_kind("ConfigMap")}
    for spec, annots in nets.values():
        cm = next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
        dom = parse_domain(maps[cm], source=cm)
        ifaces = list(dom.devices.interfaces)
        assert ifaces and all(i.type == InterfaceType.ETHERNET and i.unmanaged for i in ifaces)
        selection = json.loads(annots["k8s.v1.cni.cncf.io/networks"])
        assert {s["interface"] for s in selection} == {i.dev for i in ifaces}


def test_the_network_attachment_definitions_parse_as_tapvirt_cni_configurations() -> None:
    from tapvirt.cni.config import Env, check_version, parse_netconf

    env = Env("ADD", "c1", "/run/netns/x", "tap0")
    for nad in _by_kind("NetworkAttachmentDefinition"):
        conflist = json.loads(nad["spec"]["config"])
        assert conflist["name"] == nad["metadata"]["name"]
        for plugin in conflist["plugins"]:
            conf = {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
            netconf = parse_netconf(conf, env, check_version(conf))
            assert (netconf.owner, netconf.group) == (107, 107) and not netconf.warnings


def test_the_daemonset_installs_the_plugin_into_opt_cni_bin() -> None:
    (ds,) = _by_kind("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["command"] == ["/usr/lib/tapvirt/install-cni.sh"]
    vol = {v["name"]: v for v in spec["volumes"]}[c["volumeMounts"][0]["name"]]
    assert vol["hostPath"]["path"] == "/opt/cni/bin"
    script = (DEPLOY / "install-cni.sh").read_text()
    assert "/host/opt/cni/bin" in script and "tapvirt-cni" in script
