"""Command-line tools on top of the core: demo, benchmark, ONNX export and the results sheet."""
