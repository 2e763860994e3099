"""Shared by the fuzz tests: mutations of a config table (a nested dict from TOML)."""

from __future__ import annotations


def mutate_paths(draw, table: dict, paths, values, *, delete, times) -> None:
    """Set `times` keys of `table` (each drawn from `paths`, tuples of keys and indices) to
    values drawn from `values`, in place; a drawn `delete` removes the key instead. A path
    that an earlier mutation removed or replaced is skipped."""
    for _ in range(times):
        path = draw(paths)
        node = table
        try:
            for part in path[:-1]:
                node = node[part]
            value = draw(values)
            if value is delete:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue


def config_paths(node, path=()):
    """Every key path of a config table (tuples of keys and list indices), depth first."""
    if path:
        yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from config_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from config_paths(v, (*path, i))
