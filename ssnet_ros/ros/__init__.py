"""ROS 2 plumbing: the node, its parameters, message conversions, frame batching and a client."""
