import pytest

from vlpart.config import Config, ConfigError, config_from_dict


def test_defaults_and_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert Config.from_yaml(path) == Config()
    assert Config().text.encoder == "minilm"


def test_round_trip(tmp_path):
    cfg = config_from_dict({"vocabulary": "dog:head", "text": {"encoder": "clip"}})
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
        ({"vocabulary": 3}, "vocabulary: expected str, got int 3"),
        ({"text": {"encoder": "bert"}}, "text.encoder: 'bert' is not one of"),
        ({"text": "clip"}, "text: expected a mapping"),
        ({"text": {"embeddings": 1.5}}, "text.embeddings"),
    ],
)
def test_wrong_types(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="x.yaml")


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("text: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        Config.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Config.from_yaml(tmp_path / "nope.yaml")


def test_optional_fields():
    cfg = config_from_dict({"text": {"embeddings": None, "cache_dir": "/tmp/x"}})
    assert cfg.text.embeddings is None and cfg.text.cache_dir == "/tmp/x"
