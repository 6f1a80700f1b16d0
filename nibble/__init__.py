"""Nibble: FPGA inference accelerators for CNNs and GAN generators.

The package maps the repository folders ``hw/``, ``gen/``, ``sim/`` and ``host/`` to
``nibble.hw``, ``nibble.gen``, ``nibble.sim`` and ``nibble.host`` (see ``pyproject.toml``).
"""
__version__ = "0.1.0"
