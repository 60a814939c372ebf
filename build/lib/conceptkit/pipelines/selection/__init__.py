"""Selection stage: accepted candidates and item evidence in, the run's concept set out.

filters (candidate decisions with reasons) -> stage (LaBo-style per-class selection) on top of submodular
(the pure selection engine).
"""
