"""``--section.key value`` overrides and config JSON round trips."""

from dataclasses import dataclass, field

import pytest

from tdlm_train.errors import UserError
from tdlm_train.overrides import apply_overrides, config_from_dict, config_to_dict, field_help


@dataclass(frozen=True, kw_only=True)
class Inner:
    lr: float = 1e-3  # the step size
    betas: tuple[float, ...] = (0.9, 0.99)
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Outer:
    steps: int = 10
    compile: bool = False
    optim: Inner = field(default_factory=Inner)


def test_overrides_convert_by_type():
    config = apply_overrides(
        Outer(),
        {
            "steps": "5",
            "compile": "true",
            "optim.lr": "0.1",
            "optim.betas": "0.8,0.9",
            "optim.name": "adam",
        },
    )
    assert config == Outer(
        steps=5, compile=True, optim=Inner(lr=0.1, betas=(0.8, 0.9), name="adam")
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("step", "1", "unknown option --step; valid here: compile, optim, steps"),
        ("steps", "ten", "--steps expects int, got 'ten'"),
        ("compile", "maybe", "expects true or false"),
        ("optim", "1", "is a section"),
        ("optim.lr.x", "1", "has no sub-options"),
    ],
)
def test_bad_overrides(key, value, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(Outer(), {key: value})


def test_json_round_trip_and_strictness():
    config = Outer(steps=3, optim=Inner(betas=(0.5, 0.6)))
    assert config_from_dict(Outer, config_to_dict(config)) == config
    with pytest.raises(UserError, match=r"config \[optim\]: unknown keys \['beta'\]"):
        config_from_dict(Outer, {"optim": {"beta": 1}})
    assert ("--optim.lr", "0.001", "the step size") in field_help(Outer())
