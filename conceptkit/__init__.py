"""conceptkit: build concept datasets (LLM-proposed concepts, submodular selection, annotations, human review).

The one import namespace. The repository keeps its design folders at the root and the build maps them here:
``conceptkit.schemas`` (what the data is) <- ``conceptkit.annotators`` (what attaches labels) <-
``conceptkit.pipelines`` (how the work runs).
"""

__version__ = "0.1.0"
