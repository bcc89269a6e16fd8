"""The fused/reference switch shared by every module of :mod:`pyaccel_nas.nn`.

A module derived from :class:`FusableModule` calls its ops through ``self.ops``: the compiled ops of
:mod:`pyaccel_nas.ops` when ``fused`` is True, their pure-PyTorch compositions from
:mod:`pyaccel_nas.ops.reference` when False. Both take the same parameters and compute the same outputs, so
:func:`set_fused` on a whole network measures what the fused ops gain end to end.
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

from pyaccel_nas import ops as _fused_ops
from pyaccel_nas.ops import reference as _reference_ops


class FusableModule(nn.Module):
    """Base of the modules that can run fused or reference ops; ``fused`` (default True) picks which.

    ``fused`` is a plain attribute, not state: it is not saved in the state_dict.
    """

    def __init__(self, *args, **kwargs) -> None:
        # passes its arguments on: in a class that also derives from a torch module (the BatchNorms), the
        # torch class comes after this one and takes them
        super().__init__(*args, **kwargs)
        self.fused = True

    @property
    def ops(self) -> ModuleType:
        """The op namespace this module calls: ``pyaccel_nas.ops`` or ``pyaccel_nas.ops.reference``."""
        return _fused_ops if self.fused else _reference_ops

    def extra_repr(self) -> str:
        return ", ".join([*self._repr_fields(), *([] if self.fused else ["fused=False"])])

    def _repr_fields(self) -> list[str]:
        """The module's own ``extra_repr`` fields; the base appends ``fused=False`` when it applies."""
        return []


def set_fused(model: nn.Module, fused: bool) -> nn.Module:
    """Sets ``fused`` on every :class:`FusableModule` in ``model`` (itself included); returns ``model``."""
    if not isinstance(fused, bool):
        raise TypeError(f"set_fused: `fused` must be a bool, got {type(fused).__name__}")
    for module in model.modules():
        if isinstance(module, FusableModule):
            module.fused = fused
    return model
