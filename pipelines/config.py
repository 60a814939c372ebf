"""Build configuration: frozen pydantic models loaded once from YAML and overridden by CLI flags.

Unknown keys are errors (``extra="forbid"``), so a typo in YAML fails loudly. Secrets never live here: the LLM
API key is referred to by the *name* of an environment variable and read at the point of use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import re

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file or value is unusable; the message names the key and the value."""


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_HELP = "1-128 letters, digits, '.', '_' and '-', starting with a letter or digit"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ItemsConfig(_Frozen):
    path: str | None = None
    format: Literal["auto", "parquet", "csv", "jsonl"] = "auto"
    id_column: str | None = "id"
    text_column: str = "text"
    # Image items: a column of image file paths (relative to the items file); embedded with a CLIP-type model.
    image_column: str | None = None
    # Image paths must name regular files inside the items file's folder (unless allowed) of at most this size.
    allow_outside_paths: bool = False
    max_image_bytes: int = Field(50 << 20, ge=1)
    label_column: str | None = "label"
    # Used as given when the file has it (e.g. train/test); rows without a value, and files without the column,
    # are "train" (or the split asked for by `conceptkit annotate --split`).
    split_column: str = "split"
    default_split: str = Field("train", pattern=r"^\w+$")
    # Without a split column: this fraction of each class's labelled items is held out as "test" (deterministic,
    # stratified by class, by a hash of the item id); 0 keeps every item in default_split.
    holdout: float = Field(0.2, ge=0, lt=1)
    classes_file: str | None = None
    max_text_chars: int = Field(20_000, ge=1)
    # "error": duplicate ids stop the build (exit 2); "reject": the first occurrence is kept, later ones rejected.
    on_duplicate_id: Literal["error", "reject"] = "error"


