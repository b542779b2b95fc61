"""The `admn world-*` subcommands through argparse, and as Python functions."""

import argparse

import numpy as np
import pytest
from PIL import Image

from admn_core.data.cache import WorldCache
from admn_core.data.cli import parse_resolution, register
from admn_core.data.errors import WorldConfigError


@pytest.fixture
def parser():
    parser = argparse.ArgumentParser(prog="admn")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(parser, *argv):
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_generate_then_inspect_the_cache(parser, tmp_path, capsys):
    out = tmp_path / "cache"
    _run(parser, "world-generate", "--out", str(out), "--samples", "3", "--preset", "lowlight", "--resolution", "48")
    cache = WorldCache(out)
    assert len(cache) == 3 and cache.sample(0)[("node_1", "rgb")].shape == (48, 48, 3)
    png = _run(parser, "world-inspect", "--out", str(tmp_path / "sheet.png"), "--cache", str(out), "--index", "2")
    with Image.open(png) as image:
        assert image.width > 300 and image.height > 3 * 128
    assert "wrote" in capsys.readouterr().out


def test_inspect_showcase_rows(parser, tmp_path):
    png = _run(parser, "world-inspect", "--out", str(tmp_path / "blur.png"), "--preset", "blur", "--showcase",
               "--small")
    with Image.open(png) as image:
        assert image.height > 3 * 3 * 96  # three conditions × three views
        assert np.asarray(image.convert("RGB")).std() > 10


def test_bench_prints_the_rate(parser, capsys):
    rate = _run(parser, "world-bench", "--seconds", "0.3", "--workers", "1")
    assert rate > 0 and "samples/s" in capsys.readouterr().out


def test_resolution_parsing():
    assert parse_resolution("64") == (64, 64)
    assert parse_resolution("640x480") == (480, 640)
    with pytest.raises(WorldConfigError, match="WIDTHxHEIGHT"):
        parse_resolution("big")
