"""Cluster set-up files are validated against what Ray and KubeRay read."""
import copy
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = sorted((REPO / "infra" / "cluster").glob("*.yaml"))
KUBERAY = REPO / "infra" / "kuberay"


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_config_passes_rays_own_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))    # what `ray up` runs before launching
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t.get("min_workers", 0) == 0 and t is not types[config["head_node_type"]] for t in types.values())
    assert config["idle_timeout_minutes"] > 0 and config["max_workers"] >= 1
    # token auth reaches every node, and the dashboard binds to loopback only
    assert any(target.endswith(".ray/auth_token") for target in config["file_mounts"])
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_launcher_validation_catches_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(LAUNCHER[0].read_text())
    config["idle_timeout_minutse"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def _cluster_specs():
    cluster = yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())
    job = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    return {"raycluster.yaml": cluster["spec"], "rayjob.yaml": job["spec"]["rayClusterSpec"]}


def _containers(spec):
    pods = [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]
    return [container for pod in pods for container in pod["spec"]["containers"]]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_cluster_spec(name):
    spec = _cluster_specs()[name]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["upscalingMode"] in {"Default", "Aggressive", "Conservative"}
    assert isinstance(spec["autoscalerOptions"]["idleTimeoutSeconds"], int)
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_groups, "a GPU worker group"
    for group in spec["workerGroupSpecs"]:
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in gpu_groups:
        assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])
    for container in _containers(spec) + [{"env": spec["autoscalerOptions"]["env"]}]:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"


def test_rayjob_entrypoint_names_a_real_job_and_real_config():
    from raycluster.config import compose

    job = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and isinstance(spec["activeDeadlineSeconds"], int)
    submitter_env = {e["name"] for e in spec["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= submitter_env
    words = shlex.split(spec["entrypoint"])
    assert words[0] == "python" and (REPO / words[1]).exists()
    cfg = compose(words[2:])          # raises on an unknown group option or key
    assert cfg.cluster.use_gpu and cfg.data.name == "shards"


def test_runtime_env_keeps_the_upload_small():
    excludes = yaml.safe_load((REPO / "infra" / "runtime_env.yaml").read_text())["excludes"]
    assert {"/.venv", "/outputs", "/.git"} <= set(excludes)
    assert "data" not in excludes, "an unanchored 'data' would also drop configs/data and raycluster/data"
