"""Parameter files of the diffmf_ros node, installed as package data (see diffmf_ros.resources)."""
