"""Experiments that tie the chain together: assess an unlearned model against
retraining, run ratio sweeps over methods, and wire shadow models for U-LiRA."""
