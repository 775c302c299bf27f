"""Start the DIFF-MF fusion node (ROS 2 Humble .. Kilted).

    ros2 launch diffmf_ros diffmf.launch.py
    ros2 launch diffmf_ros diffmf.launch.py namespace:=front thermal_topic:=/flir/image_raw \
        visible_topic:=/rgb/image_raw params_file:=/path/to/my_diffmf.yaml use_sim_time:=true

The topic arguments remap the node's default topics (thermal/image_raw, visible/image_raw,
fused/image_raw, and their /compressed variants), so they work with either transport.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "diffmf_ros"


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "diffmf.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="node parameter file (defaults: the shipped config/diffmf.yaml)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="follow /clock (bag replay, simulation)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("thermal_topic", default_value="thermal/image_raw", description="thermal camera topic"),
        DeclareLaunchArgument("visible_topic", default_value="visible/image_raw", description="visible camera topic"),
        DeclareLaunchArgument("fused_topic", default_value="fused/image_raw", description="fused output topic"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
    ]
    thermal = LaunchConfiguration("thermal_topic")
    visible = LaunchConfiguration("visible_topic")
    fused = LaunchConfiguration("fused_topic")
    node = Node(
        package=PACKAGE,
        executable="diffmf_node",
        name="diffmf_fusion",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[
            ("thermal/image_raw", thermal),
            ("thermal/image_raw/compressed", [thermal, "/compressed"]),
            ("visible/image_raw", visible),
            ("visible/image_raw/compressed", [visible, "/compressed"]),
            ("fused/image_raw", fused),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
