"""``fast_init`` (core/_fastinit.py): the frames' and events' quicker ``__init__`` behaves as the
one ``dataclasses`` generates: same signature, defaults, factories, ``__post_init__``, and the
instances stay frozen."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from typing import Any

import pytest

from wavewire.core import _fastinit, events, frames
from wavewire.core._fastinit import fast_init
from wavewire.core.session import audio

MODULES = (frames, events, audio)


def _dataclasses_of(module: Any) -> list[type]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == module.__name__
    ]


DECORATED = [cls for module in MODULES for cls in _dataclasses_of(module)]


def _twin(cls: type) -> type:
    """The same fields in a plain dataclass: the ``__init__`` dataclasses makes."""
    specs = []
    for field in dataclasses.fields(cls):
        kwargs: dict[str, Any] = {"kw_only": field.kw_only}
        if field.default is not dataclasses.MISSING:
            kwargs["default"] = field.default
        if field.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = field.default_factory
        specs.append((field.name, field.type, dataclasses.field(**kwargs)))
    return dataclasses.make_dataclass(f"Twin{cls.__name__}", specs)


def test_every_frozen_dataclass_of_the_hot_modules_has_the_fast_init() -> None:
    assert len(DECORATED) >= 30
    for cls in DECORATED:
        assert cls.__init__.__globals__.get("_MISSING") is _fastinit._MISSING, cls  # type: ignore[misc]


def _parameters(init: Any) -> list[tuple[str, Any, object]]:
    """Name, kind and default of each parameter; a default factory shows as "<factory>"."""
    return [
        (p.name, p.kind, "<factory>" if repr(p.default) == "<factory>" else p.default)
        for p in inspect.signature(init).parameters.values()
    ]


@pytest.mark.parametrize("cls", DECORATED, ids=lambda cls: cls.__name__)
def test_signature_is_the_one_dataclasses_makes(cls: type) -> None:
    assert _parameters(cls.__init__) == _parameters(_twin(cls).__init__)  # type: ignore[misc]


ids = itertools.count(1)


def _sample(cls: type) -> tuple[object, dict[str, Any]]:
    """An instance with every field given a value of its kind, and those values."""

    class Probe:  # any value: the core's classes do not check types, only frames check ranges
        pass

    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in ("sample_rate", "num_channels", "id", "code", "dropped_total"):
            values[field.name] = 1 + next(ids) % 7
        elif field.name == "button":
            values[field.name] = "5"
        elif field.name in ("name", "reason", "detail", "text", "user_id", "timestamp"):
            values[field.name] = f"v{next(ids)}"
        else:
            values[field.name] = Probe()
    keywords = dict(values)
    positional = [keywords.pop(f.name) for f in dataclasses.fields(cls) if not f.kw_only]
    return cls(*positional, **keywords), values


@pytest.mark.parametrize("cls", DECORATED, ids=lambda cls: cls.__name__)
def test_fields_are_stored_and_the_instance_stays_frozen(cls: type) -> None:
    instance, values = _sample(cls)
    assert {name: getattr(instance, name) for name in values} == values
    assert dataclasses.replace(instance) == instance  # type: ignore[type-var]
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, first, None)


def test_frames_keep_their_factories_and_checks() -> None:
    a = frames.OutputAudioRawFrame(audio=b"\0\0", sample_rate=16000)
    b = frames.OutputAudioRawFrame(audio=b"\0\0", sample_rate=16000)
    assert b.id == a.id + 1
    assert a.name == f"OutputAudioRawFrame#{a.id}" and a.num_channels == 1
    named = frames.TextFrame(text="hi", id=7, name="mine")
    assert (named.id, named.name) == (7, "mine")
    with pytest.raises(ValueError, match="sample_rate"):
        frames.InputAudioRawFrame(audio=b"", sample_rate=0)
    with pytest.raises(ValueError, match="DTMF"):
        frames.InputDTMFFrame(button="x")
    with pytest.raises(TypeError):
        frames.TextFrame("positional")  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError):
        frames.TextFrame()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        frames.TextFrame(text="a", unknown=1)  # type: ignore[call-arg]
    assert events.ClientRejected(connection=None).code == 1013  # type: ignore[arg-type]


def test_a_class_with_every_kind_of_field_matches_dataclasses() -> None:
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return 42

    def build(fast: bool) -> Any:
        @dataclasses.dataclass(frozen=True, slots=True)
        class Sample:
            a: int
            b: str = "b"
            c: int = dataclasses.field(default_factory=make)
            d: tuple[int, ...] = dataclasses.field(default=(), kw_only=True)
            e: int = dataclasses.field(kw_only=True, default=5)

            def __post_init__(self) -> None:
                if self.a < 0:
                    raise ValueError("a")

        return fast_init(Sample) if fast else Sample

    slow, fast = build(False), build(True)
    assert _parameters(fast.__init__) == _parameters(slow.__init__)
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1, "x", 9), {"d": (1,), "e": 2}),
        ((3,), {"c": 4}),
    ]
    for args, kwargs in cases:
        assert (
            repr(fast(*args, **kwargs)).split("(", 1)[1]
            == repr(slow(*args, **kwargs)).split("(", 1)[1]
        )
    assert len(made) == 2  # once per instance not given c (the first case, in each class)
    with pytest.raises(ValueError, match="a"):
        fast(-1)
    with pytest.raises(TypeError):
        fast(1, "b", 3, (4,))


def test_refuses_what_it_cannot_reproduce() -> None:
    @dataclasses.dataclass
    class Plain:
        a: int

    with pytest.raises(TypeError, match="frozen, slotted"):
        fast_init(Plain)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Hidden:
        a: int = dataclasses.field(default=0, init=False)

    with pytest.raises(TypeError, match="init=False"):
        fast_init(Hidden)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Empty:
        pass

    assert fast_init(Empty)() == Empty()
