"""Training recipes: typed TOML loading, defaults, paths relative to the recipe, helpful errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import ConfigError, InputError
from medseg.training.recipe import AugmentationConfig, Recipe, load_recipe

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipes" / "r.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = 'name = "tiny"\n[dataset]\npath = "../data/set"\n'


@pytest.mark.parametrize("name", ["hippocampus", "hippocampus_2d", "hippocampus_deeplab"])
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(PIPELINES / f"{name}.toml")
    assert recipe.source == (PIPELINES / f"{name}.toml").resolve()
    # the repo sits beside ../shared: the dataset path resolves against the recipe's folder
    assert recipe.dataset.path == (PIPELINES / "../../shared/data/msd_hippocampus").resolve()
    assert recipe.model.spatial_dims == (2 if name.endswith("2d") else 3)
    assert recipe.model.family == ("deeplabv3plus" if name.endswith("deeplab") else "unet")
    assert recipe.augmentation.scaling == (0.7, 1.4)


def test_minimal_recipe_gets_documented_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL + '[runtime]\ncache_dir = "cache"\n'))
    assert recipe.dataset.path == (tmp_path / "data" / "set").resolve()
    assert recipe.runtime.cache_dir == (tmp_path / "recipes" / "cache").resolve()
    assert (recipe.dataset.split, recipe.dataset.fold, recipe.dataset.folds) == ("fixed-80-20", 0, 5)
    assert (recipe.optimizer.name, recipe.optimizer.lr, recipe.optimizer.momentum) == ("sgd", 0.01, 0.99)
    assert (recipe.budget.epochs, recipe.budget.iterations_per_epoch, recipe.budget.minutes) == (1000, 250, None)
    assert recipe.augmentation == AugmentationConfig()
    assert recipe.plan.file is None and not recipe.plan.any and recipe.plan.memory_gb == 8.0


def test_home_folder_expands(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.runtime.cache_dir == Path("~/.cache/medseg").expanduser()


def test_to_dict_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(PIPELINES / "hippocampus.toml")
    again = Recipe.from_dict(recipe.to_dict(), tmp_path)
    assert again.to_dict() == recipe.to_dict()
    assert again.dataset == recipe.dataset and again.augmentation == recipe.augmentation


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[optimizer]\nlrr = 0.1\n", r"\[optimizer\] unknown key 'lrr'; did you mean 'lr'\? valid: name, lr, momentum"),
        ("[optimiser]\nlr = 0.1\n", r"unknown section 'optimiser'; did you mean 'optimizer'\?"),
        (
            '[model]\nfamily = "unett"\n',
            r"\[model\] family: unknown value 'unett'; did you mean 'unet'\? valid: unet, resenc_unet, deeplabv3plus, segnet",
        ),
        ('[loss]\nname = "dice-ce"\n', r"did you mean 'dice_ce'\?"),
        ("[model]\nspatial_dims = 4\n", r"unknown value 4; did you mean '3'\? valid: 3, 2"),
        ('[optimizer]\nlr = "fast"\n', r"\[optimizer\] lr must be a number"),
        ("[optimizer]\nlr = -1.0\n", r"lr must be positive"),
        ("[augmentation]\nscaling = [1.4, 0.7]\n", r"low <= high"),
        ("[augmentation]\nscaling = [0.7]\n", r"needs 2 values"),
        ("[augmentation]\nflips = 1\n", r"flips must be true or false"),
        ("[dataset]\nfold = 5\n", None),
        ("[budget]\nepochs = 0\n", r"epochs must be at least 1"),
        ('[runtime]\ndevice = "gpu"\n', r"valid: auto, cpu, cuda"),
    ],
)
def test_invalid_recipes_name_the_problem(tmp_path: Path, extra: str, expected: str | None) -> None:
    text = MINIMAL + extra
    if extra.startswith("[dataset]"):
        text = 'name = "tiny"\n[dataset]\npath = "x"\n' + extra.split("\n", 1)[1]
    with pytest.raises(ConfigError, match=expected or r"fold = 5 must be below folds = 5"):
        load_recipe(write(tmp_path, text))


def test_error_names_the_file_and_lists_all_choices(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[optimizer]\nschedule = "polynomial"\n')
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "did you mean 'poly'?" in message
    assert "valid: poly, cosine, constant" in message and "\n" not in message


def test_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a \\[dataset\\] section"):
        load_recipe(write(tmp_path, 'name = "x"\n'))
    with pytest.raises(ConfigError, match="needs path"):
        load_recipe(write(tmp_path, 'name = "x"\n[dataset]\nsplit = "kfold"\n'))
    with pytest.raises(ConfigError, match="top-level name"):
        load_recipe(write(tmp_path, '[dataset]\npath = "x"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(write(tmp_path, "name = \n"))
    with pytest.raises(InputError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml")
