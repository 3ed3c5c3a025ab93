"""Inference core: pure PyTorch and numpy, never imports rclpy.

Model card and checkpoints, preprocessing, the input-size rule, the :class:`Segmenter`, rendering
of labels/masks/overlays, image-size limits, atomic file output and latency statistics.
"""
