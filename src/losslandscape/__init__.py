"""Loss-landscape visualisation: a reproduction of Li et al., NeurIPS 2018."""

__version__ = "0.1.0"
