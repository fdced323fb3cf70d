import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from vlpart.apps.cli import main
from vlpart.core.fileio import read_image
from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.files import expand_inputs
from vlpart.inference.segmenter import PartSegmenter

PHOTO = "pascal_part_examples/2008_000652.jpg"


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    return PartSegmenter.from_pretrained(tiny_checkpoint)


def test_from_pretrained_uses_the_checkpoints_encoder(segmenter):
    assert segmenter.text_encoder.identity == "minilm:all-MiniLM-L6-v2"
    assert segmenter.model.text_dim == 384
    assert "efficientnet_lite0" in repr(segmenter)


def test_predict_on_a_real_photo(segmenter, shared_data):
    photo = shared_data / PHOTO
    h, w = np.asarray(Image.open(photo)).shape[:2]
    pred = segmenter.predict(photo, vocabulary="dog; dog:head,torso,leg", score_threshold=0.0)
    n = len(pred)
    assert 0 < n <= 10  # untrained, but every proposal scores > 0 with score_thresh 0
    assert pred.boxes.shape == (n, 4) and pred.boxes.dtype == np.float32
    assert pred.masks.shape == (n, h, w) and pred.masks.dtype == bool
    assert set(pred.labels) <= {"dog", "dog:head", "dog:torso", "dog:leg"}
    assert (np.diff(pred.scores) <= 0).all()
    assert (pred.boxes[:, [0, 2]] <= w).all() and (pred.boxes[:, [1, 3]] <= h).all()
    assert pred.parent.shape == (n,)
    assert all(pred.parent[i] == -1 for i, lab in enumerate(pred.labels) if ":" not in lab)


def test_prediction_records_the_prompts_sent_to_the_encoder(segmenter, shared_data):
    photo = shared_data / PHOTO
    spec = "dog; dog's head; legs"
    pred = segmenter.predict(photo, vocabulary=spec, score_threshold=0.0)
    vocab = parse_vocabulary(spec)
    assert vocab.prompts() == ["a dog", "a dog head", "a dog leg"]
    assert len(pred) > 0
    assert pred.prompts == [vocab.prompts()[i] for i in pred.label_ids]
    other = segmenter.predict(
        photo, vocabulary="dog:head,tail", score_threshold=0.0, template="part_of_object"
    )
    assert len(other) > 0
    assert set(other.prompts) <= {"head of a dog", "tail of a dog"}


def test_predict_inputs_and_thresholds(segmenter, shared_data):
    photo = shared_data / PHOTO
    array = read_image(photo)
    a = segmenter.predict(array, vocabulary="dog:head", score_threshold=0.0)
    b = segmenter.predict(Image.open(photo), vocabulary="dog:head", score_threshold=0.0)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    with warnings.catch_warnings():  # a read-only array (numpy's view of a PIL image) is fine
        warnings.simplefilter("error")
        c = segmenter.predict(
            np.asarray(Image.open(photo)), vocabulary="dog:head", score_threshold=0.0
        )
    np.testing.assert_array_equal(a.boxes, c.boxes)
    both = segmenter.predict(
        [array, array[:50, :80].copy()], vocabulary="dog:head", score_threshold=0.0
    )
    assert both[1].masks.shape[1:] == (50, 80)
    assert len(segmenter.predict(array, vocabulary="dog:head", score_threshold=1.01)) == 0
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        segmenter.predict(np.zeros((4, 4)), vocabulary="dog")


def test_exif_rotated_photo_is_segmented_upright(segmenter, tiny_checkpoint, shared_data, tmp_path):
    """A phone photo stored sideways with EXIF orientation 6: predictions, COCO sizes and the
    overlay are in the upright frame that viewers show, and equal those of the upright pixels."""
    upright = read_image(shared_data / PHOTO)
    stored = np.rot90(upright, k=1)  # what the camera wrote; orientation 6 turns it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "phone.png", exif=exif)
    rotated = segmenter.predict(tmp_path / "phone.png", vocabulary="dog", score_threshold=0.0)
    reference = segmenter.predict(upright, vocabulary="dog", score_threshold=0.0)
    assert rotated.image_size == upright.shape[:2]
    np.testing.assert_array_equal(rotated.boxes, reference.boxes)
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "phone.png"),
                "--weights",
                str(tiny_checkpoint),
                "--vocab",
                "dog",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    image = json.loads((out / "dataset.json").read_text())["images"][0]
    assert (image["height"], image["width"]) == upright.shape[:2]


def test_vocabulary_embeddings_are_cached(segmenter):
    calls = []
    encode = segmenter.text_encoder.encode
    segmenter.text_encoder.encode = lambda prompts: calls.append(prompts) or encode(prompts)
    try:
        vocab = parse_vocabulary("cat:tail,ear")
        first = segmenter.text_embeddings(vocab)
        second = segmenter.text_embeddings(parse_vocabulary("cat:tail,ear"))
    finally:
        segmenter.text_encoder.encode = encode
    assert len(calls) == 1 and first is second


def test_wrong_encoder_dimension_is_rejected(tiny_checkpoint, shared_data):
    with pytest.raises(ValueError, match="1024-d embeddings but the model was trained with 384-d"):
        PartSegmenter.from_pretrained(
            tiny_checkpoint,
            text_encoder="precomputed",
            vocabulary="pascal_part",
            embeddings=shared_data / "vlpart_metadata/pascal_part_clip_RN50_a+cname.npy",
        )


