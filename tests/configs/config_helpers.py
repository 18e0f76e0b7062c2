"""Helpers of the config tests (this folder is on ``sys.path`` while its tests run)."""


def strip_pretrained(node):
    """``node`` (a model config, dict or ConfigDict) as plain dicts and lists, without
    ``pretrained`` keys and ``init_cfg=dict(type='Pretrained', ...)`` entries: a test must
    not read weight files."""
    if isinstance(node, dict):
        return {k: strip_pretrained(v) for k, v in node.items()
                if k != 'pretrained' and not (k == 'init_cfg' and isinstance(v, dict)
                                               and v.get('type') == 'Pretrained')}
    if isinstance(node, list):
        return [strip_pretrained(v) for v in node]
    return node
