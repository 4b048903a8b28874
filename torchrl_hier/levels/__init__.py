"""Ready-made levels."""

from torchrl_hier.levels.basic import ConstantPolicy, SpecRandomPolicy, constant_level, random_level

__all__ = ["ConstantPolicy", "SpecRandomPolicy", "constant_level", "random_level"]
