"""How the work runs: pure stage logic in plain modules, thin Beam wiring in ``transforms``, the CLI in ``cli``."""

__version__ = "0.1.0"
