"""Register a pip-installed checkout in its venv's ament index, so `ros2 pkg prefix|run|launch admn_ros` find it.

    python -m admn_ros.tools.ament_register [--prefix VENV] [--source CHECKOUT]

`pip install -e .` installs no data files, so `make venv` runs this after it. In PREFIX (default: this interpreter's
sys.prefix) it writes the ament index marker share/ament_index/resource_index/packages/admn_ros, links
share/admn_ros/package.xml and every launch/, config/ and models/ file to the checkout (a checkout without models/
gets an empty share/admn_ros/models), and links lib/admn_ros/<script> to
<PREFIX>/bin/<script> for each console script of the installed distribution (where `ros2 run` looks). Files are
linked one by one into real folders: `ros2 launch` finds launch files with os.walk, which does not follow a linked
folder. Idempotent; links left by an earlier run into a file that no longer exists are removed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

from admn_ros.tools.share import PACKAGE, SOURCE_TREE

SHARED_FOLDERS = ("launch", "config", "models")


def console_scripts(distribution: str = PACKAGE) -> list[str]:
    return sorted(entry.name for entry in importlib.metadata.distribution(distribution).entry_points
                  if entry.group == "console_scripts")


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a link; not replacing it")
        link.unlink()
    link.symlink_to(target)


def _remove_dangling_links(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_symlink() and not path.exists():
            path.unlink()


def register(prefix: Path, source: Path = SOURCE_TREE, scripts: list[str] | None = None) -> list[Path]:
    """Write the marker and links under `prefix`; -> the links made. Console scripts must exist in <prefix>/bin."""
    prefix, source = Path(prefix).resolve(), Path(source).resolve()
    scripts = console_scripts() if scripts is None else scripts
    missing = [name for name in scripts if not (prefix / "bin" / name).is_file()]
    if missing:
        raise FileNotFoundError(f"console scripts not in {prefix / 'bin'}: {', '.join(missing)} "
                                f"(install the package into {prefix} first: pip install -e .)")
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    share, lib = prefix / "share" / PACKAGE, prefix / "lib" / PACKAGE
    links = {share / "package.xml": source / "package.xml"}
    for folder in SHARED_FOLDERS:
        (share / folder).mkdir(parents=True, exist_ok=True)
        _remove_dangling_links(share / folder)
        files = sorted((source / folder).iterdir()) if (source / folder).is_dir() else []
        links.update({share / folder / path.name: path for path in files if path.is_file()})
    lib.mkdir(parents=True, exist_ok=True)
    _remove_dangling_links(lib)
    links.update({lib / name: prefix / "bin" / name for name in scripts})
    for link, target in links.items():
        _link(target, link)
    return list(links)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="admn_ament_register", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="the venv (install prefix) to register in (default: this interpreter's)")
    parser.add_argument("--source", type=Path, default=SOURCE_TREE, help="the checkout (default: this one)")
    args = parser.parse_args(argv)
    try:
        links = register(args.prefix, args.source)
    except (FileNotFoundError, FileExistsError, importlib.metadata.PackageNotFoundError) as error:
        print(f"admn_ament_register: {error}", file=sys.stderr)
        return 2
    print(f"admn_ament_register: {PACKAGE} registered in {args.prefix.resolve()} ({len(links)} links)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
