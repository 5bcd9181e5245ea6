"""YAML that refuses a key written twice in one mapping.

PyYAML keeps the last of two equal keys without a word, so a plan or pool pasted twice, or an
action priced twice, silently loses one of them. Here that is a ConfigError naming the key and
both lines. Keys a merge (``<<: *base``) brings in may still be overridden: only the keys
written in the mapping itself are compared.
"""

from __future__ import annotations

from typing import Any

import yaml

from creditgate.domain.errors import ConfigError

__all__ = ["load"]


class _UniqueKeys(yaml.SafeLoader):
    def construct_mapping(  # PyYAML's signature
        self,
        node: yaml.MappingNode,
        deep: bool = False,  # noqa: FBT001, FBT002
    ) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML refuses it below
                continue
            if first is not None:
                msg = (
                    f"the key {key!r} is written twice in one mapping (lines {first} and "
                    f"{line}): keep one"
                )
                raise ConfigError(msg)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:  # noqa: ANN401 - whatever the document holds
    """The document in ``text`` (safe types only); ConfigError on a repeated key."""
    return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader subclass
