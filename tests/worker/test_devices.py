"""A worker's devices: which GPUs it advertises, how its pool processes split them, the
queues that follows from — the same names a job's resources map to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.queue import JOB_QUEUE, queue_for
from core.settings import Settings
from models.spec.resources import ResourcesSpec
from worker.devices import Gpu, gpu_type_of, pin_pool_process, worker_devices


def settings(tmp_path: Path, **worker: object) -> Settings:
    return Settings(data_dir=tmp_path, **{f"worker_{key}": value for key, value in worker.items()})


def test_a_worker_without_gpus_serves_the_cpu_queue(tmp_path: Path) -> None:
    devices = worker_devices(settings(tmp_path, gpus="none"))
    assert devices.queues == [JOB_QUEUE]
    assert devices.concurrency(3) == 3
    assert devices.visible_devices(0) == ""  # a CPU worker's processes hide the host's GPUs


def test_gpu_groups_pin_one_pool_process_each(tmp_path: Path) -> None:
    devices = worker_devices(settings(tmp_path, gpus="0,1,2,3", gpus_per_job=2, gpu_type="h200"))
    assert devices.concurrency(1) == 2
    assert [devices.visible_devices(index) for index in range(2)] == ["0,1", "2,3"]
    assert devices.queues == ["netkiln.gpu.x2", "netkiln.gpu.h200.x2", JOB_QUEUE]
    # What jobs ask for maps onto exactly those queues.
    assert queue_for(ResourcesSpec(accelerator="gpu", gpus=2)) in devices.queues
    assert queue_for(ResourcesSpec(accelerator="gpu", gpus=2, gpu_type="h200")) in devices.queues
    assert queue_for(ResourcesSpec(accelerator="gpu", gpus=1)) not in devices.queues
    assert queue_for(ResourcesSpec(accelerator="gpu", gpus=2, gpu_type="a100")) not in (
        devices.queues
    )
    assert queue_for(ResourcesSpec()) == JOB_QUEUE


def test_given_queues_replace_the_implied_ones(tmp_path: Path) -> None:
    devices = worker_devices(settings(tmp_path, gpus="0", queues="netkiln.gpu.x1, extra"))
    assert devices.queues == ["netkiln.gpu.x1", "extra"]


def test_gpus_that_do_not_split_into_groups_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 GPUs do not split into groups of 2"):
        worker_devices(settings(tmp_path, gpus="0,1,2", gpus_per_job=2))


def test_auto_finds_no_gpu_without_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    assert worker_devices(settings(tmp_path)).gpus == ()


def test_auto_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in nvidia-smi answering as the real one does to this query.
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\nprintf '0, NVIDIA H200\\n1, NVIDIA H200\\n'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    devices = worker_devices(settings(tmp_path))
    assert devices.gpus == (Gpu("0", "NVIDIA H200"), Gpu("1", "NVIDIA H200"))
    assert devices.gpu_type == "h200"
    assert devices.queues == ["netkiln.gpu.x1", "netkiln.gpu.h200.x1", JOB_QUEUE]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("Tesla V100-PCIE-16GB", "v100-pcie-16gb"),
        ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"),
    ],
)
def test_gpu_types_are_queue_words(name: str, slug: str) -> None:
    assert gpu_type_of(name) == slug
    ResourcesSpec(accelerator="gpu", gpu_type=slug)  # a word a spec may ask for


def test_pinning_sets_the_environment_the_backend_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    chosen = settings(tmp_path, gpus="4,5", logical_cpus=2)
    assert pin_pool_process(chosen, 1) == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert os.environ["XLA_FLAGS"] == (
        "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2"
    )


def test_the_worker_command_refuses_a_bad_gpu_type_by_its_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from netkiln.cli import app

    # The command exports its options to the environment (for its pool processes): set
    # them here first, so that they are put back as they were after the test.
    for name in ("DATA_DIR", "WORKER_GPUS", "WORKER_GPU_TYPE"):
        monkeypatch.setenv(f"NETKILN_{name}", "")

    result = CliRunner().invoke(
        app,
        ["worker", "--data-dir", str(tmp_path), "--gpus", "0", "--gpu-type", "H200 SXM"],
    )
    assert result.exit_code == 1
    assert "NETKILN_WORKER_GPU_TYPE: String should match pattern" in result.output
