"""The cluster configs a user deploys: Ray's launcher YAML, KubeRay manifests, images, IAM, local scripts.

Nothing here needs a cloud, a Kubernetes cluster or Docker: the AWS YAML goes through Ray's own offline
schema check (``prepare_config`` + ``validate_config``, the code ``ray up`` runs first), the manifests are
checked for the fields KubeRay needs, and every cross-file fact (Ray version, image, bucket, role, entry
points, override keys) is checked against its source so that a change in one place breaks here.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from neurolm.config import InstructJobConfig, PretrainJobConfig, TokenizerJobConfig

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
AWS_YAML = CLUSTER / "aws.yaml"
KUBERAY = {"RayCluster": CLUSTER / "kuberay" / "raycluster.yaml", "RayJob": CLUSTER / "kuberay" / "rayjob.yaml"}
DOCKERFILES = {"gpu": REPO / "docker" / "Dockerfile.gpu", "cpu": REPO / "docker" / "Dockerfile.cpu"}
LOCAL_SCRIPTS = sorted((CLUSTER / "local").glob("*.sh"))

# The job entry points (ray_jobs/<name>.py) and the config class of those that train a stage.
ENTRY_POINTS = {"preprocess", "train_tokenizer", "pretrain", "instruct", "tune_mixing", "evaluate", "pipeline"}
STAGE_CONFIG: dict[str, type[BaseModel]] = {
    "train_tokenizer": TokenizerJobConfig,
    "pretrain": PretrainJobConfig,
    "instruct": InstructJobConfig,
}

# What AWS sells under each instance type the configs name: (vCPUs, GPUs, GB of memory per GPU).
INSTANCE_TYPES = {
    "m6i.2xlarge": (8, 0, 0),
    "c6i.8xlarge": (32, 0, 0),
    "g6e.2xlarge": (8, 1, 48),
    "p4de.24xlarge": (96, 8, 80),
    "p5.48xlarge": (192, 8, 80),
}


def _pinned(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return yaml.safe_load(AWS_YAML.read_text())


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return {kind: yaml.safe_load(path.read_text()) for kind, path in KUBERAY.items()}


def _cluster_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# ---------------------------------------------------------------------------------------------- AWS


def test_aws_yaml_passes_rays_own_schema(aws: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(aws))
    validate_config(prepared)  # raises jsonschema.ValidationError / RuntimeError on a bad config
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_aws_yaml_schema_check_catches_a_bad_field(aws: dict[str, Any]) -> None:
    """The check above has teeth: the same code rejects a wrongly typed field."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(aws)
    broken["available_node_types"]["gpu_8x_a100_80g"]["max_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_aws_head_runs_no_tasks_and_workers_autoscale_from_zero(aws: dict[str, Any]) -> None:
    types = aws["available_node_types"]
    head = types[aws["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]
    workers = {name: t for name, t in types.items() if name != aws["head_node_type"]}
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, f"{name}: idle GPUs should cost nothing"
        assert 0 < node_type["max_workers"] <= aws["max_workers"], name
    assert aws["idle_timeout_minutes"] > 0


def test_aws_node_resources_match_their_instance_types(aws: dict[str, Any]) -> None:
    gpu_types = 0
    for name, node_type in aws["available_node_types"].items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCE_TYPES, f"{name}: add {instance} to INSTANCE_TYPES with its specs"
        vcpus, gpus, _ = INSTANCE_TYPES[instance]
        resources = node_type["resources"]
        if name != aws["head_node_type"]:
            assert resources["CPU"] == vcpus, f"{name}: {instance} has {vcpus} vCPUs"
        assert resources.get("GPU", 0) == gpus, f"{name}: {instance} has {gpus} GPUs"
        gpu_types += gpus > 0
    assert gpu_types >= 2, "a 1-GPU and an 8-GPU worker type"
    eight = [t for t in aws["available_node_types"].values() if t["resources"].get("GPU") == 8]
    assert any(INSTANCE_TYPES[t["node_config"]["InstanceType"]][2] >= 80 for t in eight), (
        "NeuroLM-L/XL at the official batch need 80 GB GPUs (cluster/README.md)"
    )


def test_aws_nodes_reach_s3_and_the_registry(aws: dict[str, Any]) -> None:
    """Ray gives its default role to the head only: every worker type needs its own instance profile."""
    head_policy = json.loads((CLUSTER / "iam" / "head-policy.json").read_text())
    worker_policy = json.loads((CLUSTER / "iam" / "worker-policy.json").read_text())
    profiles = {n: t["node_config"]["IamInstanceProfile"]["Arn"] for n, t in aws["available_node_types"].items()}
    worker_profiles = {arn for n, arn in profiles.items() if n != aws["head_node_type"]}
    assert len(worker_profiles) == 1
    worker_role = worker_profiles.pop().rsplit("/", 1)[1]
    passable = [s["Resource"] for s in head_policy["Statement"] if "iam:PassRole" in s["Action"]]
    assert passable and all(r.endswith(f":role/{worker_role}") for r in passable), (
        "the head's autoscaler must be allowed to pass the workers' role"
    )
    for policy in (head_policy, worker_policy):
        actions = {a for s in policy["Statement"] for a in s["Action"]}
        assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "ecr:BatchGetImage"} <= actions
    assert "--env=AWS_REGION=" + aws["provider"]["region"] in aws["docker"]["run_options"]
    registry = aws["docker"]["image"].split("/", 1)[0]
    assert any(registry in cmd for cmd in aws["initialization_commands"]), "docker login to the image's registry"


def test_aws_cluster_uses_token_auth_and_exposes_the_dashboard(aws: dict[str, Any]) -> None:
    assert "--env=RAY_AUTH_MODE=token" in aws["docker"]["run_options"]
    assert "~/.ray/auth_token" in aws["file_mounts"], "every node needs the token the client uses"
    head_start = " ".join(aws["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=0.0.0.0" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert any("-e ~/neurolm" in cmd for cmd in aws["setup_commands"]), "setup installs the synced checkout"
    assert aws["file_mounts"]["~/neurolm"] == "."


# ---------------------------------------------------------------------------------------------- KubeRay


@pytest.mark.parametrize("kind", sorted(KUBERAY))
def test_kuberay_manifest_has_the_fields_kuberay_needs(kind: str, manifests: dict[str, dict[str, Any]]) -> None:
    manifest = manifests[kind]
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind
    spec = _cluster_spec(manifest)
    assert spec["rayVersion"] == _pinned("ray"), "rayVersion must equal the Ray inside the image"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265 and ports["gcs-server"] == 6379
    gpu_groups = 0
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert group["minReplicas"] == 0, f"{group['groupName']}: idle GPUs should cost nothing"
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert int(requests.get("nvidia.com/gpu", 0)) == gpus, group["groupName"]
        if gpus:
            gpu_groups += 1
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations), group["groupName"]
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/dev/shm" in mounts, f"{group['groupName']}: the 64 MB default /dev/shm starves Ray and NCCL"
    assert gpu_groups >= 1
    assert any(int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) == 8
               for g in spec["workerGroupSpecs"]), "an 8-GPU group for the official batch"


def test_rayjob_entrypoint_runs_a_job_with_valid_overrides(manifests: dict[str, dict[str, Any]]) -> None:
    job = manifests["RayJob"]["spec"]
    entrypoint = job["entrypoint"]
    script = re.search(r"\bray_jobs/(\w+)\.py\b", entrypoint)
    assert script and script.group(1) in ENTRY_POINTS, entrypoint
    name = script.group(1)
    config = re.search(r"--config (configs/[\w/]+\.ya?ml)", entrypoint)
    assert config, "the job names its preset"
    assert job["shutdownAfterJobFinishes"] is True and job["submissionMode"] == "K8sJobMode"
    if name in STAGE_CONFIG:
        stage = "tokenizer" if name == "train_tokenizer" else name
        assert config.group(1).startswith(f"configs/{stage}/"), config.group(1)
        overrides = re.findall(r"(?:^|\s)([a-z_][\w.]*)=(\S+)", entrypoint)
        assert overrides
        for key, _ in overrides:
            _assert_config_key(STAGE_CONFIG[name], key)
        values = dict(overrides)
        assert values["run.storage_path"].startswith("s3://"), "a cluster run keeps its checkpoints on S3"
        assert str(values.get("scaling.use_gpu")).lower() == "true"


def _assert_config_key(model: type[BaseModel], dotted: str) -> None:
    """``dotted`` names a field of the stage config (the same walk as a dotted override)."""
    node: Any = model
    for part in dotted.split("."):
        fields = getattr(node, "model_fields", None)
        assert fields is not None and part in fields, f"{dotted}: no field {part!r} in {node}"
        annotation = fields[part].annotation
        node = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def test_one_image_and_one_bucket_everywhere(aws: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> None:
    images = {c["image"] for m in manifests.values() for c in _containers(_cluster_spec(m))}
    assert images == {aws["docker"]["image"]}, "one image: one Python and one Ray version per cluster"
    buckets = set(re.findall(r"s3://([\w.-]+)/", manifests["RayJob"]["spec"]["entrypoint"]))
    for policy in ("head-policy.json", "worker-policy.json"):
        text = (CLUSTER / "iam" / policy).read_text()
        buckets |= set(re.findall(r"arn:aws:s3:::([\w.-]+?)(?:/|\")", text))
    assert len(buckets) == 1, buckets


# ---------------------------------------------------------------------------------------------- images


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_copies_what_exists_and_pins_what_make_setup_pins(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    instructions = _instructions(path)
    allowed = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY"}
    assert {op for op, _ in instructions} <= allowed, "an unexpected instruction (or a broken line join)"
    for op, rest in instructions:
        if op == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"{path.name}: COPY {source} does not exist in the repo"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", path.read_text(), re.M))
    makefile_torch = re.search(r"TORCH_SPEC \?= torch==(\S+)", (REPO / "Makefile").read_text())
    assert makefile_torch and args["TORCH_VERSION"] == makefile_torch.group(1)
    assert "ubuntu24.04" in args.get("CUDA_IMAGE", "") or args.get("BASE_IMAGE") == "ubuntu:24.04", (
        "both images on Ubuntu 24.04: the same Python 3.12 patch release on every node"
    )
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert "-c constraints.txt" in runs
    ignored = (path.parent / f"{path.name}.dockerignore").read_text().split()
    assert {".venv", ".git", ".cache"} <= set(ignored), "the build context must not ship the 2 GB venv"


def test_gpu_image_installs_cuda_torch_and_prebuilds_deepspeed_ops() -> None:
    text = DOCKERFILES["gpu"].read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    index = re.search(r"/whl/cu(\d+)$", args["TORCH_INDEX_URL"])
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-", args["CUDA_IMAGE"])
    assert index and cuda, "a CUDA torch build on a CUDA devel image (nvcc for DeepSpeed's ops)"
    assert index.group(1) == cuda.group(1) + cuda.group(2), "DeepSpeed refuses a torch/nvcc CUDA mismatch"
    assert "assert torch.version.cuda" in text
    assert "DS_BUILD_FUSED_ADAM=1" in text and "--no-build-isolation" in text
    assert not re.search(r"^ENV[^\n]*(\\\n[^\n]*)*DS_ACCELERATOR", text, re.M), (
        "DS_ACCELERATOR fixed in the image would break CPU-only workers of the same image"
    )


# ---------------------------------------------------------------------------------------------- local


@pytest.mark.parametrize("script", LOCAL_SCRIPTS, ids=lambda p: p.name)
def test_local_scripts_parse_and_fail_fast(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    if script.name != "common.sh":  # sourced, never run
        assert "set -euo pipefail" in script.read_text()
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def test_local_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", "-x", "-P", "SCRIPTDIR/../..", *map(str, LOCAL_SCRIPTS)],
        capture_output=True, text=True, cwd=CLUSTER / "local",
    )
    assert result.returncode == 0, result.stdout


def test_local_scripts_never_stop_every_ray_on_the_machine() -> None:
    """`ray stop` kills all Ray processes of the user, including other people's `ray.init()` instances."""
    for script in LOCAL_SCRIPTS:
        code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"\bray_cli stop\b|\bray stop\b|scripts\.scripts stop\b|pkill|killall", code), script.name