class LLMConfig(_Frozen):
    base_url: str | None = None  # None: start the embedded local model
    model: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(320, ge=16)
    seed: int | None = 0
    samples: int = Field(1, ge=1, le=16)
    # Requests in flight. None: one per request of the build, between 16 and 32, for the embedded server (also
    # its slots: on 2 cores its aggregate decode rate climbs from 22.9 tokens/s at 8 slots to 32.8 at 16 and stays
    # there, 35.1 at 48; benchmarks/README.md), 8 for a remote endpoint. Set, it is also the embedded server's
    # slot count (at most 32).
    concurrency: int | None = Field(None, ge=1, le=1024)
    # Per-request timeout; default 120 s for a remote endpoint, 900 s for the embedded model (a CPU shared with
    # the pipeline can take minutes per answer, and a timed-out request starts again from nothing).
    timeout_s: float | None = Field(None, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    # A 429's Retry-After is honoured up to this many seconds (longer waits are cut to it); each wait is a retry.
    max_retry_after_s: float = Field(60.0, ge=0, le=3600)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    cache: bool = True
    refresh_cache: bool = False
    embedded_port: int = Field(8765, ge=1, le=65535)
    # The embedded server: process the prompts' shared prefix once and copy it into every slot (off: each
    # request recomputes it; measured in benchmarks/README.md, "The embedded LLM at its limit").
    share_prefix: bool = True
    # USD per million tokens, per model name; models not listed cost 0 (local models).
    prices: dict[str, "Price"] = Field(default_factory=dict)
    max_cost: float | None = Field(None, ge=0)  # USD; the run stops spending before it exceeds this


class Price(_Frozen):
    prompt_per_million: float = Field(0.0, ge=0)
    completion_per_million: float = Field(0.0, ge=0)


class PromptTemplate(_Frozen):
    id: str
    template: str

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        from conceptkit.pipelines.generation.prompts import check_template

        check_template(value)
        return value


class FewShotExample(_Frozen):
    class_name: str = Field(alias="class")
    concepts: tuple[str, ...] = Field(min_length=1)


class GenerationConfig(_Frozen):
    family: Literal["text", "labo", "lfcbm", "custom"] = "text"
    domain: str = "short texts"
    concepts_per_prompt: int = Field(10, ge=1, le=50)
    # Worked examples shown to the model before each question, as earlier user/assistant turns.
    few_shot: tuple[FewShotExample, ...] = ()
    templates: tuple[PromptTemplate, ...] = ()  # used when family == "custom", added to the family otherwise
    # Concepts mined from the labelled train items (generation/mining.py): this many phrases per class join the
    # LLM's candidates (source "mined"), through the same filters and selection; 0 turns mining off.
    mine_per_class: int = Field(100, ge=0, le=1000)
    # Grounded generation: every question about a class shows this many representative train items of it
    # (facility location over their embeddings, from at most 128 sampled items), each cut to example_chars; 0
    # asks from the class name alone (as without labels).
    examples_per_class: int = Field(0, ge=0, le=10)
    example_chars: int = Field(240, ge=20, le=4000)
    # Rounds (generation/rounds.py): after each, the weakest classes on a validation part of the train split get
    # contrastive questions; stops early when validation accuracy stops improving; the best round is kept.
    rounds: int = Field(1, ge=1, le=10)
    # BatchPrompt-style requests: each question asked of this many classes at once, answers keyed per class
    # (fewer requests and prompt tokens; 1 asks one class per request).
    classes_per_request: int = Field(1, ge=1, le=64)
    mine_max_words: int = Field(3, ge=1, le=6)
    mine_min_items: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _batches_ask_about_names(self) -> "GenerationConfig":
        if self.classes_per_request > 1:  # refused at load, before any item is read
            from conceptkit.pipelines.generation.prompts import check_batching, family_templates

            templates = family_templates(self.family, [(t.id, t.template) for t in self.templates])
            check_batching(templates, grounded=bool(self.examples_per_class))
        return self

    @model_validator(mode="after")
    def _custom_needs_templates(self) -> "GenerationConfig":
        if self.family == "custom" and not self.templates:
            raise ValueError("generation.family 'custom' needs at least one entry in generation.templates")
        return self


class FilterConfig(_Frozen):
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(60, ge=1)
    max_words: int = Field(6, ge=1)
    near_duplicate_cosine: float = Field(0.92, gt=0, le=1)
    class_name_cosine: float = Field(0.85, gt=0, le=1)
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    stop_list: tuple[str, ...] = ()
    # A word of the concept's own class name ("bunting" for "indigo bunting") is a leak too.
    class_name_fragments: bool = True
    # A concept made only of the prompt's or the domain's words ("trivia questions") says nothing of a class.
    echo_filter: bool = True
    # Selection: a concept whose association with its best class exceeds its median class association by less
    # than this points at no class ("generic"); 0 keeps them all.
    generic_spread: float = Field(0.03, ge=0, le=1)


class EmbeddingConfig(_Frozen):
    model: str = "packaged:all-MiniLM-L6-v2"
    # 32 (sentence-transformers' own default): on CPU, batch 128 encoded long texts 27% slower (benchmarks/README.md)
    batch_size: int = Field(32, ge=1)
    threads: int = Field(1, ge=1)
    device: str = "cpu"
    # torch, or ONNX Runtime on the CPU: "onnx" (fp32) or "onnx-int8" (dynamically quantised; exported once from
    # the local model into ~/.cache/conceptkit/onnx or $CONCEPTKIT_ONNX_CACHE).
    backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    cache: bool = True  # embeddings cached by (model, content hash) under <cache_dir>/embeddings


class SelectionConfig(_Frozen):
    k_per_class: int = Field(15, ge=1)
    global_budget: int | None = Field(None, ge=1)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(1.0, ge=0)
    optimizer: Literal["naive", "lazy", "stochastic"] = "lazy"
    # Whether a concept's discriminability counts for a class it does not point at (submodular.class_direction).
    direction: Literal["off", "soft", "strongest"] = "soft"
    # What discriminability measures with labelled train items: "items", how well the concept's scores separate a
    # class's items from the other classes' (2 AUC - 1 over a sample of evidence_per_class items per class; needs
    # at least 5 per class, else LaBo's); "labo", LaBo's score from the class means (with `direction`).
    discriminability: Literal["items", "labo"] = "items"
    evidence_per_class: int = Field(256, ge=5, le=10_000)
    epsilon: float = Field(0.1, gt=0, lt=1)
    seed: int = 0
    # A run directory whose review data (concept-list verdicts, human candidates, precision from item review)
    # this selection applies (pipelines/review/apply.py); set by `conceptkit select RUN --use-review`.
    review_from: str | None = None


class IndexConfig(_Frozen):
    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"  # auto: exact below auto_threshold concepts, else HNSW
    auto_threshold: int = Field(50_000, ge=1)
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_search: int = Field(128, ge=1)
    ivf_nlist: int | None = Field(None, ge=1)
    ivf_nprobe: int = Field(16, ge=1)


class AnnotationConfig(_Frozen):
    top_k: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1)
    rows_per_shard: int = Field(20_000, ge=1)  # items per work unit and per annotations shard
    # The label rule (annotation/labels.py): a concept is shown when its double z-score (per concept over the
    # items, then per item over the concepts) reaches this; chosen on TREC fine labels (benchmarks/bench_labels.py).
    label_z: float = Field(3.0, gt=0, le=10)
    # How the full score vectors are stored: float32, or float16 (half the size; about 3 significant digits,
    # the labels are decided on the stored values so every reader agrees).
    score_dtype: Literal["float32", "float16"] = "float32"
    # How they are laid out: "list" (a fixed-size list of numbers, what any Parquet reader opens) or "packed"
    # (the same bytes in one fixed-size binary cell per item: 4x cheaper to write, 5x to read; read them with
    # conceptkit.schemas.annotations.score_matrix). For GPU builds whose shard writes are the limit.
    score_layout: Literal["list", "packed"] = "list"
    # Class context for labelled items: a concept not proposed for the item's class needs this many more
    # standard deviations; null turns it off, 100 is CB-LLM's ACC (never such a concept).
    class_margin: float | None = Field(2.0, ge=0, le=1000)


