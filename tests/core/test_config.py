from pathlib import Path

import pytest

from vlpart.core.config import Config, ConfigError, config_from_dict


def test_defaults_and_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert Config.from_yaml(path) == Config()
    assert Config().text.encoder == "minilm"


def test_round_trip(tmp_path):
    cfg = config_from_dict(
        {
            "text": {"encoder": "clip"},
            "model": {"fpn_channels": 64},
            "data": [{"name": "a", "ann_file": "a.json", "min_size": [512]}],
        }
    )
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert Config.from_yaml(path) == cfg


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("text:\n  encodr: clip\n")
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml: unknown key 'text.encodr'; did you mean "
        r"'text.encoder'\?",
    ):
        Config.from_yaml(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"text": {"template": 3}}, "text.template: expected str, got int 3"),
        ({"data": [{"batch_size": "2"}]}, r"data\[0\].batch_size: expected int"),
        ({"data": {"name": "a"}}, "data: expected a list"),
        ({"train": {"lr": True}}, "train.lr: expected float, got bool"),
        ({"text": {"encoder": "bert"}}, "text.encoder: 'bert' is not one of"),
        ({"text": "clip"}, "text: expected a mapping"),
        ({"text": {"cache_dir": 1.5}}, "text.cache_dir"),
        ({"model": {"pixel_mean": [1, 2]}}, "model.pixel_mean: expected 3 items"),
    ],
)
def test_wrong_types(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="x.yaml")


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("text: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:2:1: not valid YAML: expected .,. or .\]."):
        Config.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Config.from_yaml(tmp_path / "nope.yaml")


def test_optional_fields_and_int_to_float():
    cfg = config_from_dict(
        {"text": {"cache_dir": None}, "train": {"lr": 1, "clip_grad_norm": None}}
    )
    assert cfg.text.cache_dir is None and cfg.train.clip_grad_norm is None
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        cfg = Config.from_yaml(path)
        assert cfg.data, path
        # The paper's configs use CLIP RN50 rows; the offline quickstart uses MiniLM's.
        expected = 384 if cfg.text.encoder == "minilm" else 1024
        assert cfg.model.text_dim == expected, path


def test_max_score_ablation_has_a_config():
    path = (
        Path(__file__).resolve().parents[2] / "configs/pascal_part_r50_base_voc_in_max_score.yaml"
    )
    config = Config.from_yaml(path)
    assert config.model.image_label_mode == "max_score"
    base = Config.from_yaml(path.with_name("pascal_part_r50_base_voc_in.yaml"))
    assert base.model.image_label_mode == "max_size"
    assert config.data == base.data and config.train == base.train


def test_empty_lr_steps_means_a_constant_rate_but_empty_sizes_are_refused():
    cfg = config_from_dict({"train": {"lr_steps": []}})
    assert cfg.train.lr_steps == []
    with pytest.raises(ConfigError, match="min_size: must not be empty"):
        config_from_dict({"data": [{"name": "p", "kind": "part", "min_size": []}]})
