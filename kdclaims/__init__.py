"""kdclaims: statistical verification of the claims of "What knowledge gets distilled in knowledge distillation?"."""

__version__ = "0.1.0"
