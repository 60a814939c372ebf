"""How the work runs: stage folders (readers, generation, selection, annotation, review, runs), thin Beam wiring
in ``transforms``, the build in ``build`` and the CLI in ``cli``."""