def test_expand_inputs(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.JPG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    paths, missing = expand_inputs(
        [
            str(tmp_path),
            str(tmp_path / "*.png"),
            str(tmp_path / "nothing*.jpg"),
            str(tmp_path / "gone.jpg"),
        ]
    )
    assert [p.name for p in paths] == ["a.png", "b.JPG"]
    assert [m[1] for m in missing] == ["pattern matched no files", "no such file or folder"]


def test_expand_inputs_recursive(tmp_path):
    (tmp_path / "top.png").write_bytes(b"x")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "one.jpg").write_bytes(b"x")
    (tmp_path / "sub" / "deeper" / "two.png").write_bytes(b"x")
    (tmp_path / "sub" / "deeper" / "notes.txt").write_text("x")
    (tmp_path / "only_sub").mkdir()
    (tmp_path / "only_sub" / "inner").mkdir()
    (tmp_path / "only_sub" / "inner" / "x.png").write_bytes(b"x")
    flat, _ = expand_inputs([str(tmp_path)])
    assert [p.name for p in flat] == ["top.png"]
    deep, missing = expand_inputs([str(tmp_path)], recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in deep] == [
        "only_sub/inner/x.png",
        "sub/deeper/two.png",
        "sub/one.jpg",
        "top.png",
    ]
    assert missing == []
    assert expand_inputs([str(tmp_path / "only_sub")])[1] == [
        (str(tmp_path / "only_sub"), "folder holds no images")
    ]
    pattern = str(tmp_path / "**" / "*.png")
    assert len(expand_inputs([pattern], recursive=True)[0]) == 3


def test_cli_writes_coco_results_overlays_and_masks(tiny_checkpoint, shared_data, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(shared_data / PHOTO, images / "dog.jpg")
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(images),
            "--weights",
            str(tiny_checkpoint),
            "--vocab",
            "dog; dog:head,leg",
            "--out",
            str(out),
            "--score-thresh",
            "0",
            "--save-masks",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    assert "1 images" in capsys.readouterr().out
    gt = COCO(str(out / "dataset.json"))
    results = json.loads((out / "results.json").read_text())
    assert results, "an untrained model with score_thresh 0 still detects"
    dt = gt.loadRes(str(out / "results.json"))
    h, w = np.asarray(Image.open(images / "dog.jpg")).shape[:2]
    for ann in dt.anns.values():
        assert mask_utils.decode(ann["segmentation"]).shape == (h, w)
    assert [c["name"] for c in gt.dataset["categories"]] == ["dog", "dog:head", "dog:leg"]
    overlay = Image.open(out / "overlays" / "dog.png")
    assert overlay.size == (w, h)
    masks = sorted((out / "masks" / "dog").iterdir())
    assert len(masks) == len(results)
    assert Image.open(masks[0]).size == (w, h)


def test_cli_predict_recursive(tiny_checkpoint, shared_data, tmp_path, capsys):
    images = tmp_path / "in"
    (images / "a" / "b").mkdir(parents=True)
    shutil.copy(shared_data / PHOTO, images / "a" / "dog.jpg")
    shutil.copy(shared_data / PHOTO, images / "a" / "b" / "dog.jpg")
    argv = ["predict", str(images), "--weights", str(tiny_checkpoint), "--vocab", "dog"]
    argv += ["--out", str(tmp_path / "out"), "--threads", "1"]
    assert main(argv) == 2  # the top folder itself holds no images
    assert "no input images found" in capsys.readouterr().err
    assert main([*argv, "--recursive"]) == 0
    assert "2 images" in capsys.readouterr().out
    files = [im["file_name"] for im in COCO(str(tmp_path / "out" / "dataset.json")).imgs.values()]
    assert sorted(files) == sorted(str(p) for p in images.rglob("*.jpg"))
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 2


def test_cli_exit_status_when_nothing_is_readable(tiny_checkpoint, tmp_path, capsys, caplog):
    (tmp_path / "bad.png").write_bytes(b"junk")
    code = main(
        [
            "predict",
            str(tmp_path / "bad.png"),
            "--weights",
            str(tiny_checkpoint),
            "--vocab",
            "dog",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "bad.png: not a readable image" in caplog.text
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "vlpart: error: none of the 1 images could be read"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "missing.png"),
                "--weights",
                str(tiny_checkpoint),
                "--vocab",
                "dog",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "predict",
                str(tmp_path / "bad.png"),
                "--weights",
                str(tmp_path / "no.pt"),
                "--vocab",
                "dog",
            ]
        )
        == 2
    )
    assert "no.pt: weights file not found" in capsys.readouterr().err


def test_eval_runs_a_model_over_ground_truth(tiny_checkpoint, synthetic_world, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--weights",
            str(tiny_checkpoint),
            "--gt",
            str(synthetic_world / "parts_val.json"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["segm"]["AP50"] <= 1.0
    assert "AP50_novel" in metrics["metrics"]["segm"]
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {
        im["id"] for im in json.loads((synthetic_world / "parts_val.json").read_text())["images"]
    }
