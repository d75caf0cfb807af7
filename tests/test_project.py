"""The project frame: public API, environment.yml agreeing with pyproject.toml, devices, pins."""

import tomllib
from pathlib import Path

import torch
import yaml

import minimamba_core as mm

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_exported():
    for name in ["MambaConfig", "RMSNorm", "selective_scan", "selective_scan_sequential",
                 "selective_scan_parallel", "MambaMixer", "ResidualBlock", "MambaLM", "InferenceCache",
                 "generate", "pick_device", "describe_device", "AttentionMixer", "attention_reference"]:
        assert name in mm.__all__ and hasattr(mm, name), name


def test_environment_yml_wraps_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == ["python" + project["requires-python"]]
    assert "pip" in deps
    pip = [d for d in deps if isinstance(d, dict)][0]["pip"]
    assert pip == ['-e ".[notebooks]"']
    assert "notebooks" in project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for extra in ("matplotlib", "ipywidgets", "jupyter"):
        assert extra not in core, f"{extra} belongs to the notebooks extra, not the core dependencies"


def test_constraints_pin_torch_cpu_wheel():
    pins = (ROOT / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in pins


def test_pick_device_order():
    device = mm.pick_device()
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device.type == "cpu"
    assert mm.describe_device(device).startswith(device.type)
