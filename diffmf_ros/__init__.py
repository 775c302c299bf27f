"""ROS 2 layer of DIFF-MF fusion. Importing this package does not import rclpy:
the offline bag tools (diffmf_bag) and the pairing logic run without a ROS install."""
