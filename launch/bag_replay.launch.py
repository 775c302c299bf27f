"""Replay a recorded bag through the DIFF-MF fusion node on bag time (ROS 2 Humble .. Kilted).

    ros2 launch diffmf_ros bag_replay.launch.py bag:=/data/drive_01 \
        thermal_topic:=/flir/image_raw visible_topic:=/rgb/image_raw [rate:=0.5] [loop:=true]

The node starts with use_sim_time; `ros2 bag play --clock` starts once the node reports
itself active (model loaded and warmed up), so the first frames of the bag are not lost.
Record the result alongside with: ros2 bag record /fused/image_raw /diagnostics
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessIO
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "diffmf_ros"
READY_LINE = b"active: fusing"  # what FusionNode logs once it subscribes


def _bag_play(context):
    command = ["ros2", "bag", "play", LaunchConfiguration("bag").perform(context), "--clock",
               "--rate", LaunchConfiguration("rate").perform(context)]
    if LaunchConfiguration("loop").perform(context).lower() in ("true", "1", "yes"):
        command.append("--loop")
    return [ExecuteProcess(cmd=command, output="screen")]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "diffmf.yaml")
    arguments = [
        DeclareLaunchArgument("bag", description="bag folder (or file) to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
        DeclareLaunchArgument("loop", default_value="false", description="play the bag in a loop"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("thermal_topic", default_value="thermal/image_raw",
                              description="thermal topic as recorded in the bag"),
        DeclareLaunchArgument("visible_topic", default_value="visible/image_raw",
                              description="visible topic as recorded in the bag"),
        DeclareLaunchArgument("fused_topic", default_value="fused/image_raw", description="fused output topic"),
    ]
    thermal = LaunchConfiguration("thermal_topic")
    visible = LaunchConfiguration("visible_topic")
    node = Node(
        package=PACKAGE,
        executable="diffmf_node",
        name="diffmf_fusion",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": True}],
        remappings=[
            ("thermal/image_raw", thermal),
            ("thermal/image_raw/compressed", [thermal, "/compressed"]),
            ("visible/image_raw", visible),
            ("visible/image_raw/compressed", [visible, "/compressed"]),
            ("fused/image_raw", LaunchConfiguration("fused_topic")),
        ],
        output="screen",
    )
    started = []

    def start_bag_once_ready(event):
        if not started and READY_LINE in event.text:
            started.append(True)
            return [OpaqueFunction(function=_bag_play)]
        return None

    start_bag = RegisterEventHandler(
        OnProcessIO(target_action=node, on_stdout=start_bag_once_ready, on_stderr=start_bag_once_ready)
    )
    return LaunchDescription([*arguments, node, start_bag])
