"""Mini-Unlearning: remove training samples from a trained PyTorch model and measure it against retraining."""

__version__ = "0.1.0"
