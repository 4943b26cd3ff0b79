"""What a user sees when a model cannot load, and queries the text tower cannot hold."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clipdata.embedding import Engine, EngineSpec, ModelError  # noqa: E402


def _chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as e:
            raise outer from e
    except Exception as e:
        return e


CASES = [
    # (what from_pretrained raises, a fragment of the message, a fragment of the hint)
    (OSError("repo not found"), "repo not found", "local directory"),
    (ValueError("Unrecognized model in x"), "Unrecognized model", "local directory"),
    (_chained(RuntimeError("Failed to import transformers.models.clip"),
              RuntimeError("operator torchvision::nms does not exist")), "torchvision::nms", "uninstall torchvision"),
    (_chained(ImportError("cannot import name 'x'"), AttributeError("module 'torchvision' has no attribute 'io'")),
     "torchvision", "uninstall"),
]


@pytest.mark.parametrize("raised, message, hint", CASES, ids=[type(c[0]).__name__ + str(i) for i, c in enumerate(CASES)])
def test_load_errors_name_the_real_cause(monkeypatch, tiny, raised, message, hint):
    def fail(*a, **k):
        raise raised

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fail)
    with pytest.raises(ModelError) as info:
        Engine(EngineSpec(model=str(tiny))).model
    assert message in str(info.value) and hint in (info.value.hint or "")
    assert "\n" not in str(info.value)


def test_a_query_longer_than_the_text_tower_is_cut_not_an_error(tiny):
    engine = Engine(EngineSpec(model=str(tiny), dtype="float32"))
    long, short = engine.embed_texts(["a red circle " * 200, "a red circle"])
    assert long.shape == short.shape and abs(float((long ** 2).sum()) - 1) < 1e-5


@pytest.mark.parametrize("model, said", [
    ("/nonexistent/dir", "no such folder"),
    ("./models/clip", "no such folder"),
    ("~/no-such-model-here", "no such folder"),
    ("models/clip/v1", "no such folder"),  # more than one `/`: never a hub id
    ("C:\\models\\clip", "no such folder"),
    ("{file}", "is not a folder"),
])
def test_a_model_path_that_is_no_folder_is_said_at_once(tmp_path, monkeypatch, model, said):
    """Never sent to the hub: offline, from_pretrained retries for ~40 s and then speaks of
    repo ids. Nothing is loaded, no network is asked."""
    def never(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", never)
    (tmp_path / "weights.bin").write_bytes(b"x")
    model = model.format(file=tmp_path / "weights.bin")
    with pytest.raises(ModelError) as info:
        EngineSpec(model=model).check()
    assert said in str(info.value) and "\n" not in str(info.value)


def test_a_hub_id_is_left_to_the_hub():
    for name in ("openai/clip-vit-base-patch32", "clip-vit-base-patch32"):
        assert EngineSpec(model=name).check()
