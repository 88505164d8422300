"""Config checks that turn a forgotten line into an error that says which line to add."""
from typing import Any, Iterator

from mmengine.config import Config

REQUIRED_IMPORT = 'pic_plugin'
FIX = f"custom_imports = dict(imports=['{REQUIRED_IMPORT}'], allow_failed_imports=False)"


def _types(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield node['type']
        for value in node.values():
            yield from _types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _types(value)


def check_custom_imports(cfg: Config) -> None:
    """Raise if ``cfg`` names a component of this package but does not import the package.

    Without ``custom_imports``, ``mim train`` and mmpretrain's own tools never import ``pic_plugin``, so its
    components are missing from the registries and mmengine fails later with a less direct message.

    Raises:
        ValueError: Naming the components and the line to add.
    """
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if any(name == REQUIRED_IMPORT or name.startswith(REQUIRED_IMPORT + '.') for name in imports):
        return
    from .. import registered_names  # the package's own registry entries
    ours = sorted(set(_types(cfg.to_dict())) & registered_names())
    if ours:
        raise ValueError(f'{cfg.filename} uses {", ".join(ours)} from pic_plugin but does not import it: add '
                         f'`{FIX}` to the config (or inherit configs/_base_/default_runtime.py).')