class RunnerConfig(_Frozen):
    # "beam": any Beam runner, configured entirely by beam_args (e.g. ["--runner=FlinkRunner", ...]).
    runner: Literal["direct", "dask", "beam"] = "direct"
    beam_args: tuple[str, ...] = ()
    direct_num_workers: int = Field(1, ge=1)
    dask_scheduler: str | None = None
    dask_workers: int = Field(2, ge=1)


LLMConfig.model_rebuild()


class BuildConfig(_Frozen):
    name: str | None = None
    out: str | None = None
    cache_dir: str | None = None  # default: <out parent>/.cache
    items: ItemsConfig = ItemsConfig()
    llm: LLMConfig = LLMConfig()
    generation: GenerationConfig = GenerationConfig()
    filters: FilterConfig = FilterConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    selection: SelectionConfig = SelectionConfig()
    index: IndexConfig = IndexConfig()
    annotation: AnnotationConfig = AnnotationConfig()
    runner: RunnerConfig = RunnerConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # A name is a name: `--name ../../x` or `--name /abs/path` would write outside runs/.
        if value is not None and (not RUN_NAME.fullmatch(value) or ".." in value):
            raise ValueError(f"run name {value[:60]!r} must be {NAME_HELP} (no '/', no '..'); use --out DIR for a "
                             "path")
        return value

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        if self.name:
            return Path("runs") / self.name
        raise ConfigError("no output directory: give --out (or 'out:' / 'name:' in the config)")

    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.out_dir().parent / ".cache"

    def public_dict(self) -> dict[str, Any]:
        """The config as plain data for manifests; holds no secret (only the key's variable name, and the endpoint
        without user info or query values)."""
        from conceptkit.pipelines.generation.endpoint import public_url

        data = self.model_dump(mode="json")
        if data["llm"]["base_url"]:
            data["llm"]["base_url"] = public_url(data["llm"]["base_url"])
        return data


def _format_validation_error(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {_excerpt(value)})"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {loc}: {first['msg']}{shown}{more}"


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # values after alias expansion: a real config has hundreds


def _excerpt(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count_nodes(value: Any, budget: list[int], where: str) -> None:
    """Count every value as the validator will see it (aliases expanded); stop at MAX_CONFIG_NODES."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{where}: more than {MAX_CONFIG_NODES} values once YAML aliases are expanded (an alias "
                          "bomb?); a conceptkit config needs a few hundred")
    if isinstance(value, dict):
        for key, item in value.items():
            _count_nodes(key, budget, where)
            _count_nodes(item, budget, where)
    elif isinstance(value, list):
        for item in value:
            _count_nodes(item, budget, where)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Load YAML at ``path`` (optional) and apply nested ``overrides`` (CLI flags) on top."""
    data: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        path = Path(path)
        where = str(path)
        if path.exists() and not path.is_file():
            raise ConfigError(f"config path is not a regular file: {path}")
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config file is at most "
                                  f"{MAX_CONFIG_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: malformed YAML{at}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        _count_nodes(loaded, [MAX_CONFIG_NODES], str(path))
        data = loaded
        # Relative data paths in a config file are relative to the directory the command runs in, like CLI flags.
    data = _deep_merge(data, overrides or {})
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where)) from None
