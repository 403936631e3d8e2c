"""Checkpoints: bitwise round trips, exact resume, atomic writes, one-line errors."""
import copy
import warnings

import pytest
import torch

import maskfx
from maskfx.train import Checkpoint, CheckpointError, Phase, Recipe, fit, load_checkpoint, load_data, save_checkpoint
from maskfx.state import get_state
from maskfx.train.models import build_model

MODEL = "tiny_models:resnet"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return load_data("digits", image_size=16, limit=64)


def transformed(data) -> tuple[torch.fx.GraphModule, Recipe]:
    x = torch.zeros(2, *data.input_shape)
    net = maskfx.transform(build_model(MODEL, 10), jumpout=True, blockout=maskfx.BlockoutConfig(clusters=3),
                           maskconnect=maskfx.MaskConnectConfig(2, "uniform", "multinomial"), example_inputs=(x,))
    return net, Recipe.of(net, MODEL, 10, data.input_shape)


def outputs(net, data):
    return net.eval()(torch.stack([data.test[i][0] for i in range(8)]))


@pytest.mark.parametrize("stage", ["transformed", "frozen", "prune", "expected"])
def test_round_trip_gives_bitwise_equal_outputs(tmp_path, data, stage):
    net, recipe = transformed(data)
    fit(net, data, [Phase(1, lr=0.05, mask_lr=0.5)], device=CPU, batch_size=32, evaluate=False)
    if stage != "transformed":
        maskfx.freeze(net)
    mode = stage if stage in ("prune", "expected") else None
    deployed = maskfx.collapse(net, mode) if mode else net
    save_checkpoint(tmp_path / "c.pt", Checkpoint(recipe, net.state_dict(), collapse=mode))
    loaded = load_checkpoint(tmp_path / "c.pt").network()
    assert torch.equal(outputs(loaded, data), outputs(deployed, data))
    if mode is None:  # the learned structure and whether it is frozen come back too
        for mine, theirs in zip(maskfx.structure(net), maskfx.structure(loaded), strict=True):
            assert torch.equal(mine.values, theirs.values) and mine.frozen == theirs.frozen == (stage == "frozen")


def test_resume_continues_with_the_same_loss(tmp_path, data):
    phases = [Phase(1, lr=0.05, mask_lr=0.5), Phase(2, lr=0.02, freeze_first=True)]
    net, recipe = transformed(data)
    start = copy.deepcopy(net.state_dict())
    straight = fit(net, data, phases, device=CPU, batch_size=32, evaluate=False)

    class Killed(Exception):
        pass

    def kill_after_second_epoch(record):
        if record["epoch"] == 2:
            raise Killed

    again, _ = transformed(data)
    again.load_state_dict(start)
    with pytest.raises(Killed):
        fit(again, data, phases, device=CPU, batch_size=32, evaluate=False, recipe=recipe,
            checkpoint=tmp_path / "c.pt", on_epoch=kill_after_second_epoch)
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved.progress == {"phase": 1, "epoch": 1, "plan": [[1, 0.05, 0.5, False], [2, 0.02, 0.0, True]]}
    other = [Phase(1, lr=0.05, mask_lr=0.5), Phase(1, lr=0.05, freeze_first=True), Phase(1, lr=0.02)]
    with pytest.raises(maskfx.UserError, match="resuming needs the same"):  # another plan: refused, nothing run
        fit(saved.network(), data, other, device=CPU, batch_size=32, evaluate=False, resume=saved)
    resumed = saved.network()
    history = fit(resumed, data, phases, device=CPU, batch_size=32, evaluate=False, resume=saved)
    assert [r["loss"] for r in history] == [r["loss"] for r in straight]  # bitwise: same floats
    assert torch.equal(outputs(resumed, data), outputs(net, data))


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, data, monkeypatch):
    net, recipe = transformed(data)
    path = save_checkpoint(tmp_path / "c.pt", Checkpoint(recipe, net.state_dict()))
    before = path.read_bytes()

    def dies_halfway(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Checkpoint(recipe, net.state_dict()))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    load_checkpoint(path).network()


def test_bad_checkpoints_raise_one_clear_error(tmp_path, data):
    net, recipe = transformed(data)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "plain.pt")
    other = Recipe(MODEL, 7, data.input_shape, recipe.transform)  # 7 classes: the head does not fit
    save_checkpoint(tmp_path / "mismatch.pt", Checkpoint(other, net.state_dict()))
    for name, message in [("missing.pt", "no such file"), ("corrupt.pt", "corrupt"),
                          ("plain.pt", "not a maskfx checkpoint"), ("mismatch.pt", "do not fit")]:
        with pytest.raises(CheckpointError, match=message) as error:
            load_checkpoint(tmp_path / name).network()
        assert "\n" not in str(error.value)


def _shortfalls(caught: list[warnings.WarningMessage]) -> int:
    return sum("short of the budget" in str(w.message) for w in caught)


@pytest.mark.parametrize("killed_after", [1, 2])
def test_resuming_a_budget_warns_at_its_freeze_once_and_records_until_it(tmp_path, data, killed_after):
    """Killed after the structure epoch, the freeze is still ahead: the resumed run warns there
    (two steps cannot reach the budget). Killed after the freeze, the first run warned and the
    resumed one does not again. Either way only the structure epoch records the expected ratio."""
    x = torch.zeros(2, *data.input_shape)
    net = maskfx.transform(build_model(MODEL, 10), channels=True, budget=maskfx.Budget(macs=0.6), example_inputs=(x,))
    recipe = Recipe.of(net, MODEL, 10, data.input_shape)
    phases = [Phase(1, lr=0.05, mask_lr=0.5), Phase(2, lr=0.02, freeze_first=True)]

    class Killed(Exception):
        pass

    def kill(record):
        if record["epoch"] == killed_after:
            raise Killed

    with warnings.catch_warnings(record=True) as before, pytest.raises(Killed):
        warnings.simplefilter("always")
        fit(net, data, phases, device=CPU, batch_size=32, evaluate=False, recipe=recipe,
            checkpoint=tmp_path / "c.pt", on_epoch=kill)
    saved = load_checkpoint(tmp_path / "c.pt")
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        history = fit(saved.network(), data, phases, device=CPU, batch_size=32, evaluate=False, resume=saved)
    assert (_shortfalls(before), _shortfalls(after)) == ((0, 1) if killed_after == 1 else (1, 0))
    assert ["budget_expected" in record for record in history] == [True, False, False]


def test_a_recipe_rebuilds_the_budget_with_every_field(data):
    """The budget's warmup and starting multiplier come back with its targets, so a resumed run
    learns under the penalty it started with."""
    budget = maskfx.Budget(macs=0.6, warmup=0.25, initial_multiplier=3)
    net = maskfx.transform(build_model(MODEL, 10), channels=True, budget=budget,
                           example_inputs=(torch.zeros(2, *data.input_shape),))
    rebuilt = Recipe.of(net, MODEL, 10, data.input_shape).build()
    assert get_state(rebuilt).budget == budget
    assert float(rebuilt.maskfx_budget.multiplier) == 3.0
    older = Recipe(MODEL, 10, data.input_shape, {"channels": {}}, {"macs": 0.6, "warmup": 0.5, "params": None})
    assert float(older.build().maskfx_budget.multiplier) == 1.0  # a recipe saved before the field: the default
