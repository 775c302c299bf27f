"""Launch files, checked without the `launch` package (not pip-installable): they compile, use only
launch API that exists from Humble to Kilted, declare every argument they read, and start the
right executable of the right package with the shipped parameter file."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"
FILES = ["diffmf.launch.py", "bag_replay.launch.py"]

# The launch API these files may use: present with these names in Humble, Iron, Jazzy and Kilted.
LAUNCH_API = {
    "launch": ["LaunchDescription"],
    "launch.actions": ["DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction", "RegisterEventHandler",
                       "TimerAction", "GroupAction", "IncludeLaunchDescription"],
    "launch.event_handlers": ["OnProcessIO", "OnProcessStart", "OnProcessExit"],
    "launch.conditions": ["IfCondition", "UnlessCondition"],
    "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution", "PythonExpression"],
    "launch_ros.actions": ["Node"],
}


class Recorded:
    """Stands in for a launch class: remembers how it was built."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class FakeLaunchConfiguration(Recorded):
    def perform(self, context):
        return context[self.args[0]]


@pytest.fixture
def load(monkeypatch, tmp_path):
    for module_name, names in LAUNCH_API.items():
        module = types.ModuleType(module_name)
        for name in names:
            setattr(module, name, type(name, (Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setitem(sys.modules, "launch_ros", types.ModuleType("launch_ros"))
    sys.modules["launch.substitutions"].LaunchConfiguration = FakeLaunchConfiguration
    share = tmp_path / "share" / "diffmf_ros"
    packages = types.ModuleType("ament_index_python.packages")
    packages.get_package_share_directory = lambda name: str(tmp_path / "share" / name)
    monkeypatch.setitem(sys.modules, "ament_index_python.packages", packages)

    def _load(filename):
        spec = importlib.util.spec_from_file_location(filename.replace(".", "_"), LAUNCH_DIR / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        return module, description.args[0], share

    return _load


def _kind(entity):
    return type(entity).__name__


def _declared(entities):
    return {e.args[0]: e.kwargs for e in entities if _kind(e) == "DeclareLaunchArgument"}


def _used_configurations(value, found):
    """Every LaunchConfiguration name reachable from a Node's arguments."""
    if isinstance(value, FakeLaunchConfiguration):
        found.add(value.args[0])
    elif isinstance(value, dict):
        for item in value.values():
            _used_configurations(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _used_configurations(item, found)
    return found


@pytest.mark.parametrize("filename", FILES)
def test_launch_file_compiles_and_says_how_to_run_it(filename):
    source = (LAUNCH_DIR / filename).read_text()
    compile(source, filename, "exec")
    assert f"ros2 launch diffmf_ros {filename}" in source


@pytest.mark.parametrize("filename", FILES)
def test_node_is_our_executable_with_the_shipped_params_and_every_argument_declared(load, filename):
    _, entities, share = load(filename)
    (node,) = [e for e in entities if _kind(e) == "Node"]
    assert node.kwargs["package"] == "diffmf_ros"
    assert node.kwargs["executable"] == "diffmf_node"
    declared = _declared(entities)
    assert declared["params_file"]["default_value"] == str(share / "config" / "diffmf.yaml")
    assert isinstance(node.kwargs["parameters"][0], FakeLaunchConfiguration)
    assert node.kwargs["parameters"][0].args[0] == "params_file"
    used = _used_configurations(list(node.kwargs.values()), set())
    assert used <= set(declared), f"used but not declared: {used - set(declared)}"
    remapped = {source for source, _ in node.kwargs["remappings"]}
    assert {"thermal/image_raw", "visible/image_raw", "fused/image_raw"} <= remapped


def test_diffmf_launch_declares_the_promised_arguments(load):
    _, entities, _ = load("diffmf.launch.py")
    declared = _declared(entities)
    promised = {"params_file", "use_sim_time", "namespace", "thermal_topic", "visible_topic", "fused_topic"}
    assert promised <= set(declared)
    (node,) = [e for e in entities if _kind(e) == "Node"]
    sim_time = node.kwargs["parameters"][1]["use_sim_time"]
    assert sim_time.args[0] == "use_sim_time" and declared["use_sim_time"]["default_value"] == "false"


@pytest.mark.parametrize("loop", ["false", "true"])
def test_bag_replay_plays_with_clock_once_the_node_is_active(load, loop):
    _, entities, _ = load("bag_replay.launch.py")
    declared = _declared(entities)
    assert "default_value" not in declared["bag"]  # required
    (node,) = [e for e in entities if _kind(e) == "Node"]
    assert node.kwargs["parameters"][1] == {"use_sim_time": True}

    (handler,) = [e for e in entities if _kind(e) == "RegisterEventHandler"]
    on_io = handler.args[0]
    assert on_io.kwargs["target_action"] is node
    assert on_io.kwargs["on_stderr"](types.SimpleNamespace(text=b"[INFO] loading model")) is None
    ready = types.SimpleNamespace(text=b"[INFO] [diffmf_fusion]: active: fusing /a, /b -> /fused/image_raw\n")
    (play,) = on_io.kwargs["on_stderr"](ready)
    assert on_io.kwargs["on_stdout"](ready) is None  # the bag starts once

    context = {"bag": "/data/drive_01", "rate": "0.5", "loop": loop}
    (process,) = play.kwargs["function"](context)
    command = process.kwargs["cmd"]
    assert command[:4] == ["ros2", "bag", "play", "/data/drive_01"]
    assert "--clock" in command and command[command.index("--rate") + 1] == "0.5"
    assert ("--loop" in command) == (loop == "true")
