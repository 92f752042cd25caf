"""resmlp: its switches build the plain deep MLP of the depth study; the notes' SGD recipe configs."""
import keras
import pytest

from mnist99.config import load_config
from mnist99.models import build_model
from tests.conftest import assert_takes_a_training_step


def resmlp(residual: bool, batchnorm: bool) -> keras.Model:
    return build_model(load_config([], ["model.name=resmlp", "model.width=8", "model.depth=3",
                                        f"model.residual={residual}", f"model.batchnorm={batchnorm}"]).model)


def kinds(model: keras.Model) -> list[type]:
    return [type(layer) for layer in model.layers]


@pytest.mark.parametrize("residual,batchnorm", [(True, True), (True, False), (False, True), (False, False)])
def test_the_switches_add_or_leave_out_every_shortcut_and_every_batchnorm(residual, batchnorm):
    model = resmlp(residual, batchnorm)
    assert kinds(model).count(keras.layers.Add) == (3 if residual else 0)
    batchnorms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batchnorms) == (4 if batchnorm else 0)  # stem + 3 blocks
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense) and layer.name != "logits"]
    assert [layer.name for layer in hidden] == ["stem", "block1_dense", "block2_dense", "block3_dense"]
    assert all(layer.use_bias is not batchnorm for layer in hidden)  # a bias only where no BatchNorm shifts
    assert [layer.name for layer in model.layers if layer.name.endswith("_act")] == [
        "stem_act", "block1_act", "block2_act", "block3_act"]  # the diagnostics' metric names in every variant


def test_default_yaml_builds_the_notes_residual_batchnorm_mlp_and_the_plain_one_trains():
    from mnist99.training.recipe import compile_model

    cfg = load_config(["mlp"])
    assert cfg.model.residual and cfg.model.batchnorm
    plain = load_config([], ["model.name=resmlp", "model.width=8", "model.depth=3", "model.residual=false",
                             "model.batchnorm=false"])
    net = compile_model(plain, steps_per_epoch=1)
    net.run_eagerly = True  # a single step: tracing a tf.function would cost more than the step
    assert_takes_a_training_step(net)


def test_the_notes_sgd_recipe_changes_only_the_optimiser_and_decays_in_four_steps_at_either_size():
    from mnist99.training.optimizers import SCHEDULES

    for base, sgd, epochs in ((["mlp"], ["mlp", "mlp-sgd"], 24),
                              (["mlp", "mlp-cpu"], ["mlp", "mlp-cpu", "mlp-sgd", "mlp-sgd-cpu"], 40)):
        adamw, notes = load_config(base), load_config(sgd)
        assert notes.model == adamw.model and notes.augment == adamw.augment and notes.train.epochs == epochs
        assert notes.train.model_dump(exclude={"optimizer", "schedule"}) == adamw.train.model_dump(
            exclude={"optimizer", "schedule"})
        assert (notes.train.optimizer.name, notes.train.optimizer.momentum, notes.train.schedule.name) == (
            "sgd", 0.9, "step")
        schedule = SCHEDULES.get("step")(notes.train.schedule, notes.train.optimizer.lr, 10, epochs)
        rates = [float(schedule(step)) for step in range(0, 10 * epochs, 10)]
        assert len(set(rates)) == 4 and rates == sorted(rates, reverse=True)
        assert rates[0] == pytest.approx(notes.train.optimizer.lr)
