"""Training and evaluation: augmentation, losses, metrics, ``ssnet-train``, ``ssnet-eval``,
plots, run comparison and shipping a trained model."""
