"""One package, two front doors: colcon (ament_python) and pip.

Import names are namespaced so nothing generic lands in site-packages:

    folder in this repo   import name
    diffmf_core/          diffmf_core
    diffmf_ros/           diffmf_ros
    kernels/              diffmf_kernels
    training/             diffmf_training
    config/, launch/      diffmf_ros.config, diffmf_ros.launch (package data)
"""

from glob import glob
from pathlib import Path

from setuptools import setup

PACKAGE = "diffmf_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="DIFF-MF thermal + visible image fusion: ROS 2 node, bag tools, trainer, evaluator",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        "diffmf_core",
        "diffmf_core.ops",
        "diffmf_core.modules",
        "diffmf_core.weights",
        "diffmf_ros",
        "diffmf_ros.config",
        "diffmf_ros.launch",
        "diffmf_kernels",
        "diffmf_training",
        "diffmf_training.options",
    ],
    package_dir={
        "diffmf_kernels": "kernels",
        "diffmf_training": "training",
        "diffmf_ros.config": "config",
        "diffmf_ros.launch": "launch",
    },
    package_data={
        "diffmf_core": ["py.typed"],
        "diffmf_core.weights": ["*.safetensors", "*.json"],
        "diffmf_kernels": ["csrc/*.cpp", "csrc/*.h"],
        "diffmf_ros.config": ["*.yaml"],
        "diffmf_ros.launch": ["*.launch.py"],
        "diffmf_training.options": ["DIFFMF/*.json"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "numpy>=1.23",
        "torch>=2.1",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "pyyaml>=6",
        "setuptools",
    ],
    extras_require={
        # ROS 2 Kilted from PyPI wheels (a ROS install provides these through apt instead).
        "ros": [
            "ros-rclpy",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
            "ros-rmw-fastrtps-cpp",
        ],
        "train": [
            "pytorch-msssim>=1.0",
            "tensorboard>=2.12",
            "matplotlib>=3.6",
            "scipy>=1.10",
            "scikit-image>=0.22",
        ],
        "dev": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "ruff>=0.5",
            "scikit-image>=0.22",
            # Runs the Triton kernels' tests under its interpreter on machines without a GPU.
            "triton>=3.0; platform_system == 'Linux' and platform_machine == 'x86_64'",
        ],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "diffmf_node = diffmf_ros.node:main",
            "diffmf_bag = diffmf_ros.bag_fuse:main",
            "diffmf_play = diffmf_ros.player:main",
            "diffmf_demo = diffmf_ros.demo:main",
            "diffmf_train = diffmf_training.train:main",
            "diffmf_test = diffmf_training.test:main",
            "diffmf_eval = diffmf_training.evaluate:main",
        ],
    },
)
