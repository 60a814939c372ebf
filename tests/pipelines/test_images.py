"""Image items through a CLIP-type sentence-transformers model: plumbing, not quality.

The model is a tiny randomly initialised CLIP the test builds and saves locally (no hub), with a word-level
tokenizer; images are small random PNGs, plus one corrupt file and one missing path that must become rejects.
"""

import numpy as np
import pytest

from conftest import fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.schemas.annotations import annotations_schema
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import read_table
from conceptkit.schemas.rejects import REJECTS

WORDS = "a photo of the red blue round square striped spotted long short beak wings tail fur feathers green".split()
ANSWERS = {"bird": ["long beak", "feathers", "wings", "green tail"], "cat": ["striped fur", "round", "short tail"]}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-clip")
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", model_max_length=16)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=3, bos_token_id=2,
                         pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    import torch

    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(out)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(out)
    return out


def test_image_items_build(tmp_path, tiny_clip):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        name = f"img{i}.png"
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(images / name)
        rows.append({"id": f"i{i}", "image": f"images/{name}", "label": "bird" if i < 3 else "cat"})
    (images / "corrupt.png").write_bytes(b"not a png")
    rows.append({"id": "corrupt", "image": "images/corrupt.png", "label": "cat"})
    rows.append({"id": "missing", "image": "images/nowhere.png", "label": "bird"})
    items = write_csv(tmp_path / "items.csv", rows)
    with FakeLLM(ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(
            fake, tmp_path, items, items={"image_column": "image"}, embedding={"model": str(tiny_clip)},
            filters={"near_duplicate_cosine": 1.0, "class_name_cosine": 1.0}, selection={"k_per_class": 2}))
        summary = run_build(cfg)
    out = cfg.out_dir()
    concepts = read_table(out / "concepts.parquet", CONCEPTS)
    assert concepts.num_rows >= 2 and len(concepts.column("embedding")[0].as_py()) == 8  # CLIP text tower
    ann = read_table(out / "annotations", annotations_schema(concepts.num_rows))
    assert sorted(ann.column("item_id").to_pylist()) == [f"i{i}" for i in range(6)]
    rejects = {r["key"]: r["reason"] for r in read_table(out / "rejects.parquet", REJECTS).to_pylist()}
    assert rejects == {"corrupt": "unreadable_image", "missing": "image_not_found"}
    assert summary.counts["items_annotated"] == 6 and summary.counts["items_rejected"] == 2
