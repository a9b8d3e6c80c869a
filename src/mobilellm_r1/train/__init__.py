"""Training: objectives, optimisation, checkpoints, the trainer loop."""
