"""Hydra configs of torchrl_hier.train and torchrl_hier.evaluate (a package, so that
hydra.initialize_config_module("torchrl_hier.conf") finds them)."""
