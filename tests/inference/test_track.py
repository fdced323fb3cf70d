"""Tracking objects and parts through videos: association on hand-made predictions, the frames
between segmented ones, and ``vlpart track`` end to end on a tiny random detector."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

pytest.importorskip("trackers", reason="the 'track' extra is not installed")

from vlpart.apps.cli import main  # noqa: E402
from vlpart.apps.quickstart.clips import synth_clip  # noqa: E402
from vlpart.core.coco import category_ids, decode_segmentation, mot_challenge_rows  # noqa: E402
from vlpart.core.vocab import parse_vocabulary  # noqa: E402
from vlpart.inference.prediction import Prediction  # noqa: E402
from vlpart.inference.tracking import FrameTracker, PartTracker  # noqa: E402
from vlpart.inference.tracking.associate import warp_mask  # noqa: E402
from vlpart.inference.video import write_video  # noqa: E402
from vlpart.model import build_model, save_checkpoint  # noqa: E402

FPS = 10
H, W = 60, 160
VOCAB = "dog;dog:head;cat;cat:ear"
PARTS_ONLY = "dog:head;cat:ear"
TEXT_DIM = 32


def _pred(items: list[tuple[str, tuple[float, float, float, float], int]]) -> Prediction:
    """A prediction of ``(label, XYXY box, parent index)`` items, rectangle masks, score 0.9."""
    n = len(items)
    masks = np.zeros((n, H, W), bool)
    for k, (_, (x0, y0, x1, y1), _) in enumerate(items):
        masks[k, int(y0) : int(y1), int(x0) : int(x1)] = True
    return Prediction(
        boxes=np.array([b for _, b, _ in items], np.float32).reshape(-1, 4),
        scores=np.full(n, 0.9, np.float32),
        labels=[label for label, _, _ in items],
        label_ids=np.zeros(n, np.int64),
        category_ids=np.ones(n, np.int64),
        masks=masks,
        parent=np.array([p for _, _, p in items], np.int64),
        is_part=np.array([":" in label for label, _, _ in items], bool),
    )


def _dogs(t: int) -> Prediction:
    """Two dogs crossing (one moving right, one left, 6 px per frame), each with a head at
    its leading end."""
    a, b = 10 + 6 * t, 110 - 6 * t
    return _pred(
        [
            ("dog", (a, 10, a + 40, 40), -1),
            ("dog", (b, 20, b + 40, 50), -1),
            ("dog:head", (a + 30, 10, a + 40, 20), 0),
            ("dog:head", (b, 20, b + 10, 30), 1),
        ]
    )


def test_tracks_persist_and_parts_keep_their_parents_through_a_crossing():
    tracker = PartTracker(frame_rate=FPS)
    history = [tracker.update(_dogs(t), t / FPS) for t in range(18)]
    first_ids, first_parents = history[0]
    assert len(set(first_ids)) == 4 and (first_ids > 0).all()  # ids from the first frame
    for ids, parents in history:
        np.testing.assert_array_equal(ids, first_ids)  # no switch while the dogs cross
        np.testing.assert_array_equal(parents, [-1, -1, first_ids[0], first_ids[1]])


def test_a_part_never_joins_another_objects_track():
    """Frame 1 swaps the two heads' places: by IoU each head now matches the other's track,
    but parts are matched only within their parent's track, so both heads get new tracks
    and keep their parents."""
    tracker = PartTracker(frame_rate=FPS)
    ids0, _ = tracker.update(_dogs(0), 0.0)
    swapped = _dogs(0)
    swapped.parent = np.array([-1, -1, 1, 0])
    ids1, parents1 = tracker.update(swapped, 1 / FPS)
    np.testing.assert_array_equal(ids1[:2], ids0[:2])
    np.testing.assert_array_equal(parents1[2:], [ids0[1], ids0[0]])
    assert set(ids1[2:]).isdisjoint(ids0[2:])


def test_reentry_within_the_lost_time_keeps_the_id_and_later_gets_a_new_one():
    def cat(x):
        return _pred([("cat", (x, 10, x + 30, 40), -1)])

    tracker = PartTracker(frame_rate=FPS, lost_seconds=1.0)
    ids = [tracker.update(cat(20 + 2 * t), t / FPS)[0] for t in range(4)]
    assert len({int(i[0]) for i in ids}) == 1
    for t in range(4, 9):  # gone for 0.5 s
        assert len(tracker.update(_pred([]), t / FPS)[0]) == 0
    back = tracker.update(cat(38), 9 / FPS)[0]
    assert back[0] == ids[0][0]
    for t in range(10, 30):  # gone for 2 s
        tracker.update(_pred([]), t / FPS)
    assert tracker.update(cat(38), 3.0)[0][0] not in (ids[0][0], -1)


def test_parts_only_vocabulary_tracks_parts_without_parents():
    tracker = PartTracker(frame_rate=FPS)
    for t in range(5):
        pred = _pred([("dog:head", (10 + 3 * t, 5, 30 + 3 * t, 25), -1)])
        ids, parents = tracker.update(pred, t / FPS)
        assert ids[0] == 1 and parents[0] == -1


def test_frames_between_segmented_ones_are_interpolated_then_held():
    calls = []

    def predict(array):
        calls.append(int(array[0, 0, 0]))
        return _dogs(int(array[0, 0, 0]))

    frames = FrameTracker(predict, PartTracker(frame_rate=FPS), every=5)
    out = []
    for t in range(13):
        out += frames.push(t, t / FPS, np.full((H, W, 3), t, np.uint8))
    out += frames.finish()
    assert calls == [0, 5, 10]
    assert [f.index for f in out] == list(range(13))
    sources = [f.source for f in out]
    assert sources == ["detector"] + ["interpolated"] * 4 + ["detector"] + ["interpolated"] * 4 + [
        "detector",
        "held",
        "held",
    ]
    ids = out[0].track_ids
    for f in out:
        np.testing.assert_array_equal(f.track_ids, ids)
        np.testing.assert_array_equal(f.parent_track_ids, [-1, -1, ids[0], ids[1]])
    # Frame 2: 2/5 of the way from frame 0 to frame 5, i.e. where the dogs are at t = 2.
    np.testing.assert_allclose(out[2].pred.boxes, _dogs(2).boxes, atol=1e-4)
    assert (out[2].pred.masks == _dogs(2).masks).mean() > 0.999
    np.testing.assert_array_equal(out[12].pred.boxes, out[10].pred.boxes)
    np.testing.assert_array_equal(out[2].pred.parent, [-1, -1, 0, 1])


def test_tracks_seen_in_one_segmented_frame_only_are_absent_between():
    def predict(array):
        t = int(array[0, 0, 0])
        return _dogs(t) if t == 0 else _dogs(t).subset([0, 2])

    frames = FrameTracker(predict, PartTracker(frame_rate=FPS), every=3)
    out = []
    for t in range(4):
        out += frames.push(t, t / FPS, np.full((H, W, 3), t, np.uint8))
    assert [len(f.pred) for f in out] == [4, 2, 2, 2]
    np.testing.assert_array_equal(out[1].track_ids, out[0].track_ids[[0, 2]])


def test_warp_mask_moves_and_scales_onto_the_new_box():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 5:15] = True
    out = warp_mask(mask, np.array([5, 10, 15, 20.0]), np.array([20, 0, 40, 20.0]))
    expected = np.zeros_like(mask)
    expected[0:20, 20:40] = True
    np.testing.assert_array_equal(out, expected)


def test_mot_rows_are_motchallenge_lines():
    images = [{"id": 1, "frame_index": 0}, {"id": 2, "frame_index": 4}]
    annotations = [
        {"image_id": 2, "label": "dog", "track_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 1, "label": "dog", "track_id": -1, "bbox": [1, 2, 3, 4], "score": 0.5},
    ]
    assert mot_challenge_rows(annotations, images) == {
        "dog": ["5,3,1.00,2.00,3.00,4.00,0.50000,-1,-1,-1"]
    }


def test_synthetic_clip_has_stable_identities_and_objects_reenter():
    frames = list(synth_clip(0, num_frames=60, size=128))
    seen = [{i.gt_id for i in f.instances if i.parent_id < 0} for f in frames]
    assert all(len(s) <= 3 for s in seen)
    gone_and_back = [
        k
        for k in (1, 2, 3)
        if any(k in a and k not in b for a, b in zip(seen, seen[1:], strict=False))
        and any(k not in a and k in b for a, b in zip(seen, seen[1:], strict=False))
    ]
    assert gone_and_back  # some object leaves the frame and comes back
    for f in frames:
        objects = {i.gt_id: i for i in f.instances if i.parent_id < 0}
        for part in (i for i in f.instances if i.parent_id >= 0):
            assert part.gt_id // 100 == part.parent_id and part.label.startswith(
                objects[part.parent_id].label + ":"
            )


# --- vlpart track end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config):
    """A random-init detector and text rows in which ``dog:head`` equals ``dog`` (every box
    comes out as both, so heads have parents)."""
    root = tmp_path_factory.mktemp("track_model")
    cfg = tiny_config(text_dim=TEXT_DIM, score_thresh=0.05)
    torch.manual_seed(0)
    weights = save_checkpoint(
        build_model(cfg), root / "model.safetensors", config=cfg, text_encoder="precomputed"
    )
    vocab = parse_vocabulary(VOCAB)
    rows = torch.randn(len(vocab), TEXT_DIM)
    rows[vocab.names.index("dog:head")] = rows[vocab.names.index("dog")]
    np.save(root / "vocab.npy", rows.numpy())
    parts = [vocab.names.index(name) for name in PARTS_ONLY.split(";")]
    np.save(root / "parts.npy", rows[parts].numpy())
    return weights, root / "vocab.npy", root / "parts.npy"


def _cli(checkpoint, *args, vocab=VOCAB) -> int:
    weights, rows, part_rows = map(str, checkpoint)
    rows = part_rows if vocab == PARTS_ONLY else rows
    text = ["--encoder", "precomputed", "--embeddings", rows, "--vocab", vocab]
    return main(["track", *map(str, args), "--weights", weights, *text, "--score-thresh", "0.05"])


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, [f.image for f in synth_clip(1, num_frames=12, size=96)], fps=FPS)
    return path


def test_cli_writes_tracked_video_coco_and_mot(tmp_path, checkpoint, clip):
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out, "--every", "3") == 0
    with av.open(str(out / "clip.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 12
    data = json.loads((out / "clip.json").read_text())
    assert data["info"]["tracking"]["every"] == 3 and data["info"]["video"]["complete"]
    assert [im["frame_index"] for im in data["images"]] == list(range(12))
    assert [im["source"] for im in data["images"]][:4] == ["detector"] + ["interpolated"] * 2 + [
        "detector"
    ]
    cats = dict(
        zip(parse_vocabulary(VOCAB).names, category_ids(parse_vocabulary(VOCAB)), strict=True)
    )
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
        assert cats[a["label"]] == a["category_id"]
        assert decode_segmentation(a["segmentation"], 96, 96).shape == (96, 96)
    parent_of: dict[int, int] = {}
    linked = 0
    for records in by_image.values():
        for a in records:
            if a["parent"] >= 0:
                parent = records[a["parent"]]
                assert a["parent_track_id"] == parent["track_id"]
            if a["track_id"] >= 0 and a["parent_track_id"] >= 0:
                assert (
                    parent_of.setdefault(a["track_id"], a["parent_track_id"])
                    == (a["parent_track_id"])
                )  # a part track never changes parent
                linked += 1
    assert linked > 0 and data["info"]["tracking"]["num_tracks"] > 0
    tracked = [a for a in data["annotations"] if a["track_id"] >= 0]
    files = sorted(p.name for p in (out / "clip_mot").iterdir())
    assert files == sorted(
        f"{label.replace(':', '_')}.txt" for label in {a["label"] for a in tracked}
    )
    rows = [line.split(",") for p in (out / "clip_mot").iterdir() for line in p.read_text().split()]
    assert len(rows) == len(tracked)
    assert all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] and int(r[1]) > 0 for r in rows)
    assert {int(r[0]) for r in rows} <= set(range(1, 13))


def test_cli_parts_only_vocabulary(tmp_path, checkpoint, clip):
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out, vocab=PARTS_ONLY) == 0
    data = json.loads((out / "clip.json").read_text())
    tracked = [a for a in data["annotations"] if a["track_id"] >= 0]
    assert tracked and all(a["parent_track_id"] == -1 and a["parent"] == -1 for a in tracked)


def test_cli_defaults_to_the_vocabulary_the_checkpoint_records(
    tmp_path, checkpoint, clip, tiny_config, capsys
):
    weights, rows, _ = map(str, checkpoint)
    text = ["--encoder", "precomputed", "--embeddings", rows, "--score-thresh", "0.05"]
    assert main(["track", str(clip), "--out", str(tmp_path / "none"), "--weights", weights, *text])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vlpart: error: ") and "vocabulary" in last
    cfg = tiny_config(text_dim=TEXT_DIM, score_thresh=0.05)
    torch.manual_seed(0)  # the fixture's weights, now with the vocabulary recorded
    recorded = save_checkpoint(
        build_model(cfg),
        tmp_path / "recorded.safetensors",
        config=cfg,
        vocabulary=parse_vocabulary(VOCAB).to_json(),
        text_encoder="precomputed",
    )
    argv = ["track", str(clip), "--weights", str(recorded), *text]
    assert main([*argv, "--out", str(tmp_path / "recorded")]) == 0
    assert _cli(checkpoint, clip, "--out", tmp_path / "given") == 0
    got, given = (
        json.loads((tmp_path / d / "clip.json").read_text()) for d in ("recorded", "given")
    )
    assert got["annotations"] and got["annotations"] == given["annotations"]


def test_truncated_video_keeps_the_frames_decoded(tmp_path, checkpoint, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(clip, [f.image for f in synth_clip(2, num_frames=30, size=64)], fps=FPS)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out, "--every", "2") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"vlpart: error: {clip}: ") and "frames decoded before" in err[-1]
    result = json.loads((out / "clip.json").read_text())
    kept = result["info"]["video"]["frames_decoded"]
    assert 0 < kept < 30 and len(result["images"]) == kept
    assert (out / "clip_mot").is_dir()


@pytest.mark.parametrize("kind", ["unreadable", "no frames", "missing"])
def test_bad_videos_are_one_line_errors_and_write_nothing(tmp_path, checkpoint, capsys, kind):
    clip = tmp_path / "bad.mp4"
    if kind == "unreadable":
        clip.write_text("not a video\n")
    elif kind == "no frames":
        with av.open(str(clip), "w", format="mp4") as sink:
            stream = sink.add_stream("h264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vlpart: error: {clip}: ")
    assert not out.exists() or not any(out.iterdir())


def test_every_must_be_positive(tmp_path, checkpoint, clip, capsys):
    assert _cli(checkpoint, clip, "--out", tmp_path, "--every", "0") == 2
    assert "--every must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_sam2_propagates_masks_to_the_frames_between():
    """A randomly initialised SAM 2.1 Hiera-T (the released weights cannot be downloaded
    here): the frames between segmented ones get SAM 2's masks (whatever they look like with
    random weights), boxes from those masks, and the segmented frame's track ids."""
    pytest.importorskip("sam2", reason="the sam2 package is not installed")
    from vlpart.inference.refine.sam2 import SAM2_VARIANTS, build_sam2
    from vlpart.inference.tracking.sam2 import Sam2Propagator

    torch.manual_seed(0)
    propagator = Sam2Propagator(build_sam2(SAM2_VARIANTS["tiny"], video=True))
    calls = []
    seen = []

    class Spy:
        def propagate(self, frames, masks):
            out = propagator.propagate(frames, masks)
            calls.append((len(frames), masks.shape))
            seen.append(out)
            return out

    frames = FrameTracker(
        lambda a: _dogs(int(a[0, 0, 0])).subset([0, 2]), PartTracker(frame_rate=FPS), every=3
    )
    frames.propagator = Spy()
    out = []
    for t in range(4):
        out += frames.push(t, t / FPS, np.full((H, W, 3), t, np.uint8))
    assert calls == [(3, (2, H, W))]
    assert [f.source for f in out] == ["detector", "sam2", "sam2", "detector"]
    for k, f in enumerate(out[1:3]):
        kept = seen[0][k].any(axis=(1, 2))
        np.testing.assert_array_equal(f.track_ids, out[0].track_ids[kept])
        np.testing.assert_array_equal(f.pred.masks, seen[0][k][kept])
        for box, mask in zip(f.pred.boxes, f.pred.masks, strict=True):
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
