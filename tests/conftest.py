"""Test-wide settings: DDS stays on this machine, in a domain of this run's own."""

import os

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(5 + os.getpid() % 90))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped on CPU machines)")
    config.addinivalue_line("markers", "ros: needs rclpy (skipped where it does not import)")
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (skipped in a fresh clone)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def shared_data_dir():
    """../shared/data beside the checkout (or $DIFFMF_SHARED_DATA); None in a fresh clone."""
    from pathlib import Path

    root = os.environ.get("DIFFMF_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(root)
    return root if root.is_dir() else None


@pytest.fixture
def shared_data():
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is not beside this checkout")
    return root
